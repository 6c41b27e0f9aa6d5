"""Time `mammokit predict` on one full-size four-view exam, split into stages (goal on 2 cores: <= 5 s, demo model).

The exam: the synth Hologic-like profile at size_scale 1.0 (3328x2560, 12-bit, 0.07 mm), each view re-encoded as
JPEG 2000 lossless (pylibjpeg-openjpeg through `Dataset.compress`), headers kept, so breast mask, crop and pectoral
steps do real work and the J2K decode is part of the time. Two released models with random weights (timing only):

- demo: `multiview_gmic` preset cpu at the demo's input (320x200 global, full_scale 2, 4 crops of 64), preprocessed
  with configs/preprocess_demo.yaml (0.3 mm);
- full: `multiview_gmic` preset full (2944x1920 global, GMIC-shaped narrow global net, ResNet-18 on 6 crops of
  256), preprocessed with configs/preprocess.yaml (0.1 mm).

`predict_studies` runs in this process (one warm-up per configuration first: it starts the fork server and the
oneDNN primitives) with `timings=`; each row is the median over `--repeats` of each stage (`predict.STAGES`), the
wall time of the call, the CPU seconds of this process and of it with its worker processes, and those every other
process of the machine used meanwhile (on a shared machine the wall time means little when that is high), with the
1-minute load average. `--quiet-below 15` waits for a quiet moment before each timed call. `decode alone` times
`read_dicom` of the four files in this process. Outputs of workers 1 and 2 are compared byte for byte. The last line
is one JSON object.

Usage: .venv/bin/python bench/predict.py [--models demo,full] [--heatmaps saliency,gradcam] [--workers 1,2]
       [--repeats 3] [--full-repeats 1] [--quiet-below PCT] [--cold] [--work DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

# Only light imports at module level: Python 3.11's fork server never preloads `__main__` (it looks for a
# `main_path` key that `get_preparation_data` does not write), so every worker process of `mammokit.isolate` runs
# this script again; a top-level `import torch` here would cost each worker seconds that `mammokit predict` (whose
# entry script imports only `mammokit.cli`) does not pay.
CONFIGS = Path(__file__).resolve().parents[1] / "src" / "mammokit" / "configs"
MODELS = {
    "demo": dict(kwargs={"preset": "cpu", "image_size": [320, 200], "full_size": [640, 400], "patch_size": 64,
                         "num_patches": 4},
                 input_size=[320, 200], full_scale=2, preprocess="preprocess_demo.yaml"),
    "full": dict(kwargs={"preset": "full"}, input_size=[2944, 1920], full_scale=0, preprocess="preprocess.yaml"),
}


def build_exam(work: Path) -> Path:
    """One four-view exam at 3328x2560 as JPEG 2000 lossless DICOM files (the synth headers kept)."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    from mammokit.synth import generate

    out = work / "exam_j2k"
    if out.exists():
        return out
    raw = work / "raw"
    if not raw.exists():
        generate(raw, exams=1, seed=0, size_scale=1.0, vendors="hologic", masks=False)
    tmp = work / "exam_j2k.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for path in sorted((raw / "dicom").rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
        target = tmp / path.relative_to(raw / "dicom")
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target, enforce_file_format=True)
    tmp.rename(out)
    return out


def release(work: Path, name: str) -> Path:
    """A released model folder with random weights and the preprocessing config it names."""
    import yaml

    from mammokit.config import config_hash
    from mammokit.models import create_model
    from mammokit.preprocess.config import PreprocessConfig
    from mammokit.release.model import save_released

    folder = work / f"model_{name}"
    if (folder / "config.json").is_file():
        return folder
    spec = MODELS[name]
    pre = PreprocessConfig.model_validate(yaml.safe_load((CONFIGS / spec["preprocess"]).read_text()))
    model = create_model("multiview_gmic", seed=0, **spec["kwargs"])
    config = {
        "model": {"name": "multiview_gmic", "kwargs": spec["kwargs"]},
        "input": {"level": "exam", "input_size": spec["input_size"], "full_scale": spec["full_scale"],
                  "normalization": "image", "view_stats": {}},
        "preprocess": {"config": pre.model_dump(), "config_hash": config_hash(pre)},
        "training": {"run": f"bench-{name}", "seed": 0, "exams": 0, "images": 0, "vendors": [],
                     "spacing_mm": pre.spacing_mm},
    }
    return save_released(folder, model, config)


