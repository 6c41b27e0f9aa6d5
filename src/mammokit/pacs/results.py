"""One study's `mammokit predict` output as DICOM objects (highdicom) that reference the source study and images.

Per study: a Structured Report, the TID 1500 Measurement Report in a Comprehensive 3D SR (highdicom does not support
the Mammography CAD SR, TID 4000, so the probabilities are TID 1501 measurement groups); per view, a FRACTIONAL
Segmentation of the heatmap on the source image's pixel grid and an RGB Secondary Capture of the overlay (the heat
blended over the image, with the research-use banner drawn on it) for viewers that cannot show segmentations.

The SR holds one measurement group for the exam (finding site: breast, laterality right and left), one per breast
and one per view, each listing the source images it was made from, and in each:
- "Probability of cancer" (DCM 111047): the calibrated probability, unit UCUM "{probability}". When the prediction
  carries a standard deviation (`prob_std`: `predict --mc N`, MC-dropout) it is the measurement's upper and
  lower uncertainty (SCT 371886008, 371885007): the probability plus or minus one standard deviation;
- "Uncalibrated probability of cancer" (private 99MAMMOKIT RAWPROB): sigmoid(logit);
- the algorithm identification (TID 4019): name = the model's name, version = the mammokit version and model folder,
  family DCM 123110 Artificial Intelligence, parameters = the level's calibration map, the heatmap kind and the
  research-use statement (`INTENDED_USE`).
The research-use statement also sits in every object's SeriesDescription (short form), in the SEG's segment
algorithm parameters and content description, and in the SC's Image Comments.

Other codes: SCT 71651007 Mammography (procedure reported); SCT 76752008 Breast with SCT 7771000 Left, 24028007
Right, 51440002 Right and left (finding sites); segment category SCT 49755003 Morphologically abnormal structure and
type SCT 86049000 Malignant neoplasm, primary: the region the model associates with malignancy. The fractional
values (fractional type PROBABILITY, 1/255 steps) are the model's heat in [0, 1], not a calibrated per-pixel
probability.

New UIDs are name-based on (study UID, model, prediction): the same prediction gives the same UIDs, so a resend
replaces rather than duplicates. Series numbers: SR 9901, SEG 9902, SC 9903 (left) and 9904 (right: a series has one
laterality); instance n = the view's rank in (view, image hash) order, as in the file names `<kind>_<n>.dcm`. SEG and SC
pixels are RLE Lossless.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from mammokit import INTENDED_USE, __version__
from mammokit.errors import InvalidInputError, MissingInputError
from mammokit.ids import hash_id, resolve_salt
from mammokit.io import atomic_write

__all__ = ["KINDS", "MANUFACTURER", "SERIES_NUMBERS", "build_results", "load_prediction", "match_sources",
           "write_results"]

log = logging.getLogger(__name__)

MANUFACTURER = "mammokit"
PROJECTION_MODALITIES = ("CR", "DX", "IO", "MG", "PX", "RF", "RG", "XA")  # what highdicom's image library treats so
KINDS = ("sr", "seg", "sc")
SERIES_NUMBERS = {"sr": 9901, "seg": 9902, "sc": 9903}
RESEARCH_NOTE = "mammokit research use only, not for clinical use"  # fits LO (64 characters)
SERIES_DESCRIPTIONS = {"sr": f"{RESEARCH_NOTE} (report)", "seg": f"{RESEARCH_NOTE} (heatmap)",
                       "sc": f"{RESEARCH_NOTE} (overlay)"}
PRIVATE_SCHEME = hd.coding_schemes.CodingSchemeIdentificationItem(
    designator="99MAMMOKIT", name="mammokit private codes", responsible_organization="mammokit")

PROB_CANCER = codes.DCM.ProbabilityOfCancer  # DCM 111047
RAW_PROB = hd.sr.CodedConcept("RAWPROB", "99MAMMOKIT", "Uncalibrated probability of cancer")
PROBABILITY = hd.sr.CodedConcept("{probability}", "UCUM", "probability")
MAMMOGRAPHY = codes.SCT.Mammography  # SCT 71651007
BREAST = codes.SCT.Breast  # SCT 76752008
LATERALITY = {"L": codes.SCT.Left, "R": codes.SCT.Right, "B": codes.SCT.RightAndLeft}
AI_FAMILY = codes.DCM.ArtificialIntelligence  # DCM 123110
SEGMENT_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure  # SCT 49755003
SEGMENT_TYPE = codes.SCT.MalignantNeoplasmPrimary  # SCT 86049000
UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "mammokit:pacs:results")
BANNER = "RESEARCH USE ONLY - NOT FOR CLINICAL USE"


@dataclass(frozen=True)
class _View:
    """One predicted view and its source image's header."""

    entry: dict[str, Any]
    source: pydicom.Dataset


