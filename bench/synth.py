"""Generation speed of `mammokit synth`: exams per minute at full detector size and at test sizes (one process).

Run: .venv/bin/python bench/synth.py [--exams-full 4] [--exams-small 64]
Each size generates exams cycling through the default vendors (hologic, ge, siemens, fuji) into a
temporary folder and reports wall time, exams/minute and images/second. Limits OpenCV and BLAS to one
thread so the number is per core.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2

from mammokit.synth import generate


def run(exams: int, size_scale: float, vendors: str, masks: bool) -> dict:
    """Generate once and return the summary with the output size added."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "synth"
        start = time.perf_counter()
        summary = generate(out, exams=exams, seed=0, vendors=vendors, size_scale=size_scale, masks=masks)
        summary["wall"] = time.perf_counter() - start
        summary["mbytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exams-full", type=int, default=4)
    parser.add_argument("--exams-small", type=int, default=64)
    parser.add_argument("--vendors", default="default")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    print(f"{'size_scale':>10} {'exams':>6} {'images':>7} {'seconds':>8} {'exams/min':>10} {'img/s':>7} {'MB':>8}")
    for scale, exams in ((0.1, args.exams_small), (0.25, args.exams_small), (1.0, args.exams_full)):
        s = run(exams, scale, args.vendors, masks=True)
        print(f"{scale:>10} {exams:>6} {s['images']:>7} {s['wall']:>8.2f} {60 * exams / s['wall']:>10.1f} "
              f"{s['images'] / s['wall']:>7.2f} {s['mbytes']:>8.1f}")


if __name__ == "__main__":
    main()