def _busy_cpu() -> float:
    """Busy CPU seconds of the whole machine so far (all cores, all processes)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _own_cpu() -> float:
    """CPU seconds of this process, of its fork server and of the workers the fork server has reaped (the workers of
    `mammokit.isolate` are the fork server's children, so `RUSAGE_CHILDREN` of this process misses them)."""
    import multiprocessing.forkserver as fs

    total = time.process_time()
    pid = getattr(fs._forkserver, "_forkserver_pid", None)
    if pid:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def _outputs(folder: Path) -> dict[str, str]:
    """sha256 of every prediction.json and PNG under `folder` (summary.json holds the run's seconds: left out)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.suffix in (".json", ".png") and p.name != "summary.json"}


def wait_quiet(below: float, limit_s: float) -> float:
    """Wait (at most `limit_s`) until the machine's CPU use over one second is under `below` percent (0: no wait);
    returns the seconds waited."""
    t0 = time.perf_counter()
    while below > 0 and time.perf_counter() - t0 < limit_s and psutil.cpu_percent(interval=1.0) >= below:
        pass
    return time.perf_counter() - t0


def time_predict(model: Path, exam: Path, work: Path, *, heatmap: str, workers: int, repeats: int,
                 quiet: tuple[float, float] = (0.0, 0.0)) -> dict[str, Any]:
    """Median stage seconds, wall, CPU and load of `repeats` calls after one warm-up; and the output hashes."""
    from mammokit.predict import predict_studies

    runs = []
    for r in range(repeats + 1):
        out = Path(tempfile.mkdtemp(dir=work, prefix="out_"))
        timings: dict[str, float] = {}
        if r:
            wait_quiet(*quiet)
        load = os.getloadavg()[0]
        busy, cpu, own, t0 = _busy_cpu(), time.process_time(), _own_cpu(), time.perf_counter()
        predict_studies(model, exam, out=out, heatmap=heatmap, workers=workers, timings=timings)
        wall = time.perf_counter() - t0
        if r == 0:  # warm-up
            hashes = _outputs(out)
        else:
            own = _own_cpu() - own
            runs.append({**timings, "other": wall - sum(timings.values()), "wall": wall,
                         "cpu_main": time.process_time() - cpu, "cpu_own": own,
                         "cpu_others": _busy_cpu() - busy - own, "loadavg": load})
        shutil.rmtree(out)
    med = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
    med["wall_min"], med["wall_max"] = min(r["wall"] for r in runs), max(r["wall"] for r in runs)
    med["loadavg_max"] = max(r["loadavg"] for r in runs)
    return {"stages": med, "hashes": hashes, "repeats": repeats}


def decode_alone(exam: Path, repeats: int) -> dict[str, float]:
    """`read_dicom` of the exam's files in this process, one after another: median wall and CPU seconds (total)."""
    from mammokit.dicom import read_dicom

    paths = sorted(exam.rglob("*.dcm"))
    walls, cpus = [], []
    for _ in range(repeats):
        load = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        for p in paths:
            read_dicom(p)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {"views": len(paths), "wall": statistics.median(walls), "cpu": statistics.median(cpus), "load": load}


COLD = """
import json, sys, time
t0 = time.perf_counter()
from mammokit.predict import predict_studies
imported = time.perf_counter() - t0
timings = {}
t1 = time.perf_counter()
predict_studies(sys.argv[1], sys.argv[2], out=sys.argv[3], workers=int(sys.argv[4]), timings=timings)
print(json.dumps({"import": imported, **timings, "call": time.perf_counter() - t1}))
"""


def time_cold(model: Path, exam: Path, work: Path, workers: int) -> dict[str, float]:
    """A fresh process: `mammokit predict` (wall, machine CPU), then imports and the first call's stages of
    `predict_studies` in another fresh process (fork server start, worker imports, first oneDNN calls included)."""
    out = Path(tempfile.mkdtemp(dir=work, prefix="cold_"))
    load = os.getloadavg()[0]
    busy, t0 = _busy_cpu(), time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "mammokit"), "predict", str(model), str(exam), "--out",
                    str(out / "cli"), "--workers", str(workers), "--device", "cpu"], check=True, capture_output=True)
    wall = time.perf_counter() - t0
    cpu = _busy_cpu() - busy
    proc = subprocess.run([sys.executable, "-c", COLD, str(model), str(exam), str(out / "api"), str(workers)],
                          check=True, capture_output=True, text=True)
    shutil.rmtree(out)
    return {"cli_wall": wall, "cli_cpu_machine": cpu, "load": load,
            "first_call": json.loads(proc.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,full")
    parser.add_argument("--heatmaps", default="saliency,gradcam")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full-repeats", type=int, default=1, help="repeats for the full-preset model (slow on CPU)")
    parser.add_argument("--cold", action="store_true",
                        help="also time `mammokit predict` and a first call in fresh processes, per worker count")
    parser.add_argument("--quiet-below", type=float, default=0.0,
                        help="before each timed call wait until the machine's CPU use is under this percent (0: never)")
    parser.add_argument("--quiet-wait", type=float, default=120.0, help="longest wait for a quiet machine, seconds")
    parser.add_argument("--work", type=Path, default=None, help="reuse the exam and models in this folder")
    args = parser.parse_args()
    import torch

    from mammokit.predict import STAGES

    work = args.work or Path(tempfile.mkdtemp(prefix="mammokit_bench_predict_"))
    work.mkdir(parents=True, exist_ok=True)
    exam = build_exam(work)
    workers = [int(w) for w in args.workers.split(",")]
    models = [m.strip() for m in args.models.split(",")]
    if set(models) - set(MODELS):
        parser.error(f"--models: unknown {sorted(set(models) - set(MODELS))}")
    dec = decode_alone(exam, args.repeats)
    print(f"exam: 4 views 3328x2560 JPEG 2000 lossless ({sum(p.stat().st_size for p in exam.rglob('*.dcm')) / 1e6:.1f}"
          f" MB); {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    print(f"decode alone (read_dicom, {dec['views']} views serially, this process): wall {dec['wall']:.2f} s, "
          f"CPU {dec['cpu']:.2f} s (load {dec['load']:.2f})")
    names = [*STAGES, "other"]
    head = f"{'model':5s} {'heatmap':8s} {'w':>2s} " + " ".join(f"{n[:8]:>8s}" for n in names)
    print("\nstages of predict_studies:\n" + "\n".join(f"  {n:10s} {d}" for n, d in STAGES.items())
          + "\n  other      the rest of the call (grouping, warnings, summary.json)")
    print(f"median seconds per stage over the repeats; wall min-max; CPU s of this process (main), of it and its "
          f"worker processes (own), and of every other process of the machine meanwhile (oth: the noise); load "
          f"average before the first repeat / highest before any:\n{head} {'wall':>6s} {'min-max':>11s} "
          f"{'cpu main':>8s} {'cpu own':>8s} {'cpu oth':>8s} {'loadavg':>9s}")
    results: dict[str, Any] = {"decode_alone": dec, "runs": []}
    for name in models:
        model = release(work, name)
        repeats = args.full_repeats if name == "full" else args.repeats
        for heatmap in args.heatmaps.split(","):
            hashes = {}
            for w in workers:
                res = time_predict(model, exam, work, heatmap=heatmap, workers=w, repeats=repeats,
                                   quiet=(args.quiet_below, args.quiet_wait))
                s = res["stages"]
                hashes[w] = res["hashes"]
                print(f"{name:5s} {heatmap:8s} {w:2d} " + " ".join(f"{s.get(n, 0.0):8.2f}" for n in names)
                      + f" {s['wall']:6.2f} {s['wall_min']:5.2f}-{s['wall_max']:5.2f} {s['cpu_main']:8.2f} "
                      f"{s['cpu_own']:8.2f} {s['cpu_others']:8.2f} {s['loadavg']:4.2f}/{s['loadavg_max']:4.2f}",
                      flush=True)
                results["runs"].append({"model_name": name, "heatmap": heatmap, "workers": w, "repeats": repeats,
                                        "seconds": {k: round(v, 3) for k, v in s.items() if "loadavg" not in k},
                                        "loadavg": round(s["loadavg"], 2), "loadavg_max": round(s["loadavg_max"], 2)})
            same = all(h == hashes[workers[0]] for h in hashes.values())
            print(f"{name:5s} {heatmap:8s} outputs identical across workers {workers}: {same} "
                  f"({len(hashes[workers[0]])} files)")
            results.setdefault("identical", {})[f"{name}/{heatmap}"] = same
    if args.cold:
        for w in workers:
            wait_quiet(args.quiet_below, args.quiet_wait)
            cold = time_cold(release(work, models[0]), exam, work, w)
            first = ", ".join(f"{k} {v:.2f}" for k, v in cold["first_call"].items())
            print(f"cold ({models[0]}, saliency, workers {w}, load {cold['load']:.2f}): `mammokit predict` wall "
                  f"{cold['cli_wall']:.2f} s (machine CPU {cold['cli_cpu_machine']:.2f} s); fresh process: {first}")
            results.setdefault("cold", []).append({"model_name": models[0], "workers": w, **cold})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