def load_prediction(prediction_dir: str | Path) -> dict[str, Any]:
    """The prediction.json of one study folder written by `predict_studies`."""
    path = Path(prediction_dir) / "prediction.json"
    if not path.is_file():
        raise MissingInputError(f"{path}: no prediction.json (give a study folder written by `mammokit predict`)")
    try:
        prediction = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidInputError(f"{path}: not a readable prediction.json ({err})") from err
    if not isinstance(prediction, dict) or not isinstance(prediction.get("views"), list):
        raise InvalidInputError(f"{path}: not a prediction.json of `mammokit predict` (no views list)")
    return prediction


def _header(path: Path) -> pydicom.Dataset | None:
    """The header of a DICOM file (no pixels), None for a file that is not DICOM."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:  # any file pydicom cannot parse (not DICOM, cut short...) is simply not a source
        log.debug("%s: not read as DICOM (%s)", hash_id(str(path), resolve_salt())[:10], err)
        return None


def match_sources(prediction: dict[str, Any], source_files: Sequence[str | Path]) -> dict[str, pydicom.Dataset]:
    """image hash of each predicted view -> header of its source file (the hash is the salted hash of the file's
    SOP Instance UID, as `predict` names images).

    Raises InvalidInputError naming each view whose image is not among `source_files`, and when the matched images
    belong to several studies (the results reference one).
    """
    salt = resolve_salt()
    by_hash: dict[str, pydicom.Dataset] = {}
    for path in source_files:
        ds = _header(Path(path))
        if ds is not None and "SOPInstanceUID" in ds:
            by_hash.setdefault(hash_id(str(ds.SOPInstanceUID), salt), ds)
    missing = [v.get("view", "?") for v in prediction["views"] if v.get("image_hash") not in by_hash]
    if missing:
        raise InvalidInputError(f"no source DICOM file among the {len(source_files)} given for view(s) "
                                f"{', '.join(missing)} of study {_study_label(prediction)}")
    matched = {v["image_hash"]: by_hash[v["image_hash"]] for v in prediction["views"]}
    studies = {str(ds.get("StudyInstanceUID", "")) for ds in matched.values()}
    if len(studies) != 1 or "" in studies:
        raise InvalidInputError(f"the views of study {_study_label(prediction)} come from {len(studies)} studies "
                                "(or one without a Study Instance UID); result objects reference a single study")
    return matched


def _study_label(prediction: dict[str, Any]) -> str:
    return str((prediction.get("study") or {}).get("exam_id") or "?")


class _Uids:
    """Deterministic UIDs of one study's results: from the study UID, the model and the prediction."""

    def __init__(self, study_uid: str, prediction: dict[str, Any]) -> None:
        model = json.dumps(prediction.get("model"), sort_keys=True)
        scores = json.dumps({k: prediction.get(k) for k in ("exam", "breasts", "views")}, sort_keys=True)
        self._key = hashlib.sha256("\0".join((study_uid, model, scores)).encode()).hexdigest()

    def __call__(self, *parts: object) -> str:
        """A "2.25." UID of a name-based (version 5) UUID of the key and `parts`."""
        return f"2.25.{uuid.uuid5(UID_NAMESPACE, chr(0).join((self._key, *map(str, parts)))).int}"


def _algorithm_name(prediction: dict[str, Any]) -> str:
    return str((prediction.get("model") or {}).get("name") or "mammokit model")


def _algorithm_version(prediction: dict[str, Any]) -> str:
    model = prediction.get("model") or {}
    return f"mammokit {model.get('mammokit_version') or __version__}; model {model.get('folder') or '?'}"


