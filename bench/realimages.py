"""What mammokit's preprocessing decides on a folder of real images, and how long it takes.

Usage: .venv/bin/python bench/realimages.py FOLDER [--spacing-mm 0.07] [--show DIR]

Reads every DICOM file (any extension) and every 16-bit PNG/TIFF under FOLDER (PNG/TIFF carry no tags: content
decides everything) and prints one line per image:
  kept      tissue kept inside the breast mask, where the air is exactly the image's minimum (FFDM with air = 0):
            tissue = pixels above min + 15 in their largest 8-connected component; "-" where the air is not flat
            and on film (its bright edges and fog join that component)
  mark.in   burned-in markers (the other components above min + 15) that overlap the crop
  orient    chest wall side (L/R of the stored image), its confidence, and "AMBIG" when flagged ambiguous
  view      view read from the image (CC/MLO) and its confidence, beside the header's view
  film      the reader's film decision
  bands     film/plate edge bands cut, and the share of bright pixels left outside the mask
  ms        breast mask + orientation + crop + resample to 0.1 mm + view from content, one core, after decoding
`--show DIR` writes one PNG per image (original with mask outline, crop box and markers) to look at.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mammokit.dicom import DicomReadError, read_dicom
from mammokit.preprocess import (
    apply_transform,
    breast_mask,
    crop_box,
    decide_orientation,
    detect_pectoral,
    mask_to_original,
    original_to_stored_mask,
    plan_transform,
)
from mammokit.preprocess.mask import boxes_overlap
from mammokit.preprocess.view import view_from_content
from realdata import tissue_and_markers

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


def load(path: Path, spacing_mm: float) -> tuple | None:
    """(pixels, padding mask, spacing, header view, film) of one file, or None when it is not an image."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if pixels is None or pixels.ndim != 2:
            return None
        return pixels.astype(np.float32), None, (spacing_mm, spacing_mm), None, False
    try:
        img = read_dicom(path)
    except DicomReadError:
        return None
    return img.pixels, img.padding_mask, img.spacing_mm or (spacing_mm, spacing_mm), img.view, img.film


def tissue_oracle(pixels: np.ndarray) -> tuple[np.ndarray | None, list[tuple[int, int, int, int]]]:
    """(tissue, marker boxes) where the air is flat at the minimum (the tests' oracle); (None, []) otherwise."""
    low = float(pixels.min())
    if (pixels == low).mean() < 0.1 or not (pixels > low + 15).any():
        return None, []
    return tissue_and_markers(pixels, low + 15)


def decide(pixels: np.ndarray, padding: np.ndarray | None, spacing: tuple[float, float]) -> dict:
    """Run the image steps that decide things, timed."""
    t0 = time.perf_counter()
    bm = breast_mask(pixels, padding)
    orient = decide_orientation(bm.mask)
    box = crop_box(bm, spacing)
    record = plan_transform(pixels.shape, spacing, box, target_spacing_mm=0.1, flip=orient.flip)
    stored = apply_transform(pixels, record)
    mask = original_to_stored_mask(bm.mask, record, bm.scale)
    view = view_from_content(mask, detect_pectoral(stored, mask, spacing_mm=0.1))
    return {"bm": bm, "orient": orient, "box": box, "view": view, "ms": 1000 * (time.perf_counter() - t0)}


def picture(pixels: np.ndarray, d: dict, out: Path) -> None:
    h = 600
    s = h / pixels.shape[0]
    lo, hi = float(pixels.min()), float(np.percentile(pixels, 99.5))
    gray = (np.sqrt(np.clip((pixels - lo) / max(hi - lo, 1e-6), 0, 1)) * 255).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.resize(gray, (round(pixels.shape[1] * s), h), interpolation=cv2.INTER_AREA),
                       cv2.COLOR_GRAY2BGR)
    mask = cv2.resize(mask_to_original(d["bm"]).astype(np.uint8), rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(rgb, contours, -1, (0, 0, 255), 1)
    x0, y0, x1, y1 = (round(v * s) for v in d["box"])
    cv2.rectangle(rgb, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 1)
    for m in d["bm"].markers:
        cv2.rectangle(rgb, (round(m[0] * s), round(m[1] * s)), (round(m[2] * s), round(m[3] * s)), (255, 0, 255), 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), rgb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--spacing-mm", type=float, default=0.07, help="spacing for files that carry none")
    parser.add_argument("--show", type=Path, default=None)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    files = sorted(p for p in args.folder.rglob("*") if p.is_file())
    print(f"{'image':34} {'size':>10} {'kept':>6} {'mark.in':>7} {'orient':>12} {'view':>14} {'film':>4} "
          f"{'bands':>14} {'out':>5} {'ms':>5}")
    times, kept_all = [], []
    for path in files:
        loaded = load(path, args.spacing_mm)
        if loaded is None:
            continue
        pixels, padding, spacing, header_view, film = loaded
        decide(pixels, padding, spacing)  # warm-up: first-call costs are not the steady state
        d = decide(pixels, padding, spacing)
        times.append(d["ms"])
        tissue, markers = tissue_oracle(pixels) if not film else (None, [])  # film edges are not tissue
        kept = "-"
        if tissue is not None:
            k = float((mask_to_original(d["bm"]) & tissue).sum() / tissue.sum())
            kept_all.append(k)
            kept = f"{k:.4f}"
        inside = sum(boxes_overlap(m, d["box"]) for m in markers)
        o = d["orient"]
        orient = f"{'R' if o.flip else 'L'} {o.confidence:.2f}{' AMBIG' if o.ambiguous else ''}"
        view = f"{d['view'].value or '?'} {d['view'].confidence:.2f}/{header_view or '-'}"
        bands = ",".join(d["bm"].edge_bands) or "-"
        print(f"{str(path.relative_to(args.folder))[:34]:34} {pixels.shape[0]:>5}x{pixels.shape[1]:<4} {kept:>6} "
              f"{inside:>7} {orient:>12} {view:>14} {'yes' if film else 'no':>4} {bands:>14} "
              f"{d['bm'].tissue_outside:>5.3f} {d['ms']:>5.0f}")
        if args.show:
            picture(pixels, d, args.show / f"{path.stem}.png")
    if not times:
        sys.exit(f"{args.folder}: no readable images")
    print(f"\n{len(times)} images; median {statistics.median(times):.0f} ms per image (max {max(times):.0f}); "
          f"tissue kept min {min(kept_all):.4f}" if kept_all else f"\n{len(times)} images; median "
          f"{statistics.median(times):.0f} ms per image")


if __name__ == "__main__":
    main()
