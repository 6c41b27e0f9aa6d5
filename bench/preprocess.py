"""Benchmark `mammokit index` and `mammokit preprocess` on synthetic archives: speed, memory and crop quality.

Usage: .venv/bin/python bench/preprocess.py [--sections index,stages,throughput,rss,quality] [--repeats 5]
       [--exams 4] [--quality-exams 12] [--work DIR]

Sections (each prints its own lines):
  index       header scan of a 64-exam archive at size_scale 0.25 (256 images): images/second.
  stages      one full-size 3328×2560 14-bit right MLO (0.07 mm, hologic-like phantom re-encoded at 14 bits), one
              core: decode, then every pipeline stage at 0.1 mm, and the total after decoding (goal ≤ 100 ms).
  throughput  `run_pipeline(workers=2)` on `--exams` full-size exams (default vendors): images/hour.
  rss         peak resident memory of one worker process preprocessing full-size images (goal < 1.5 GB).
  quality     crop quality against the synth ground truth on `--quality-exams` exams of every vendor at size 0.5:
              lesion boxes inside the crop, breast pixels kept, crop area / true breast bounding box.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dicom_factory import write_test_dicom
from mammokit.config import config_hash
from mammokit.datasets.index import build_index, write_index
from mammokit.dicom import read_dicom
from mammokit.preprocess import (
    apply_transform,
    breast_mask,
    crop_box,
    decide_orientation,
    detect_pectoral,
    global_image,
    intensity_stats,
    original_to_stored_boxes,
    original_to_stored_mask,
    patch_grid,
    plan_transform,
)
from mammokit.preprocess.config import PreprocessConfig
from mammokit.preprocess.pipeline import process_image, run_pipeline
from mammokit.preprocess.store import write_image, write_mask
from mammokit.synth import generate


def _one_core() -> None:
    cv2.setNumThreads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def bench_index(work: Path) -> None:
    """Header scan speed on 64 exams at size_scale 0.25."""
    src = work / "index64"
    if not src.exists():
        generate(src, exams=64, seed=0, size_scale=0.25, masks=False, workers=2)
    runs = [build_index(src, adapter="synth") for _ in range(3)]
    speeds = [r.images_per_second for r in runs]
    print(f"index: {len(runs[0].images)} images, {len(runs[0].skipped)} skipped, "
          f"{statistics.median(speeds):.0f} images/s (median of 3; range {min(speeds):.0f}-{max(speeds):.0f})")


def full_size_14bit(work: Path) -> Path:
    """The synth hologic right MLO (3328×2560, 0.07 mm) re-encoded as 14-bit stored values, uncompressed.

    PixelPaddingValue 0 is kept, as the source has it: without it the off-field zeros pull the mask threshold below
    the in-field air (see the report on `breast_mask`).
    """
    out = work / "full14.dcm"
    if out.exists():
        return out
    src = work / "full1"
    if not src.exists():
        generate(src, exams=1, seed=0, size_scale=1.0, vendors="hologic", masks=False)
    index = build_index(src, adapter="synth").images
    row = index[(index["laterality"] == "R") & (index["view"] == "MLO")].iloc[0]
    img = read_dicom(row["path"])
    pixels = np.clip(np.rint(img.pixels * 4), 0, 2**14 - 1).astype(np.uint16)  # 12-bit → 14-bit
    write_test_dicom(out, pixels, bits_stored=14, ImageLaterality="R", ViewPosition="MLO",
                     PatientOrientation=["P", "FL"], PixelSpacing=[0.07, 0.07], PixelPaddingValue=0)
    return out


def bench_stages(work: Path, repeats: int) -> None:
    """Decode and each stage of `process_image`, medians over `repeats`, one core."""
    _one_core()
    path = full_size_14bit(work)
    cfg = PreprocessConfig()
    store = work / "stage_store"
    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        times.setdefault(name, []).append(time.perf_counter() - t0)
        return out

    for _ in range(repeats):
        img = timed("decode", lambda: read_dicom(path))
        spacing = img.spacing_mm
        bm = timed("mask", lambda img=img: breast_mask(img.pixels, img.padding_mask,
                                                       coarse_long_side=cfg.coarse_long_side))
        orient = timed("orient", lambda bm=bm, img=img: decide_orientation(bm.mask, img.laterality,
                                                                           img.patient_orientation))

        def crop_resample(img=img, bm=bm, orient=orient, spacing=spacing) -> tuple:
            box = crop_box(bm, spacing, margin_mm=cfg.margin_mm)
            rec = plan_transform(img.pixels.shape, spacing, box, target_spacing_mm=cfg.spacing_mm, flip=orient.flip)
            return rec, apply_transform(img.pixels, rec, method=cfg.resample_method)

        record, stored = timed("crop+resample+flip", crop_resample)
        mask = timed("mask to stored", lambda bm=bm, record=record: original_to_stored_mask(bm.mask, record, bm.scale))
        pect = timed("pectoral", lambda stored=stored, mask=mask, record=record: detect_pectoral(
            stored, mask, spacing_mm=record.output_spacing_mm[0]))
        stats = timed("stats", lambda stored=stored, mask=mask: intensity_stats(stored, mask))
        stored = np.where(mask, stored, np.float32(stats.min - 1.0)).astype(np.float32)
        glob, _ = timed("global image", lambda stored=stored: global_image(stored, cfg.global_long_side))
        timed("patches", lambda mask=mask: patch_grid(mask, cfg.patch_size, cfg.patch_stride,
                                                      cfg.patch_min_breast_fraction))
        timed("write image", lambda stored=stored: write_image(store / "images" / "x.tif", stored))
        timed("write global", lambda glob=glob: write_image(store / "global" / "x.tif", glob))
        timed("write mask", lambda mask=mask, pect=pect: (write_mask(store / "masks" / "x.png", mask),
                                                          pect.found and write_mask(store / "masks" / "p.png",
                                                                                    pect.mask)))
        timed("record", lambda record=record: (original_to_stored_boxes([[10, 10, 50, 50]], record),
                                               (store / "records").mkdir(parents=True, exist_ok=True),
                                               (store / "records" / "x.json").write_text(
                                                   json.dumps(record.to_dict()))))
        row = {"image_id": "bench", "path": str(path), "lesions": "[]"}
        timed("process_image (all)", lambda row=row: process_image(row, str(store), cfg.model_dump(),
                                                                   config_hash(cfg)))
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"stages: {img.rows}×{img.columns} {img.bits_stored}-bit {img.laterality} {img.view}, "
          f"{spacing[0]} mm → {cfg.spacing_mm} mm, stored {stored.shape[0]}×{stored.shape[1]}, "
          f"pectoral found={pect.found}; median of {repeats}, one core")
    for name, ms in med.items():
        print(f"  {name:<22}{ms:8.1f} ms")
    stage_sum = sum(v for k, v in med.items() if k not in ("decode", "process_image (all)"))
    after = med["process_image (all)"] - med["decode"]
    print(f"  sum of stages after decoding: {stage_sum:.1f} ms; process_image − decode: {after:.1f} ms "
          f"(goal ≤ 100 ms); decode alone {med['decode']:.1f} ms; ratio after/decode {after / med['decode']:.2f}")


def _full_set(work: Path, exams: int) -> Path:
    src = work / f"full{exams}"
    if not src.exists():
        generate(src, exams=exams, seed=1, size_scale=1.0, masks=True, workers=2)
    index = work / f"full{exams}.parquet"
    if not index.exists():
        write_index(build_index(src, adapter="synth"), index)
    return index


def bench_throughput(work: Path, exams: int) -> None:
    """Images/hour with two worker processes on full-size images (default vendors, cold store)."""
    index = _full_set(work, exams)
    store = Path(tempfile.mkdtemp(dir=work, prefix="tp_"))
    summary = run_pipeline(index, store, PreprocessConfig(), workers=2, progress=False)
    print(f"throughput: {summary['processed']} full-size images, 2 workers, {summary['seconds']} s → "
          f"{summary['images_per_hour']} images/hour ({summary['failed']} failed)")


def _rss_job(rows: list[dict], store: str) -> float:
    cfg = PreprocessConfig()
    for row in rows:
        process_image(row, store, cfg.model_dump(), config_hash(cfg))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_rss(work: Path, exams: int) -> None:
    """Peak RSS of one worker process that preprocesses full-size images of every default vendor."""
    index = pd.read_parquet(_full_set(work, exams))
    rows = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in index.to_dict("records")]
    store = tempfile.mkdtemp(dir=work, prefix="rss_")
    with ProcessPoolExecutor(1) as pool:
        inside = pool.submit(_rss_job, rows, store).result()
    sizes = sorted({(int(r), int(c)) for r, c in zip(index["rows"], index["columns"], strict=True)})
    # The worker's own ru_maxrss: RUSAGE_CHILDREN would also count the synth generator's worker processes.
    print(f"rss: one worker process, {len(rows)} full-size images (shapes {sizes}): peak RSS {inside:.0f} MB "
          f"(goal < 1536 MB)")


def bench_quality(work: Path, exams: int) -> None:
    """Crop quality against the synth ground truth, every vendor profile, size_scale 0.5."""
    src = work / f"quality{exams}"
    if not src.exists():
        generate(src, exams=exams, seed=2, size_scale=0.5, vendors="all", masks=True, prevalence=0.5,
                 benign_rate=0.5, workers=2)
    index = build_index(src, adapter="synth").images
    store = Path(tempfile.mkdtemp(dir=work, prefix="q_"))
    summary = run_pipeline(index, store, PreprocessConfig(), workers=2, progress=False)
    table = pd.read_parquet(store / "preprocessed.parquet").merge(
        index[["image_id", "truth_breast_mask", "lesions"]], on="image_id")
    inside = total = 0
    kept, ratio = [], []
    for r in table.itertuples():
        x0, y0, x1, y1 = r.crop_x0, r.crop_y0, r.crop_x1, r.crop_y1
        for les in json.loads(r.lesions):
            total += 1
            inside += les["x0"] >= x0 and les["y0"] >= y0 and les["x1"] <= x1 and les["y1"] <= y1
        truth = cv2.imread(r.truth_breast_mask, cv2.IMREAD_GRAYSCALE) > 0
        kept.append(truth[y0:y1, x0:x1].sum() / truth.sum())
        ys, xs = np.nonzero(truth)
        ratio.append((x1 - x0) * (y1 - y0) / ((ys.max() + 1 - ys.min()) * (xs.max() + 1 - xs.min())))
    kept_a, ratio_a = np.array(kept), np.array(ratio)
    print(f"quality: {len(table)} images ({summary['failed']} failed), all 6 vendors, size_scale 0.5: "
          f"lesions inside crop {inside}/{total} ({100 * inside / max(total, 1):.1f}%); breast pixels kept "
          f"min {100 * kept_a.min():.2f}% median {100 * np.median(kept_a):.2f}%; crop area / breast box "
          f"median {np.median(ratio_a):.3f} max {ratio_a.max():.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="index,stages,throughput,rss,quality")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--exams", type=int, default=4, help="full-size exams for throughput and rss")
    parser.add_argument("--quality-exams", type=int, default=12)
    parser.add_argument("--work", type=Path, default=None, help="reuse generated archives from this folder")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="mammokit_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    sections = {s.strip() for s in args.sections.split(",")}
    unknown = sections - {"index", "stages", "throughput", "rss", "quality"}
    if unknown:
        parser.error(f"--sections: unknown {sorted(unknown)}")
    if "index" in sections:
        bench_index(work)
    if "stages" in sections:
        bench_stages(work, args.repeats)
    if "throughput" in sections:
        bench_throughput(work, args.exams)
    if "rss" in sections:
        bench_rss(work, args.exams)
    if "quality" in sections:
        bench_quality(work, args.quality_exams)


if __name__ == "__main__":
    main()