def _calibration(prediction: dict[str, Any], level: str) -> str:
    """The calibration map of a level ("exam", "breast", "views") as one line."""
    cal = (prediction.get("calibration") or {}).get(level)
    if isinstance(cal, dict):
        return f"calibration ({level}): {cal.get('map')}; {cal.get('formula')}"
    return f"calibration ({level}): {cal}" if cal else f"calibration ({level}): not recorded"


def _algorithm(prediction: dict[str, Any], level: str) -> hd.sr.AlgorithmIdentification:
    """TID 4019 of one level: the model, the level's calibration, the heatmap kind and the research-use statement."""
    kind = next((v.get("heatmap_kind") for v in prediction["views"]), None)
    return hd.sr.AlgorithmIdentification(
        name=_algorithm_name(prediction), version=_algorithm_version(prediction),
        parameters=[_calibration(prediction, level), f"heatmap: {kind or 'none'}", INTENDED_USE],
        family=AI_FAMILY, manufacturer=MANUFACTURER)


def _measurements(block: dict[str, Any]) -> list[hd.sr.Measurement]:
    """Calibrated probability (with its std as uncertainty when given) and the raw one of one level (the group
    names the algorithm)."""
    std = block.get("prob_std")
    properties = (hd.sr.MeasurementProperties(upper_measurement_uncertainty=float(std),
                                              lower_measurement_uncertainty=float(std))
                  if std is not None else None)
    out = [hd.sr.Measurement(name=PROB_CANCER, value=float(block["prob"]), unit=PROBABILITY, properties=properties)]
    if block.get("prob_raw") is not None:
        out.append(hd.sr.Measurement(name=RAW_PROB, value=float(block["prob_raw"]), unit=PROBABILITY))
    return out


def _group(label: str, block: dict[str, Any], side: str, views: list[_View], uids: _Uids,
           algorithm: hd.sr.AlgorithmIdentification) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """One TID 1501 group: a level's probabilities, its finding site and the source images it was made from."""
    key = (label, *(v.entry["image_hash"] for v in views))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uids("tracking", *key), identifier=label),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=BREAST, laterality=LATERALITY[side])],
        measurements=_measurements(block),
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(v.source) for v in views])


def _groups(prediction: dict[str, Any], views: list[_View],
            uids: _Uids) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """Exam, left and right breast, then each view: the levels that have a score."""
    out = []
    if prediction.get("exam"):
        out.append(_group("exam", prediction["exam"], "B", views, uids, _algorithm(prediction, "exam")))
    for side, name in (("L", "left breast"), ("R", "right breast")):
        block = (prediction.get("breasts") or {}).get(side)
        if block:
            mine = [v for v in views if v.entry.get("laterality") == side]
            out.append(_group(name, block, side, mine, uids, _algorithm(prediction, "breast")))
    for view in views:
        if view.entry.get("prob") is not None:
            out.append(_group(f"{view.entry['view']} view", view.entry, view.entry["laterality"], [view], uids,
                              _algorithm(prediction, "views")))
    return out


def _common(kind: str, n: int, uids: _Uids) -> dict[str, Any]:
    """Series and instance identity of the n-th object of a kind."""
    return {"series_instance_uid": uids("series", kind), "series_number": SERIES_NUMBERS[kind],
            "sop_instance_uid": uids("instance", kind, n), "instance_number": n, "manufacturer": MANUFACTURER}


def _equipment(prediction: dict[str, Any]) -> dict[str, Any]:
    """General Equipment of every object: mammokit, its version and the model's name."""
    return {"manufacturer_model_name": f"mammokit {_algorithm_name(prediction)}"[:64],
            "software_versions": __version__}


