"""Hard cases of `mammokit.synth` (fatty breast, air a minority, collimation, scanned film, skin folds).

The first tests check the generator against its own ground truth; the last ones run mammokit's breast mask, crop and
orientation on the hard cases and check the preprocessing goals (tissue kept, markers and labels cropped away).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from mammokit.cli import app
from mammokit.dicom import MammoImage, read_dicom
from mammokit.preprocess import breast_mask, crop_box, decide_orientation, mask_to_original
from mammokit.preprocess.mask import otsu
from mammokit.synth import HARD_KINDS, IMAGE_COLUMNS, generate, hard_case

SCALE = 0.25
SEEDS = range(8)  # the default vendors in turn (hologic, ge, siemens, fuji), twice; views vary too
SC_UID = "1.2.840.10008.5.1.4.1.1.7"

Case = tuple[pydicom.Dataset, dict, MammoImage]


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, int], Case]:
    """(dataset, truth, what mammokit's reader sees) of one hard case, written once per module."""
    root = tmp_path_factory.mktemp("hard")
    made: dict[tuple[str, int], Case] = {}

    def get(kind: str, seed: int) -> Case:
        if (kind, seed) not in made:
            ds, truth = hard_case(kind, seed, SCALE, path=root / f"{kind}-{seed}.dcm")
            made[kind, seed] = (ds, truth, read_dicom(truth["path"]))
        return made[kind, seed]

    return get


def _disk(radius_px: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))


def _air(truth: dict, img: MammoImage, mm: float) -> np.ndarray:
    """Pixels farther than `mm` from the breast, excluding padding and any marker, label or border box."""
    far = ~cv2.dilate(truth["breast"].astype(np.uint8), _disk(round(mm / truth["spacing_mm"]))).astype(bool)
    if img.padding_mask is not None:
        far &= ~img.padding_mask
    for x0, y0, x1, y1 in truth["marker_boxes"] + truth["label_boxes"] + truth["border_boxes"]:
        far[max(0, y0 - 3) : y1 + 3, max(0, x0 - 3) : x1 + 3] = False
    if truth["collimation_box"]:
        x0, y0, x1, y1 = truth["collimation_box"]
        inside = np.zeros_like(far)
        inside[y0:y1, x0:x1] = True
        far &= inside
    return far


