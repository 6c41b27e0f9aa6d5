"""Time each preprocessing step after decoding on a full-size 3328×2560 14-bit MLO phantom (0.07 mm), one core.

Usage: .venv/bin/python bench/preprocess_steps.py [--repeats 7] [--target 0.1]

Prints the median time of each stage and their total (writing to storage excluded: the pipeline's writer is
measured separately). The phantom comes from tests/test_preprocess_phantom.py so bench and tests share one truth.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mammokit.preprocess import (
    apply_transform,
    breast_mask,
    crop_box,
    decide_orientation,
    detect_pectoral,
    global_image,
    intensity_stats,
    original_to_stored_mask,
    patch_grid,
    plan_transform,
)
from test_preprocess_phantom import dice, make_phantom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--target", type=float, default=0.1, help="output spacing in mm")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    ph = make_phantom((3328, 2560), (0.07, 0.07), view="MLO", chest_wall_left=False, seed=0, bits=14,
                      padding_px=40, label=True)
    padding = ph.padding
    times: dict[str, list[float]] = {}

    def timed(name: str, fn):
        t0 = time.perf_counter()
        out = fn()
        times.setdefault(name, []).append(time.perf_counter() - t0)
        return out

    for _ in range(args.repeats):
        bm = timed("breast mask (coarse)", lambda: breast_mask(ph.pixels, padding))
        orient = timed("orientation", lambda bm=bm: decide_orientation(bm.mask, "R", ("P", "FL")))
        record = timed("crop box + plan", lambda bm=bm, o=orient: plan_transform(
            ph.pixels.shape, ph.spacing_mm, crop_box(bm, ph.spacing_mm, 2.0), args.target, o.flip))
        stored = timed("crop+resample+flip (area)", lambda r=record: apply_transform(ph.pixels, r))
        smask = timed("mask to stored grid", lambda r=record, bm=bm: original_to_stored_mask(bm.mask, r, bm.scale))
        pect = timed("pectoral (MLO)", lambda s=stored, m=smask, r=record: detect_pectoral(
            s, m, spacing_mm=r.output_spacing_mm[0]))
        timed("intensity stats", lambda s=stored, m=smask: intensity_stats(s, m))
        timed("global image (long 1024)", lambda s=stored: global_image(s, 1024))
        timed("patch grid (512/256)", lambda m=smask: patch_grid(m, 512, 256, 0.1))
        timed("[ref] resample sitk", lambda r=record: apply_transform(ph.pixels, r, method="sitk"))
        timed("[ref] cv2 INTER_AREA, no crop",
              lambda: cv2.resize(ph.pixels, (1829, 2377), interpolation=cv2.INTER_AREA))
    total = 0.0
    print(f"image {ph.pixels.shape} at {ph.spacing_mm[0]} mm -> stored {record.stored_shape} at {args.target} mm, "
          f"median of {args.repeats}, 1 thread")
    for name, ts in times.items():
        med = statistics.median(ts) * 1000
        if not name.startswith("[ref]"):
            total += med
        print(f"  {name:28s} {med:7.1f} ms")
    print(f"  {'TOTAL (excluding [ref])':28s} {total:7.1f} ms")
    truth = original_to_stored_mask(ph.pectoral, record)  # phantom truth (DICOM grid) carried to the stored grid
    print(f"  flip={orient.flip} ({orient.source}); pectoral found={pect.found} dice={dice(pect.mask, truth):.3f}")


if __name__ == "__main__":
    main()