def _sr(prediction: dict[str, Any], views: list[_View], uids: _Uids) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 Measurement Report of one study."""
    sources = [v.source for v in views]
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=uids("device"), name="mammokit", manufacturer_name=MANUFACTURER,
        model_name=_algorithm_name(prediction)[:64])
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=MAMMOGRAPHY,
                                     imaging_measurements=_groups(prediction, views, uids),
                                     referenced_images=[s for s in sources if _library_ready(s)] or None)
    return hd.sr.Comprehensive3DSR(
        evidence=sources, content=report, **_common("sr", 1, uids), is_complete=True,
        series_description=SERIES_DESCRIPTIONS["sr"], coding_schemes=[PRIVATE_SCHEME], **_equipment(prediction))


def _library_ready(source: pydicom.Dataset) -> bool:
    """Whether highdicom can describe `source` in the SR's image library: for a projection image (MG, DX, CR) it
    reads a two-value Patient Orientation and Imager Pixel Spacing, which a CR plate or a scanned film may lack. An
    image left out of the library is still referenced by its measurement groups and in the evidence."""
    if source.get("Modality") not in PROJECTION_MODALITIES:
        return True
    return len(source.get("PatientOrientation") or []) == 2 and "ImagerPixelSpacing" in source


def _heat(prediction_dir: Path, view: _View) -> np.ndarray:
    """The view's heatmap in [0, 1] on the DICOM grid, from the uint16 PNG predict wrote."""
    path = prediction_dir / str(view.entry.get("heatmap"))
    heat = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
    if heat is None or heat.ndim != 2:
        raise InvalidInputError(f"{path}: missing or not a single-channel heatmap PNG (view {view.entry['view']})")
    shape = (int(view.source.Rows), int(view.source.Columns))
    if heat.shape != shape:
        raise InvalidInputError(f"{path}: heatmap is {heat.shape[0]}x{heat.shape[1]} but view "
                                f"{view.entry['view']}'s source image is {shape[0]}x{shape[1]}")
    scale = 65535.0 if heat.dtype == np.uint16 else 255.0
    return heat.astype(np.float32) / scale