def _outer_line(px: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The image row or column at the edge a border box lies along."""
    x0, y0, x1, _ = box
    if x1 - x0 == px.shape[1]:  # along the top or the bottom
        return px[0] if y0 == 0 else px[-1]
    return px[:, 0] if x0 == 0 else px[:, -1]


def _overlaps(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


# ------------------------------------------------------------------------------------------- the generator


def test_truth_lives_on_the_stored_grid(case: Callable[[str, int], Case]) -> None:
    for kind in HARD_KINDS:
        for seed in SEEDS[:4]:
            ds, truth, img = case(kind, seed)
            shape = (ds.Rows, ds.Columns)
            for name in ("breast", "pectoral", "lesion"):
                assert truth[name].shape == shape and truth[name].dtype == bool
            assert (truth["pectoral"] <= truth["breast"]).all() and truth["pectoral"].any() == (truth["view"] == "MLO")
            assert (img.laterality, img.view) == (truth["laterality"], truth["view"])
            wall = truth["breast"][:, 0] if truth["chest_wall"] == "left" else truth["breast"][:, -1]
            far = truth["breast"][:, -1] if truth["chest_wall"] == "left" else truth["breast"][:, 0]
            assert wall.mean() > 0.3 and far.mean() < 0.02, (kind, seed)
            assert truth["air_fraction"] == pytest.approx(1 - truth["breast"].mean(), abs=1e-5)
            for box in truth["marker_boxes"] + truth["label_boxes"]:
                x0, y0, x1, y1 = box
                assert 0 <= x0 < x1 <= ds.Columns and 0 <= y0 < y1 <= ds.Rows
                assert not truth["breast"][y0:y1, x0:x1].any(), (kind, seed, box)
            assert truth["film"] == (kind == "film")


def test_fatty_breast_sits_close_to_air_and_otsu_splits_it(case: Callable[[str, int], Case]) -> None:
    for seed in SEEDS[:4]:
        _, truth, img = case("fatty", seed)
        px, spacing = img.pixels, truth["spacing_mm"]
        inner = cv2.erode(truth["breast"].astype(np.uint8), _disk(round(5 / spacing))).astype(bool)
        inner &= ~truth["pectoral"]
        air = float(np.median(px[_air(truth, img, 5)]))
        top = float(np.percentile(px[inner], 99))
        fat = float(np.percentile(px[inner], 25))
        assert (fat - air) / (top - air) < 0.2, seed  # fat is close to air ...
        assert (px[inner] > air + 0.5 * (top - air)).mean() < 0.3, seed  # ... and dense tissue a minority
        valid = ~img.padding_mask if img.padding_mask is not None else np.ones(px.shape, bool)
        threshold, _ = otsu(np.clip(px[valid], *np.percentile(px[valid], [0.5, 99.5])))
        assert threshold > np.median(px[inner & (px < np.percentile(px[inner], 50))]), seed  # Otsu: fat | dense


def test_air_is_a_minority(case: Callable[[str, int], Case]) -> None:
    for seed in SEEDS[:4]:
        _, truth, _ = case("air_minority", seed)
        breast = truth["breast"]
        assert truth["air_fraction"] < 0.15 and 1 - breast.mean() < 0.15, seed
        wall = breast[:, 0] if truth["chest_wall"] == "left" else breast[:, -1]
        assert wall.mean() > 0.8 and breast[0].any() and breast[-1].any(), seed


def test_collimated_zeros_without_padding_tag(case: Callable[[str, int], Case]) -> None:
    for seed in SEEDS[:4]:
        ds, truth, img = case("collimated", seed)
        assert "PixelPaddingValue" not in ds and img.padding_mask is None
        stored = ds.pixel_array
        x0, y0, x1, y1 = truth["collimation_box"]
        inside = np.zeros(stored.shape, bool)
        inside[y0:y1, x0:x1] = True
        assert (~inside).any() and (stored[~inside] == truth["collimation_value"]).all(), seed
        assert not (stored[inside] == truth["collimation_value"]).any(), seed
        assert not (truth["breast"] & ~inside).any(), seed
        dark = 0 if ds.PhotometricInterpretation == "MONOCHROME2" else (1 << ds.BitsStored) - 1
        assert truth["collimation_value"] == dark
        assert img.pixels[~inside].max() < img.pixels[inside].min(), seed  # the darkest value of the image


def test_film_header_is_a_digitized_film(case: Callable[[str, int], Case]) -> None:
    for seed in SEEDS[:3]:
        ds, truth, img = case("film", seed)
        assert ds.SOPClassUID == SC_UID and ds.Modality in ("MG", "OT") and ds.ConversionType == "DF"
        assert ds.BitsStored <= 12 and ds.PhotometricInterpretation == "MONOCHROME2"
        for tag in ("PixelSpacing", "ImagerPixelSpacing", "RescaleSlope", "PixelPaddingValue"):
            assert tag not in ds, tag
        assert img.spacing_mm is None and truth["spacing_mm"] == pytest.approx(0.05 / SCALE)
        assert ds.BurnedInAnnotation == "YES" and truth["marker_boxes"] and truth["label_boxes"]


def test_film_background_borders_markers_and_label(case: Callable[[str, int], Case]) -> None:
    gaps, bordered = [], 0
    for seed in range(12):
        ds, truth, img = case("film", seed)
        stored, px = ds.pixel_array, img.pixels
        air = _air(truth, img, 3)
        assert stored[air].min() > 0 and px[air].std() > 5, seed  # noisy, non-zero film background
        bright = np.percentile(px[truth["breast"]], 99)
        for x0, y0, x1, y1 in truth["border_boxes"]:  # unexposed film along an edge: brighter than any tissue
            assert np.median(px[y0:y1, x0:x1]) > bright, seed
            assert np.median(_outer_line(px, (x0, y0, x1, y1))) > bright, seed
        for x0, y0, x1, y1 in truth["marker_boxes"]:  # lead letters
            assert (px[y0:y1, x0:x1] > bright).sum() >= 20, seed
        for x0, y0, x1, y1 in truth["label_boxes"]:  # a bright paper label with dark strokes
            label, paper = px[y0:y1, x0:x1], np.median(px[y0:y1, x0:x1])
            assert paper > bright and (label < paper - 0.5 * (paper - np.median(px[air]))).sum() > 10, seed
        assert len(truth["mark_gaps_mm"]) == len(truth["marker_boxes"]) + len(truth["label_boxes"])
        assert min(truth["mark_gaps_mm"]) >= 3.0, seed  # in the air, never touching the breast
        gaps += truth["mark_gaps_mm"]
        bordered += bool(truth["border_boxes"])
    assert min(gaps) < 10  # some label sits within a few mm of the breast
    assert bordered >= 6  # most films show an unexposed border


def test_skin_fold_is_a_thin_dense_line_near_the_skin(case: Callable[[str, int], Case]) -> None:
    for seed in SEEDS[:4]:
        _, truth, img = case("skin_fold", seed)
        fold, breast, spacing = truth["fold"], truth["breast"], truth["spacing_mm"]
        assert fold.any() and (fold <= breast).all() and truth["fold_pixels"] == fold.sum()
        inner = cv2.erode(breast.astype(np.uint8), _disk(round(7 / spacing)), borderType=cv2.BORDER_REPLICATE)
        assert not (fold & inner.astype(bool)).any(), seed  # within a few mm of the skin
        assert fold.sum() * spacing**2 < 0.05 * breast.sum() * spacing**2, seed  # thin
        ring = cv2.dilate(fold.astype(np.uint8), _disk(max(2, round(1.5 / spacing)))).astype(bool) & breast & ~fold
        assert np.median(img.pixels[fold]) > np.median(img.pixels[ring]), seed  # denser than around it


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    for kind in HARD_KINDS:
        hard_case(kind, 7, 0.1, path=tmp_path / "a.dcm")
        hard_case(kind, 7, 0.1, path=tmp_path / "b.dcm")
        hard_case(kind, 8, 0.1, path=tmp_path / "c.dcm")
        a, b, c = ((tmp_path / f"{n}.dcm").read_bytes() for n in "abc")
        assert a == b and a != c, kind


def test_generate_writes_hard_cases_and_their_truth(tmp_path: Path) -> None:
    def digest(out: Path) -> dict[str, str]:
        return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*")
                if p.is_file()}

    kw = {"exams": len(HARD_KINDS), "seed": 1, "size_scale": 0.06, "hard_cases": "all"}
    summary = generate(tmp_path / "a", **kw)
    generate(tmp_path / "b", workers=2, **kw)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    out = tmp_path / "a"
    with (out / "images.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == IMAGE_COLUMNS and len(rows) == summary["images"] == 4 * len(HARD_KINDS)
    assert [r["hard_case"] for r in rows[::4]] == list(HARD_KINDS)
    assert json.loads((out / "synth.json").read_text())["hard_cases"] == list(HARD_KINDS)
    for r in rows:
        truth = json.loads(r["truth"])
        assert truth["chest_wall"] == r["chest_wall"] and bool(int(r["film"])) == (r["hard_case"] == "film")
        assert r["vendor"] == "film" if r["hard_case"] == "film" else r["vendor"] != "film"
        ds = pydicom.dcmread(next((out / "dicom").rglob(f"{r['sop_uid']}.dcm")), stop_before_pixels=True)
        breast = cv2.imread(str(out / "masks" / f"{r['sop_uid']}_breast.png"), cv2.IMREAD_GRAYSCALE) > 0
        assert breast.shape == (ds.Rows, ds.Columns) == (truth["rows"], truth["cols"])
        assert (out / "masks" / f"{r['sop_uid']}_fold.png").is_file() == (r["hard_case"] == "skin_fold")
    plain = generate(tmp_path / "plain", exams=1, size_scale=0.06)
    assert plain["images_csv"] is None and not (tmp_path / "plain" / "images.csv").exists()
    assert "hard_cases" not in json.loads((tmp_path / "plain" / "synth.json").read_text())
    with pytest.raises(ValueError, match="hard_cases"):
        generate(tmp_path / "bad", exams=1, hard_cases="wrinkles")


def test_cli_hard_cases(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), "--exams", "2", "--size-scale", "0.06",
                                      "--hard-cases", "film,skin-fold"])
    assert result.exit_code == 0, result.output
    with (tmp_path / "s" / "images.csv").open(newline="") as fh:
        assert {r["hard_case"] for r in csv.DictReader(fh)} == {"film", "skin_fold"}


# ------------------------------------------------------------------------- mammokit's preprocessing on them


@pytest.mark.parametrize("kind", HARD_KINDS)
def test_breast_mask_keeps_the_tissue(case: Callable[[str, int], Case], kind: str) -> None:
    kept = {}
    for seed in SEEDS:
        _, truth, img = case(kind, seed)
        mask = mask_to_original(breast_mask(img.pixels, img.padding_mask))
        kept[seed] = round(float((mask & truth["breast"]).sum() / truth["breast"].sum()), 4)
        if "fold" in truth:
            assert (mask & truth["fold"]).sum() >= 0.995 * truth["fold"].sum(), seed
    assert min(kept.values()) >= 0.995, kept


@pytest.mark.parametrize("kind", HARD_KINDS)
def test_crop_hugs_the_breast_and_orientation_is_right(case: Callable[[str, int], Case], kind: str) -> None:
    for seed in SEEDS:
        _, truth, img = case(kind, seed)
        bm = breast_mask(img.pixels, img.padding_mask)
        spacing = truth["spacing_mm"]
        x0, y0, x1, y1 = crop_box(bm, (spacing, spacing), margin_mm=2.0)
        rows, cols = np.flatnonzero(truth["breast"].any(1)), np.flatnonzero(truth["breast"].any(0))
        ratio = (x1 - x0) * (y1 - y0) / ((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1))
        assert ratio <= 1.15, (seed, ratio)  # no film border, collimation band or label swallowed
        orient = decide_orientation(bm.mask, img.laterality, img.patient_orientation)
        assert orient.flip == (truth["chest_wall"] == "right"), (seed, orient.reason)


def test_markers_and_labels_fall_outside_the_crop(case: Callable[[str, int], Case]) -> None:
    for seed in range(12):
        _, truth, img = case("film", seed)
        spacing = truth["spacing_mm"]  # what a correct fallback spacing gives; the file itself has none
        crop = crop_box(breast_mask(img.pixels, img.padding_mask), (spacing, spacing), margin_mm=2.0)
        for box in truth["marker_boxes"] + truth["label_boxes"]:
            assert not _overlaps(box, crop), (seed, box, crop)
