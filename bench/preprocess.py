"""Benchmark `mammokit index` and `mammokit preprocess` on synthetic archives: speed, memory and crop quality.

Usage: .venv/bin/python bench/preprocess.py [--sections index,stages,throughput,rss,quality,archive] [--repeats 5]
       [--exams 4] [--quality-exams 12] [--archive-images 24] [--archive-workers 1,2] [--archive-rounds 1]
       [--plain-format png] [--work DIR]

Sections (each prints its own lines):
  index       header scan of a 64-exam archive at size_scale 0.25 (256 images): images/second.
  stages      one full-size 3328×2560 14-bit right MLO (0.07 mm, hologic-like phantom re-encoded at 14 bits), one
              core: decode, then every pipeline stage at 0.1 mm, and the total after decoding (goal ≤ 100 ms).
  throughput  `run_pipeline(workers=2)` on `--exams` full-size exams (default vendors): images/hour.
  rss         peak resident memory of one worker process preprocessing full-size images (goal < 1.5 GB).
  quality     crop quality against the synth ground truth on `--quality-exams` exams of every vendor at size 0.5:
              lesion boxes inside the crop, breast pixels kept, crop area / true breast bounding box.
  archive     a mixed archive as RSNA has (`--archive-images`, half JPEG 2000 lossless, half JPEG Lossless SV1;
              3328×2560 at 0.07 mm and 2776×2082 at 0.084 mm; 12 and 14 bits; MONOCHROME2; synth hologic content),
              indexed with `build_index`. Per worker count N, in one run: `mammokit preprocess INDEX --out STORE
              --workers N` (the CLI, as a subprocess) against a plain pipeline (`PLAIN_SCRIPT`, also a subprocess: a
              fork Pool of N processes doing pydicom `pixel_array` → Otsu bounding-box crop → `cv2.resize` INTER_AREA
              to the store's spacing → `cv2.imwrite` 16-bit). Prints images/hour (end to end, and inside the run
              loop), CPU s/image (every process of the command, its fork server's workers included), the ratio, the
              load average; the steady state (the full run minus a run on the first 8 images: throughput at archive
              scale, start-up excluded) and each command's start-up CPU; a per-image split (decode vs the rest, one
              core) and one JSON line. Wall time is noisy on a shared machine: compare ratios and CPU s/image.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
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
import psutil
import pydicom
import SimpleITK as sitk
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1

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

ARCHIVE_SIZES = {"3328x2560": (3328, 2560), "2776x2082": (2776, 2082)}  # the two RSNA detector sizes
ARCHIVE_SYNTAXES = {"J2K": JPEG2000Lossless, "JPEG-LL": JPEGLosslessSV1}
SYNTH_SPACING_MM = 0.07  # synth hologic at size_scale 1.0: 3328×2560 at 0.07 mm

# The plain pipeline a user would write: run as `python -c PLAIN_SCRIPT PATHS_JSON OUT WORKERS SPACING_MM SUFFIX`.
PLAIN_SCRIPT = r'''
import json, os, sys, time
from multiprocessing import get_context
from pathlib import Path
import cv2, numpy as np, pydicom

def one(job):
    path, out, spacing_mm, suffix = job
    ds = pydicom.dcmread(path)
    px = ds.pixel_array  # pydicom's default decoders
    _, fg = cv2.threshold(px, 0, 1, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    crop = px[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    sy, sx = (float(v) for v in ds.PixelSpacing)
    size = (max(1, round(crop.shape[1] * sx / spacing_mm)), max(1, round(crop.shape[0] * sy / spacing_mm)))
    small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    if not cv2.imwrite(str(Path(out) / (Path(path).stem + suffix)), small):
        raise OSError(path)
    return os.getpid(), small.shape

if __name__ == "__main__":
    paths = json.loads(Path(sys.argv[1]).read_text())
    out, workers, spacing, suffix = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    t0 = time.perf_counter()
    pool = get_context("fork").Pool(workers)
    shapes = [s for _, s in pool.imap_unordered(one, [(p, out, spacing, suffix) for p in paths])]
    pool.close()
    pool.join()
    print(json.dumps({"seconds": time.perf_counter() - t0, "shapes": shapes}))
'''


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


def _archive_file(job: tuple[int, str, str]) -> str:
    """Re-encode synth image `i` as archive member i: syntax, size and bits cycle so every combination occurs."""
    i, src, folder = job
    ds = pydicom.dcmread(src)
    px = ds.pixel_array  # 12-bit stored values, PixelPaddingValue 0 off-field
    syntax = "J2K" if i % 2 == 0 else "JPEG-LL"
    size = "3328x2560" if (i // 2) % 2 == 0 else "2776x2082"
    bits = 12 if (i // 4) % 2 == 0 else 14
    rows, cols = ARCHIVE_SIZES[size]
    spacing = SYNTH_SPACING_MM * px.shape[0] / rows
    if px.shape != (rows, cols):
        pad = cv2.resize((px == 0).view(np.uint8), (cols, rows), interpolation=cv2.INTER_NEAREST) > 0
        px = cv2.resize(px, (cols, rows), interpolation=cv2.INTER_AREA)
        px[pad] = 0
    if bits == 14:
        px = px * np.uint16(4)
    path = Path(folder) / f"{ds.PatientID}" / f"{i:03d}_{syntax}_{size}_{bits}bit.dcm"
    write_test_dicom(path, px.astype(np.uint16), transfer_syntax=ARCHIVE_SYNTAXES[syntax], bits_stored=bits,
                     ImageLaterality=ds.ImageLaterality, ViewPosition=ds.ViewPosition,
                     PatientOrientation=list(ds.PatientOrientation), PixelSpacing=[round(spacing, 5)] * 2,
                     PixelPaddingValue=0, PatientID=ds.PatientID, StudyInstanceUID=ds.StudyInstanceUID,
                     SeriesInstanceUID=ds.SeriesInstanceUID)
    return str(path)


def mixed_archive(work: Path, n: int) -> Path:
    """The index (parquet) of an `n`-image mixed J2K / JPEG-LL archive of full-size synth content (cached)."""
    index = work / f"archive{n}.parquet"
    if index.exists():
        return index
    src = work / f"archive_synth{math.ceil(n / 4)}"
    if not src.exists():
        generate(src, exams=math.ceil(n / 4), seed=3, size_scale=1.0, vendors="hologic", masks=False, workers=2)
    files = sorted(str(p) for p in (src / "dicom").rglob("*.dcm"))[:n]
    folder = work / f"archive{n}"
    with ProcessPoolExecutor(2, mp_context=mp.get_context("forkserver")) as pool:
        list(pool.map(_archive_file, [(i, f, str(folder)) for i, f in enumerate(files)]))
    write_index(build_index(folder), index)
    return index


def _cpu_seconds() -> float:
    """User + system CPU of every waited-for child process (and their waited-for children)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _reap_orphans(known: set[int], timeout_s: float = 30.0) -> None:
    """Wait for processes left to us as subreaper (the CLI's fork server), so their CPU counts in RUSAGE_CHILDREN."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        orphans = [c.pid for c in psutil.Process().children() if c.pid not in known]
        if not orphans:
            return
        for pid in orphans:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)


def _measured(cmd: list[str]) -> dict[str, Any]:
    """Run `cmd`; its wall seconds, CPU seconds (all its processes), stdout and the 1-minute load before/after."""
    known = {c.pid for c in psutil.Process().children()}
    load0, cpu0, t0 = os.getloadavg()[0], _cpu_seconds(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    _reap_orphans(known)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])}... exited {proc.returncode}: {proc.stderr[-2000:]}")
    return {"wall": wall, "cpu": _cpu_seconds() - cpu0, "stdout": proc.stdout, "load": (load0, os.getloadavg()[0])}


def _mammokit_cmd() -> list[str]:
    script = Path(sys.executable).with_name("mammokit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mammokit.cli"]


def _run_mammokit(index: Path, store: Path, workers: int) -> dict[str, Any]:
    res = _measured([*_mammokit_cmd(), "preprocess", str(index), "--out", str(store), "--workers", str(workers)])
    summary = json.loads((store / "summary.json").read_text())
    if summary["failed"]:
        raise RuntimeError(f"mammokit preprocess: {summary['failed']} images failed ({store / 'failures.csv'})")
    table = pd.read_parquet(store / "preprocessed.parquet", columns=["height", "width"])
    return {**res, "loop": summary["seconds"], "mpix": float((table["height"] * table["width"]).mean() / 1e6)}


def _run_plain(paths_json: Path, out: Path, workers: int, spacing_mm: float, suffix: str) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    res = _measured([sys.executable, "-c", PLAIN_SCRIPT, str(paths_json), str(out), str(workers), str(spacing_mm),
                     suffix])
    info = json.loads(res["stdout"].strip().splitlines()[-1])
    return {**res, "loop": info["seconds"], "mpix": float(np.mean([h * w for h, w in info["shapes"]]) / 1e6)}


def _split_one_core(table: pd.DataFrame, store: Path, spacing_mm: float) -> list[dict[str, Any]]:
    """CPU seconds of one image per (syntax, size), one core: read_dicom, pydicom's pixel_array, process_image."""
    _one_core()
    cfg = PreprocessConfig(spacing_mm=spacing_mm)
    out = []
    for kind in sorted({Path(p).stem.split("_", 1)[1].rsplit("_", 1)[0] for p in table["path"]}):
        row = next(r for r in table.to_dict("records") if f"_{kind}_" in Path(r["path"]).name)
        row = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        runs: dict[str, Callable[[], Any]] = {
            "read_dicom": lambda row=row: read_dicom(row["path"]),
            "pydicom": lambda row=row: pydicom.dcmread(row["path"]).pixel_array,
            "process_image": lambda row=row: process_image(row, str(store), cfg.model_dump(), config_hash(cfg))}
        cpu = {}
        for name, fn in runs.items():
            fn()
            times = []
            for _ in range(3):
                t0 = time.process_time()
                fn()
                times.append(time.process_time() - t0)
            cpu[name] = statistics.median(times)
        out.append({"kind": kind, **{k: round(v, 3) for k, v in cpu.items()},
                    "after_decode": round(cpu["process_image"] - cpu["read_dicom"], 3)})
    return out