def _seg(prediction: dict[str, Any], prediction_dir: Path, view: _View, n: int,
              uids: _Uids) -> hd.seg.Segmentation:
    """The FRACTIONAL segmentation of one view's heatmap on its source image's grid."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name=_algorithm_name(prediction), family=AI_FAMILY, version=_algorithm_version(prediction),
        parameters={"heatmap": str(view.entry.get("heatmap_kind")), "intended_use": INTENDED_USE})
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=f"{view.entry['view']} cancer heatmap",
        segmented_property_category=SEGMENT_CATEGORY, segmented_property_type=SEGMENT_TYPE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
        tracking_uid=uids("segment", view.entry["image_hash"]), tracking_id=f"{view.entry['view']} heatmap")
    seg = hd.seg.Segmentation(
        source_images=[view.source], pixel_array=_heat(prediction_dir, view),
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY, segment_descriptions=[segment],
        **_common("seg", n, uids), **_equipment(prediction), device_serial_number="none",
        content_label="HEATMAP", content_description=f"{view.entry['view']} {RESEARCH_NOTE}"[:64],
        omit_empty_frames=False, series_description=SERIES_DESCRIPTIONS["seg"])
    seg.PatientOrientation = view.source.get("PatientOrientation", "")  # General Image, type 2C: on the source grid
    # Pixel Measures is optional without a frame of reference; highdicom writes it (for a source with a pixel
    # spacing) without Slice Thickness, which a projection image has not, and cannot read that back, so it goes: the
    # spacing is the source image's
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PixelMeasuresSequence" in shared:
        del shared.PixelMeasuresSequence
    return seg


def _overlay(prediction_dir: Path, view: _View) -> np.ndarray:
    """The overlay PNG predict wrote, as RGB, with the research-use banner drawn at its foot."""
    path = prediction_dir / str(view.entry.get("overlay"))
    image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if image is None:
        raise InvalidInputError(f"{path}: missing or unreadable overlay PNG (view {view.entry['view']})")
    scale = max(0.3, image.shape[1] / 900)
    (width, _), _ = cv2.getTextSize(BANNER, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    scale *= min(1.0, (image.shape[1] - 16) / max(width, 1))
    org = (8, image.shape[0] - 8)
    cv2.putText(image, BANNER, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, BANNER, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.ascontiguousarray(image[..., ::-1])


def _sc(prediction: dict[str, Any], prediction_dir: Path, view: _View, n: int, uids: _Uids) -> hd.sc.SCImage:
    """The RGB Secondary Capture of one view's overlay, in the source's patient and study; one series per breast."""
    src, side = view.source, view.entry["laterality"]
    common = {**_common("sc", n, uids), "series_instance_uid": uids("series", "sc", side),
              "series_number": SERIES_NUMBERS["sc"] + (side == "R")}
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=src, pixel_array=_overlay(prediction_dir, view), photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", patient_orientation=("A", "F"), laterality=side,
        transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian, series_description=SERIES_DESCRIPTIONS["sc"],
        **common, **_equipment(prediction))
    sc.PatientOrientation = src.get("PatientOrientation", "")  # the overlay keeps the source's pixel orientation
    sc.ConversionType = "WSD"
    sc.BurnedInAnnotation = "NO"
    sc.ImageComments = f"{view.entry['view']}: {view.entry.get('heatmap_kind')} heatmap over the image. {INTENDED_USE}"
    sc.DerivationDescription = (f"mammokit {_algorithm_name(prediction)} {view.entry.get('heatmap_kind')} heatmap "
                                "blended over the source image, with the model's patch boxes")[:1024]
    sc.SourceImageSequence = [_reference(src)]
    return sc


def _reference(src: pydicom.Dataset) -> pydicom.Dataset:
    """A Source Image Sequence item pointing at `src`."""
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = src.SOPClassUID
    item.ReferencedSOPInstanceUID = src.SOPInstanceUID
    return item


@contextmanager
def _quiet_highdicom() -> Iterator[None]:
    """highdicom logs the source SOP Instance UIDs at INFO level: silence it below WARNING while building."""
    logger = logging.getLogger("highdicom")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def build_results(prediction_dir: str | Path, source_files: Sequence[str | Path]) -> list[pydicom.Dataset]:
    """The SR, then a SEG per view, then an SC per view of one study predicted into `prediction_dir`."""
    with _quiet_highdicom():
        return _build(Path(prediction_dir), source_files)


def _build(prediction_dir: Path, source_files: Sequence[str | Path]) -> list[pydicom.Dataset]:
    prediction = load_prediction(prediction_dir)
    if not prediction["views"] or not prediction.get("exam"):
        raise InvalidInputError(f"study {_study_label(prediction)}: the prediction holds no score (no usable CC/MLO "
                                "view): no result objects")
    sources = match_sources(prediction, source_files)
    views = [_View(v, sources[v["image_hash"]])
             for v in sorted(prediction["views"], key=lambda v: (v["view"], v["image_hash"]))]
    uids = _Uids(str(views[0].source.StudyInstanceUID), prediction)
    out: list[pydicom.Dataset] = [_sr(prediction, views, uids)]
    out += [_rle(_seg(prediction, prediction_dir, v, n, uids)) for n, v in enumerate(views, 1)]
    out += [_rle(_sc(prediction, prediction_dir, v, n, uids)) for n, v in enumerate(views, 1)]
    return out


def _rle(ds: pydicom.Dataset) -> pydicom.Dataset:
    """`ds` with its pixels RLE Lossless: a smooth heatmap SEG shrinks about 60-fold, an overlay SC about 3-fold, and
    every archive and viewer reads RLE. The encoder is pylibjpeg-rle's, named: pydicom's default order tries GDCM
    first, whose RLE encoder aborts the process on some frames."""
    ds.compress(pydicom.uid.RLELossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    return ds


def _kind(ds: pydicom.Dataset) -> str:
    return {"SR": "sr", "SEG": "seg"}.get(str(ds.Modality), "sc")


def write_results(prediction_dir: str | Path, source_files: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """Write `build_results` as `out_dir/<kind>_<n>.dcm` (sr_1, seg_1.., sc_1..), each atomically; result files of
    an earlier run that this one does not rewrite are removed. Returns the paths written, SR first."""
    out_dir = Path(out_dir)
    objects = build_results(prediction_dir, source_files)
    counts: dict[str, int] = {}
    paths = []
    for ds in objects:
        kind = _kind(ds)
        counts[kind] = counts.get(kind, 0) + 1
        path = out_dir / f"{kind}_{counts[kind]}.dcm"
        paths.append(atomic_write(path, lambda tmp, ds=ds: ds.save_as(tmp, enforce_file_format=True)))
    for stale in out_dir.glob("*_*.dcm"):
        if stale.name.split("_")[0] in KINDS and stale not in paths:
            stale.unlink()
    return paths
