"""Vendor profiles: what a synthetic archive varies from one (fake) manufacturer to the next.

Each profile is loosely modelled on a family of real devices, but every file says plainly that it is
synthetic (`Manufacturer` starts with "MAMMOKIT SYNTH"). The point is to exercise every branch a real
multi-vendor archive forces on a reader and a preprocessing pipeline, with files that stay valid DICOM
(`dciodvfy` reports no error for any profile):

| profile | spacing mm | full rows×cols | bits | photometric | slope, intercept | transfer syntax | intent |
|---------|------------|----------------|------|-------------|------------------|-----------------|--------|
| hologic | 0.070 PS+IPS | 3328×2560 | 12 | MONOCHROME2 | 1, 0 | explicit LE | PRESENTATION |
| ge      | 0.100 IPS    | 2294×1914 | 14 | MONOCHROME1 | 1, 0 | explicit LE | PRESENTATION |
| siemens | 0.085 PS+IPS | 2816×2048 | 16 | MONOCHROME2 | 1, 0 | JPEG 2000 lossless | PRESENTATION |
| fuji    | 0.050 IPS    | 4096×3328 | 12 | MONOCHROME2 | 0.5, -512 | explicit LE | PRESENTATION (CR SOP) |
| philips | 0.050 PS+IPS | 4800×3520 | 12 | MONOCHROME2 | 1, 0 | explicit LE | PROCESSING |
| agfa    | 0.100 PS     | 2400×1800 | 12 | MONOCHROME1 | 1, 0 | RLE lossless | PRESENTATION (CR SOP) |
| film    | 0.050 none   | 4800×3600 | 12 | MONOCHROME2 | (no tags) | explicit LE | (none: Secondary Capture) |

| profile | right breast | PatientOrientation | laterality tag | view tags (codes) | padding | marker |
|---------|-------------|-------------|-----------------|-------------------------------------|---------|-------------|
| hologic | mirrored    | yes         | ImageLaterality | ViewPosition + ViewCodeSequence SCT | 0       | no          |
| ge      | mirrored    | yes         | ImageLaterality | ViewPosition + ViewCodeSequence SCT | none    | no          |
| siemens | mirrored    | yes         | ImageLaterality | ViewCodeSequence SRT                | none    | no          |
| fuji    | un-mirrored | yes         | Laterality      | ViewPosition                        | none    | "L CC"      |
| philips | mirrored    | yes         | ImageLaterality | ViewPosition + ViewCodeSequence SCT | none    | no          |
| agfa    | un-mirrored | empty       | ImageLaterality | ViewCodeSequence SRT (VP empty)     | 4095    | "L CC"      |
| film    | mirrored    | empty       | Laterality      | ViewPosition                        | none    | lead, label |

(PS = PixelSpacing, IPS = ImagerPixelSpacing, VP = ViewPosition, padding = PixelPaddingValue off-field.) The
Digital Mammography IOD leaves no room for some differences real archives show: it requires ImageLaterality (and
then forbids Laterality), ViewCodeSequence, ImagerPixelSpacing, a PatientOrientation value and RescaleSlope 1 /
RescaleIntercept 0. So the reader-exercising cases live in the CR and Secondary Capture profiles, whose IODs allow
them: Laterality only, ViewPosition only and a non-trivial rescale (fuji); an empty PatientOrientation, PixelSpacing
only and the view in ViewCodeSequence alone (agfa); no rescale tags and no spacing at all (film).

The first four are the default training vendors (`DEFAULT_VENDORS`); `EXTERNAL_VENDORS` lists the other
regular profiles, for a second synthetic site that a model has never seen (external validation). The
scanned-film profile (`OPT_IN_PROFILES`) is used only when named (`vendors="film"`) or through the hard
cases (`mammokit.synth.hard`). `size_scale` multiplies rows and columns and divides the spacing, so the
breast keeps its physical size in mm at every scale.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class VendorProfile:
    """How one (fake) vendor writes its mammograms.

    Attributes:
        name: short key used on the command line and in labels.csv.
        manufacturer: Manufacturer tag (always says SYNTH) and model name.
        spacing_mm: detector pixel spacing at full size (square pixels).
        rows: full-size image rows; cols: full-size image columns.
        bits_stored: BitsStored (BitsAllocated is always 16, unsigned).
        photometric: "MONOCHROME2" (higher = brighter = denser) or "MONOCHROME1" (inverted).
        slope: RescaleSlope; intercept: RescaleIntercept (both written only when `write_rescale`).
        value_range: modality values (after rescale, MONOCHROME2 sense) of air and of the densest tissue.
        gamma: display-like response exponent applied to normalized attenuation.
        transfer_syntax: "explicit", "jpeg2000" (lossless) or "rle".
        mirror_right: store right breasts mirrored (chest wall on the right), as DICOM convention asks.
        orientation_tag: write PatientOrientation (matching what is stored), or leave it empty (CR and SC only,
            where it is type 2).
        laterality_tags: which of ImageLaterality / Laterality carry the side.
        view_tags: which of ViewPosition / ViewCodeSequence carry the view (a CR file without ViewPosition
            writes it empty: type 2).
        spacing_tags: which of PixelSpacing / ImagerPixelSpacing carry the spacing (none: the film profile).
        padding_value: PixelPaddingValue written in the air outside the collimated field, or None.
        marker: burn a bright laterality/view text block into the air (film scanners, CR plates).
        presentation_intent: PresentationIntentType.
        sop_class: "mg_presentation", "mg_processing", "cr" or "sc" (Secondary Capture, digitized film).
        windows: number of VOI windows written (0 = none).
        voi_function: VOILUTFunction or None.
        noise: per-pixel quantum noise (fraction of the value range) at 0.1 mm pixels.
        coding_scheme: "SCT" (SNOMED CT) or "SRT" (the older SNOMED-RT codes) for view and anatomy codes.
        detector_type: DetectorType of the MG IOD (DIRECT, SCINTILLATOR, STORAGE).
        film: a scanned film: film background, unexposed borders, scanner bands, lead markers and a paper
            label are added by `mammokit.synth.film`.
    """

    name: str
    manufacturer: str
    model: str
    spacing_mm: float
    rows: int
    cols: int
    bits_stored: int
    photometric: str
    slope: float
    intercept: float
    write_rescale: bool
    value_range: tuple[float, float]
    gamma: float
    transfer_syntax: str
    mirror_right: bool
    orientation_tag: bool
    laterality_tags: tuple[str, ...]
    view_tags: tuple[str, ...]
    spacing_tags: tuple[str, ...]
    padding_value: int | None
    marker: bool
    presentation_intent: str
    sop_class: str
    windows: int
    voi_function: str | None
    noise: float
    coding_scheme: str = "SCT"
    detector_type: str = "DIRECT"
    film: bool = False

    def scaled(self, size_scale: float) -> tuple[int, int, float]:
        """Rows, columns and spacing (mm) at `size_scale` (linear factor; 1.0 = full detector size)."""
        rows = max(64, round(self.rows * size_scale))
        cols = max(64, round(self.cols * size_scale))
        return rows, cols, self.spacing_mm * self.rows / rows

    def summary(self) -> dict:
        """Plain dict of the profile, for synth.json."""
        return asdict(self)


_PROFILES = (
    VendorProfile(
        name="hologic", manufacturer="MAMMOKIT SYNTH (Hologic-like)", model="synth-dimensions",
        spacing_mm=0.07, rows=3328, cols=2560, bits_stored=12, photometric="MONOCHROME2",
        slope=1.0, intercept=0.0, write_rescale=True, value_range=(150.0, 3900.0), gamma=0.9,
        transfer_syntax="explicit", mirror_right=True, orientation_tag=True,
        laterality_tags=("ImageLaterality",), view_tags=("ViewPosition", "ViewCodeSequence"),
        spacing_tags=("PixelSpacing", "ImagerPixelSpacing"), padding_value=0, marker=False,
        presentation_intent="FOR PRESENTATION", sop_class="mg_presentation", windows=3, voi_function="SIGMOID",
        noise=0.012,
    ),
    VendorProfile(
        name="ge", manufacturer="MAMMOKIT SYNTH (GE-like)", model="synth-senographe",
        spacing_mm=0.1, rows=2294, cols=1914, bits_stored=14, photometric="MONOCHROME1",
        slope=1.0, intercept=0.0, write_rescale=True, value_range=(600.0, 15000.0), gamma=1.0,
        transfer_syntax="explicit", mirror_right=True, orientation_tag=True,
        laterality_tags=("ImageLaterality",), view_tags=("ViewPosition", "ViewCodeSequence"),
        spacing_tags=("ImagerPixelSpacing",), padding_value=None, marker=False,
        presentation_intent="FOR PRESENTATION", sop_class="mg_presentation", windows=1, voi_function="LINEAR",
        noise=0.010, detector_type="SCINTILLATOR",
    ),
    VendorProfile(
        name="siemens", manufacturer="MAMMOKIT SYNTH (Siemens-like)", model="synth-mammomat",
        spacing_mm=0.085, rows=2816, cols=2048, bits_stored=16, photometric="MONOCHROME2",
        slope=1.0, intercept=0.0, write_rescale=True, value_range=(2000.0, 60000.0), gamma=1.1,
        transfer_syntax="jpeg2000", mirror_right=True, orientation_tag=True,
        laterality_tags=("ImageLaterality",), view_tags=("ViewCodeSequence",),
        spacing_tags=("PixelSpacing", "ImagerPixelSpacing"), padding_value=None, marker=False,
        presentation_intent="FOR PRESENTATION", sop_class="mg_presentation", windows=2, voi_function=None,
        noise=0.011, coding_scheme="SRT",
    ),
    VendorProfile(
        name="fuji", manufacturer="MAMMOKIT SYNTH (Fuji-CR-like)", model="synth-cr",
        spacing_mm=0.05, rows=4096, cols=3328, bits_stored=12, photometric="MONOCHROME2",
        slope=0.5, intercept=-512.0, write_rescale=True, value_range=(-400.0, 1400.0), gamma=0.8,
        transfer_syntax="explicit", mirror_right=False, orientation_tag=True,
        laterality_tags=("Laterality",), view_tags=("ViewPosition",),
        spacing_tags=("ImagerPixelSpacing",), padding_value=None, marker=True,
        presentation_intent="FOR PRESENTATION", sop_class="cr", windows=1, voi_function=None,
        noise=0.015,
    ),
    VendorProfile(
        name="philips", manufacturer="MAMMOKIT SYNTH (Philips-like)", model="synth-microdose",
        spacing_mm=0.05, rows=4800, cols=3520, bits_stored=12, photometric="MONOCHROME2",
        slope=1.0, intercept=0.0, write_rescale=True, value_range=(100.0, 3850.0), gamma=1.3,
        transfer_syntax="explicit", mirror_right=True, orientation_tag=True,
        laterality_tags=("ImageLaterality",), view_tags=("ViewPosition", "ViewCodeSequence"),
        spacing_tags=("PixelSpacing", "ImagerPixelSpacing"), padding_value=None, marker=False,
        presentation_intent="FOR PROCESSING", sop_class="mg_processing", windows=0, voi_function=None,
        noise=0.009,
    ),
    VendorProfile(
        name="agfa", manufacturer="MAMMOKIT SYNTH (Agfa-CR-like)", model="synth-cr-plate",
        spacing_mm=0.1, rows=2400, cols=1800, bits_stored=12, photometric="MONOCHROME1",
        slope=1.0, intercept=0.0, write_rescale=True, value_range=(250.0, 3800.0), gamma=0.85,
        transfer_syntax="rle", mirror_right=False, orientation_tag=False,
        laterality_tags=("ImageLaterality",), view_tags=("ViewCodeSequence",),
        spacing_tags=("PixelSpacing",), padding_value=4095, marker=True,
        presentation_intent="FOR PRESENTATION", sop_class="cr", windows=1, voi_function=None,
        noise=0.016, coding_scheme="SRT", detector_type="STORAGE",
    ),
)

FILM_PROFILE = VendorProfile(
    name="film", manufacturer="MAMMOKIT SYNTH (film digitizer)", model="synth-film-scanner",
    spacing_mm=0.05, rows=4800, cols=3600, bits_stored=12, photometric="MONOCHROME2",
    slope=1.0, intercept=0.0, write_rescale=False, value_range=(300.0, 3300.0), gamma=1.25,
    transfer_syntax="explicit", mirror_right=True, orientation_tag=False,
    laterality_tags=("Laterality",), view_tags=("ViewPosition",), spacing_tags=(), padding_value=None, marker=False,
    presentation_intent="", sop_class="sc", windows=0, voi_function=None, noise=0.012, detector_type="FILM",
    film=True,
)

VENDOR_PROFILES: dict[str, VendorProfile] = {p.name: p for p in _PROFILES}
OPT_IN_PROFILES: dict[str, VendorProfile] = {FILM_PROFILE.name: FILM_PROFILE}
ALL_PROFILES: dict[str, VendorProfile] = {**VENDOR_PROFILES, **OPT_IN_PROFILES}
DEFAULT_VENDORS: tuple[str, ...] = ("hologic", "ge", "siemens", "fuji")
EXTERNAL_VENDORS: tuple[str, ...] = tuple(n for n in VENDOR_PROFILES if n not in DEFAULT_VENDORS)


def resolve_vendors(vendors: str | Iterable[str] | None) -> tuple[str, ...]:
    """Turn a vendor selection into profile names.

    Args:
        vendors: None or "default" (the training vendors), "external"/"other" (regular profiles not in the
            default set, for an external-validation site), "all" (every regular profile), a comma-separated
            string, or names (opt-in profiles such as "film" only by name).

    Raises:
        ValueError: an unknown vendor name (the message lists the known ones), or an empty selection.
    """
    if vendors is None:
        return DEFAULT_VENDORS
    if isinstance(vendors, str):
        keyword = vendors.strip().lower()
        if keyword in ("", "default"):
            return DEFAULT_VENDORS
        if keyword in ("external", "other"):
            return EXTERNAL_VENDORS
        if keyword == "all":
            return tuple(VENDOR_PROFILES)
        vendors = [v for v in keyword.split(",") if v.strip()]
    names = tuple(v.strip().lower() for v in vendors)
    if not names:
        raise ValueError("vendors: empty selection; name at least one of " + ", ".join(ALL_PROFILES))
    unknown = [n for n in names if n not in ALL_PROFILES]
    if unknown:
        raise ValueError(f"vendors: unknown profile(s) {unknown}; known: {', '.join(ALL_PROFILES)}")
    return tuple(dict.fromkeys(names))


def other_vendors(used: Iterable[str]) -> tuple[str, ...]:
    """Profiles not in `used`, e.g. the vendors a training site did not have (for external validation)."""
    used_set = set(resolve_vendors(tuple(used)))
    rest = tuple(n for n in VENDOR_PROFILES if n not in used_set)
    if not rest:
        raise ValueError("vendors: every profile is already used; nothing left for an external site")
    return rest