def _archive_subset(table: pd.DataFrame, rows: int, folder: Path) -> tuple[Path, Path]:
    """The first `rows` images as an index (for mammokit) and a path list (for the plain pipeline)."""
    folder.mkdir(parents=True, exist_ok=True)
    index, paths = folder / f"first{rows}.parquet", folder / f"first{rows}.json"
    table.iloc[:rows].to_parquet(index, index=False)
    paths.write_text(json.dumps(table["path"].tolist()[:rows]))
    return index, paths


def _archive_row(res: dict[str, Any], images: int, **keys: Any) -> dict[str, Any]:
    return {**keys, "images": images, "wall_s": round(res["wall"], 2), "loop_s": round(res["loop"], 2),
            "cpu_s": round(res["cpu"], 2), "cpu_s_per_image": round(res["cpu"] / images, 3),
            "images_per_hour": round(images / res["wall"] * 3600),
            "images_per_hour_loop": round(images / res["loop"] * 3600), "stored_mpix": round(res["mpix"], 2),
            "load1": [round(v, 2) for v in res["load"]]}


def _archive_summary(results: list[dict[str, Any]], n: int, small: int | None, workers: int) -> dict[str, Any]:
    """Medians over rounds per pipeline, the steady state from the n-image minus the small-subset runs, ratios."""
    med: dict[str, dict[str, float]] = {}
    for what in ("mammokit", "plain"):
        full = [x for x in results if x["workers"] == workers and x["pipeline"] == what and x["images"] == n]
        med[what] = {k: statistics.median(x[k] for x in full)
                     for k in ("images_per_hour", "images_per_hour_loop", "cpu_s_per_image")}
        if small:
            pairs = [(x, y) for x in full for y in results if y["workers"] == workers and y["pipeline"] == what
                     and y["images"] == small and y["round"] == x["round"]]
            med[what]["steady_images_per_hour"] = statistics.median(
                (n - small) / max(x["wall_s"] - y["wall_s"], 1e-3) * 3600 for x, y in pairs)
            med[what]["steady_cpu_s_per_image"] = statistics.median((x["cpu_s"] - y["cpu_s"]) / (n - small)
                                                                    for x, y in pairs)
            med[what]["fixed_cpu_s"] = statistics.median(
                y["cpu_s"] - small * (x["cpu_s"] - y["cpu_s"]) / (n - small) for x, y in pairs)
    m, p = med["mammokit"], med["plain"]
    return {"workers": workers, "mammokit": {k: round(v, 3) for k, v in m.items()},
            "plain": {k: round(v, 3) for k, v in p.items()},
            **{f"ratio_{k}": round(m[k] / p[k], 3) for k in m if k != "fixed_cpu_s"}}


def bench_archive(work: Path, n: int, workers_list: list[int], rounds: int, plain_format: str) -> None:
    """`mammokit preprocess --workers N` against a plain pydicom + OpenCV pipeline on a mixed J2K / JPEG-LL archive.

    Each pipeline also runs on the first 8 images (one of each kind) when the archive has at least 16: the difference
    from the full run is the steady state, i.e. throughput at archive scale without the start-up (interpreter,
    imports, worker processes) that a run pays once.
    """
    if sys.platform.startswith("linux"):  # orphans (the CLI's fork server) come back to us, so their CPU counts
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    index = mixed_archive(work, n)
    table = pd.read_parquet(index)
    if len(table) != n:
        raise RuntimeError(f"{index}: {len(table)} images indexed, expected {n}")
    kinds = table["path"].map(lambda p: Path(p).stem.split("_", 1)[1]).value_counts().to_dict()
    runs_dir = Path(tempfile.mkdtemp(dir=work, prefix="archive_runs_"))
    sizes = {n: _archive_subset(table, n, runs_dir)}
    small = 8 if n >= 16 else None
    if small:
        sizes[small] = _archive_subset(table, small, runs_dir)
    for p in table["path"]:  # page cache
        Path(p).read_bytes()
    # warm-up: two images each way; the plain pipeline resizes to the spacing the store's config says
    warm_index, warm_paths = _archive_subset(table, 2, runs_dir)
    _run_mammokit(warm_index, runs_dir / "warm_store", 1)
    saved = json.loads((runs_dir / "warm_store" / "preprocess_config.json").read_text())
    spacing = float(saved["config"]["spacing_mm"])
    suffix = "." + plain_format
    _run_plain(warm_paths, runs_dir / "warm_plain", 1, spacing, suffix)
    steady = f"; steady state from the {n}- minus the {small}-image runs" if small else ""
    print(f"archive: {n} images {kinds}; stored spacing {spacing} mm; {os.cpu_count()} CPUs; "
          f"plain writes {plain_format}; rounds {rounds}{steady}", flush=True)
    results: list[dict[str, Any]] = []
    for r in range(rounds):
        for workers in workers_list:
            order = ("plain", "mammokit") if (r + workers) % 2 else ("mammokit", "plain")
            for what in order:
                for images, (sub_index, sub_paths) in sizes.items():
                    out = runs_dir / f"{what}_w{workers}_r{r}_n{images}"
                    res = (_run_mammokit(sub_index, out, workers) if what == "mammokit"
                           else _run_plain(sub_paths, out, workers, spacing, suffix))
                    row = _archive_row(res, images, round=r, workers=workers, pipeline=what)
                    results.append(row)
                    print(f"  round {r} N={workers} {what:<8} {images:3d} images: {row['images_per_hour']:6d} "
                          f"images/h ({row['images_per_hour_loop']} in the run loop) wall {row['wall_s']:5.1f} s, "
                          f"CPU {row['cpu_s_per_image']:.3f} s/image, stored {row['stored_mpix']:.2f} MPix/image, "
                          f"load {row['load1'][0]:.2f}→{row['load1'][1]:.2f}", flush=True)
    summary = [_archive_summary(results, n, small, workers) for workers in workers_list]
    for line in summary:
        m, p = line["mammokit"], line["plain"]
        print(f"  N={line['workers']}, {n} images: mammokit {m['images_per_hour']:.0f} vs plain "
              f"{p['images_per_hour']:.0f} images/h, ratio {line['ratio_images_per_hour']:.2f} (goal ≥ 1; run loop "
              f"{line['ratio_images_per_hour_loop']:.2f}); CPU {m['cpu_s_per_image']:.3f} vs "
              f"{p['cpu_s_per_image']:.3f} s/image, ratio {line['ratio_cpu_s_per_image']:.2f}")
        if small:
            print(f"    steady state: mammokit {m['steady_images_per_hour']:.0f} vs plain "
                  f"{p['steady_images_per_hour']:.0f} images/h, ratio {line['ratio_steady_images_per_hour']:.2f}; CPU "
                  f"{m['steady_cpu_s_per_image']:.3f} vs {p['steady_cpu_s_per_image']:.3f} s/image, ratio "
                  f"{line['ratio_steady_cpu_s_per_image']:.2f}; start-up CPU {m['fixed_cpu_s']:.2f} vs "
                  f"{p['fixed_cpu_s']:.2f} s per run")
    split = _split_one_core(table, runs_dir / "split_store", spacing)
    print("  one image per kind, one core, CPU s (median of 3): read_dicom / pydicom pixel_array / process_image / "
          "process_image − read_dicom")
    for s in split:
        print(f"    {s['kind']:<22} {s['read_dicom']:6.3f} {s['pydicom']:6.3f} {s['process_image']:6.3f} "
              f"{s['after_decode']:6.3f}")
    print(json.dumps({"archive": {"images": n, "kinds": kinds, "spacing_mm": spacing, "plain_format": plain_format,
                                  "cpus": os.cpu_count(), "steady_subset": small}, "runs": results,
                      "summary": summary, "split": split}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="index,stages,throughput,rss,quality,archive")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--exams", type=int, default=4, help="full-size exams for throughput and rss")
    parser.add_argument("--quality-exams", type=int, default=12)
    parser.add_argument("--archive-images", type=int, default=24, help="images in the mixed J2K / JPEG-LL archive")
    parser.add_argument("--archive-workers", default="1,2", help="worker counts to compare, comma-separated")
    parser.add_argument("--archive-rounds", type=int, default=1, help="repeat every archive run, order alternated")
    parser.add_argument("--plain-format", choices=("png", "tiff"), default="png",
                        help="what the plain pipeline writes (cv2.imwrite, 16-bit)")
    parser.add_argument("--work", type=Path, default=None, help="reuse generated archives from this folder")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="mammokit_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    sections = {s.strip() for s in args.sections.split(",")}
    unknown = sections - {"index", "stages", "throughput", "rss", "quality", "archive"}
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
    if "archive" in sections:
        bench_archive(work, args.archive_images, [int(w) for w in args.archive_workers.split(",")],
                      args.archive_rounds, args.plain_format)


if __name__ == "__main__":
    main()
