"""Time `pacs listen` behind a real Orthanc, end to end (receive -> results stored), on the demo model: studies per
minute, per-study latency, and the share of each study's time in transfer, decode, preprocessing, model and DICOM
encoding.

Setup (what `tests/test_pacs_dimse.py` does): `--studies` four-view exams from `mammokit.synth.generate`
(`--size-scale`, vendors hologic,siemens: explicit VR little endian and JPEG 2000 lossless alternate); the demo
released model with random weights (`release(work, "demo")` of `bench/predict.py`, imported from `bench/`: input
320x200, configs/preprocess_demo.yaml); a real Orthanc (`OrthancServer` of `tests/orthanc_server.py`, imported with
the repository's `tests/` folder put on `sys.path`; Debian `orthanc` + `orthanc-dicomweb` required) whose Lua
`OnStoredInstance` forwards every MG instance to a `Listener` running in this process (`--workers`, `--quiet-s`,
`--heatmap`), whose destination is Orthanc's own DIMSE port. Unless `--cold`, one `process_study` call on the first
study before the clock starts (outside the listener) imports the model stack and starts the fork server, as in a
listener that has run for a while. Then every study is uploaded through Orthanc's REST API in one go (file after
file, studies in order) and the bench waits (at most `--timeout` s) until each study is `done` in
`listener.status()` (done means every result file was stored by Orthanc), and checks each study's SR in Orthanc.

Times per study come from the listener's log records (caught by a handler on "mammokit.pacs.dimse"): each image
received, processing begun, done; stage seconds from the study's state (`seconds`: the stages of
`mammokit.predict.STAGES`, "encode" = the SR/SEG/SC objects built and written, "send" = the C-STORE back).
Printed: studies/min (first upload -> last study done), median latency (first image received -> done) and where the
summed work went: transfer (first -> last image received, plus send), decode and preprocessing (the "preprocess"
stage holds both: decode is measured apart afterwards, `read_dicom` of the very files the listener spooled, serially
on one core in this process, and the remainder is preprocessing), model (model + heatmap + uncertainty), DICOM
encoding (encode), other (load, scan, inputs, write). Time a study spends queued behind others (one study at a time)
is latency but not work: shown apart. CPU seconds: this process (the listener's threads), its mammokit worker
processes (the fork server and its children), Orthanc; the machine's other busy CPU meanwhile (the noise), and the
1-minute load average before and after. The last line is one JSON object.

Usage: .venv/bin/python bench/pacs.py [--studies 6] [--size-scale 0.5] [--vendors hologic,siemens] [--workers 1]
       [--quiet-s 2] [--heatmap saliency] [--timeout 600] [--cold] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Only light imports at module level: every worker process of `mammokit.isolate` runs this script again as
# `__mp_main__` (see bench/predict.py).
ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT / "bench", ROOT / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

AET = "MAMMOKIT"
TRANSFER, MODEL, OTHER = ("send",), ("model", "heatmap", "uncertainty"), ("load", "scan", "inputs", "write")


class Events(logging.Handler):
    """Monotonic times of the listener's log records, per study hash: images received, processing begun, done;
    warnings and errors are printed. `logging.Handler.handle` holds the handler's own lock around `emit`."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.received: dict[str, list[float]] = {}
        self.begun: dict[str, float] = {}
        self.done: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        t = time.monotonic()
        if record.levelno >= logging.WARNING:
            print(f"  [{record.levelname.lower()}] {record.name}: {record.getMessage()}", file=sys.stderr, flush=True)
        args = record.args if isinstance(record.args, tuple) else ()
        if not str(record.msg).startswith("study %s: ") or not args:
            return
        study, rest = str(args[0]), str(record.msg)[len("study %s: "):]
        if rest.startswith("%s %s (%s)") and len(args) > 1 and args[1] == "image":
            self.received.setdefault(study, []).append(t)
        elif rest.startswith("complete"):
            self.begun.setdefault(study, t)
        elif rest.startswith("done"):
            self.done.setdefault(study, t)


def generate_studies(work: Path, studies: int, size_scale: float, vendors: str) -> list[Path]:
    """The study folders of a synth archive (made once per parameter set under `work`)."""
    from mammokit.synth import generate

    root = work / f"synth_n{studies}_s{size_scale:g}_{vendors.replace(',', '-')}"
    if not (root / "synth.json").is_file():
        shutil.rmtree(root, ignore_errors=True)
        generate(root, exams=studies, seed=16, size_scale=size_scale, vendors=vendors.split(","), masks=False)
    return sorted(p for p in (root / "dicom").glob("*/*") if p.is_dir())


def study_of(folder: Path) -> tuple[str, str]:
    """(StudyInstanceUID, its salted hash as the listener names it) of a study folder."""
    import pydicom

    from mammokit.ids import hash_id, resolve_salt

    uid = str(pydicom.dcmread(next(folder.rglob("*.dcm")), stop_before_pixels=True).StudyInstanceUID)
    return uid, str(hash_id(uid, resolve_salt()))


def orthanc_modalities(server: Any, study_uid: str) -> dict[str, int]:
    """Instances per modality that Orthanc holds for one study."""
    import requests

    response = requests.post(f"{server.url}/tools/lookup", data=study_uid, auth=server.auth, timeout=30)
    response.raise_for_status()
    out: dict[str, int] = {}
    for hit in response.json():
        if hit["Type"] == "Study":
            for series in server.get(f"/studies/{hit['ID']}/series"):
                modality = series["MainDicomTags"].get("Modality", "")
                out[modality] = out.get(modality, 0) + len(series["Instances"])
    return out


def process_cpu(pid: int | None) -> float:
    """CPU seconds of a process and its reaped children (0 when it is gone or None)."""
    import psutil

    if not pid:
        return 0.0
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system + t.children_user + t.children_system


def forkserver_pid() -> int | None:
    import multiprocessing.forkserver as fs

    return getattr(fs._forkserver, "_forkserver_pid", None)


def decode_one_core(files: list[Path]) -> list[tuple[str, float, float]]:
    """(transfer syntax, wall s, CPU s) of `read_dicom` on each of `files`, one after another, this thread pinned to
    one CPU."""
    import pydicom

    from mammokit.dicom import read_dicom

    syntaxes = [pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID.name for p in files]
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})  # this thread (and the threads a decoder starts from it)
    out = []
    try:
        for path, syntax in zip(files, syntaxes, strict=True):
            t0, c0 = time.perf_counter(), time.process_time()
            read_dicom(path)
            out.append((str(syntax), time.perf_counter() - t0, time.process_time() - c0))
    finally:
        os.sched_setaffinity(0, before)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=6)
    parser.add_argument("--size-scale", type=float, default=0.5)
    parser.add_argument("--vendors", default="hologic,siemens")
    parser.add_argument("--workers", type=int, default=1, help="the listener's `workers` (predict_studies')")
    parser.add_argument("--quiet-s", type=float, default=2.0, help="the listener's quiet time")
    parser.add_argument("--heatmap", default="saliency", choices=("saliency", "gradcam"))
    parser.add_argument("--timeout", type=float, default=600.0, help="longest wait for every study to be done, s")
    parser.add_argument("--cold", action="store_true",
                        help="no warm-up: the first study pays the model stack's imports and the fork server's start")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the studies and the model in this folder (else a temporary folder, removed)")
    args = parser.parse_args()

    import psutil
    import pydicom

    from mammokit.pacs.dimse import Listener
    from orthanc_server import ROUTE_LUA, OrthancServer, free_port  # tests/orthanc_server.py
    from predict import _busy_cpu, release  # bench/predict.py

    work = args.work or Path(tempfile.mkdtemp(prefix="mammokit_bench_pacs_"))
    work.mkdir(parents=True, exist_ok=True)
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    t_setup = time.perf_counter()
    folders = generate_studies(work, args.studies, args.size_scale, args.vendors)
    model = release(work, "demo")
    files = [sorted(f.rglob("*.dcm")) for f in folders]
    ids = [study_of(f) for f in folders]
    syntaxes = sorted({str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID.name)
                       for fs in files for p in fs})
    size_mb = sum(p.stat().st_size for fs in files for p in fs) / 1e6
    print(f"{len(folders)} studies, {sum(map(len, files))} images ({size_mb:.0f} MB; {', '.join(syntaxes)}; size_scale "
          f"{args.size_scale:g}, vendors {args.vendors}); demo model; listener workers {args.workers}, quiet_s "
          f"{args.quiet_s:g} (a study with its four screening views in and no association still delivering to it is "
          f"complete at once, without waiting for quiet time), heatmap {args.heatmap}; {os.cpu_count()} CPUs; setup "
          f"{time.perf_counter() - t_setup:.1f} s", flush=True)
    if not args.cold:
        from mammokit.pacs.node import process_study

        t0 = time.perf_counter()
        process_study(model, folders[0], run_dir / "warmup", heatmap=args.heatmap, workers=args.workers)
        print(f"warm-up (process_study on study 1, outside the listener): {time.perf_counter() - t0:.1f} s",
              flush=True)

    events = Events()
    logger = logging.getLogger("mammokit.pacs.dimse")
    logger.setLevel(logging.INFO)
    logger.addHandler(events)
    port = free_port()
    server = OrthancServer(run_dir / "orthanc", modalities={"mammokit": (AET, "127.0.0.1", port)}, lua=ROUTE_LUA)
    server.start()
    listener = Listener(AET, port, model, run_dir / "spool", quiet_s=args.quiet_s, heatmap=args.heatmap,
                        workers=args.workers, destination=(server.aet, "127.0.0.1", server.dicom_port))
    listener.start()
    final = ("done", "failed", "not-mammography")
    states: dict[str, dict[str, Any]] = {}
    try:
        load_before = os.getloadavg()
        orthanc_cpu, fs_pid = process_cpu(server.process.pid), forkserver_pid()
        fs_cpu, main_cpu, busy = process_cpu(fs_pid), time.process_time(), _busy_cpu()
        t_start = time.monotonic()
        server.upload([p for fs in files for p in fs])
        t_uploaded = time.monotonic()
        deadline = t_start + args.timeout
        while time.monotonic() < deadline:
            states = listener.status()
            if all(states.get(h, {}).get("status") in final for _, h in ids):
                break
            time.sleep(0.1)
        t_end = time.monotonic()
        main_cpu = time.process_time() - main_cpu
        if forkserver_pid() != fs_pid:  # started during the run (--cold)
            fs_pid, fs_cpu = forkserver_pid(), 0.0
        fs_cpu = process_cpu(fs_pid) - fs_cpu
        orthanc_cpu = process_cpu(server.process.pid) - orthanc_cpu
        busy = _busy_cpu() - busy
        load_after = os.getloadavg()
        in_orthanc = [orthanc_modalities(server, uid) for uid, _ in ids]
    finally:
        listener.stop(timeout_s=60)
        server.stop()
        logger.removeHandler(events)

    statuses = [states.get(h, {}).get("status", "missing") for _, h in ids]
    done = [h for (_, h), s in zip(ids, statuses, strict=True) if s == "done"]
    print(f"upload (REST, {sum(map(len, files))} files): {t_uploaded - t_start:.1f} s; studies done "
          f"{len(done)}/{len(ids)} ({', '.join(sorted(set(statuses)))}); SR in Orthanc for "
          f"{sum(m.get('SR', 0) >= 1 for m in in_orthanc)}/{len(ids)} (instances per study in Orthanc: "
          f"{', '.join(f'{k} {v}' for k, v in sorted(in_orthanc[0].items())) if in_orthanc else 'none'})", flush=True)
    if not done:
        print(json.dumps({"studies": len(ids), "done": 0, "statuses": statuses}))
        sys.exit(1)

    last_done = max(events.done.get(h, t_end) for h in done)
    per_study: list[dict[str, Any]] = []
    by_syntax: dict[str, list[float]] = {}
    for _, h in ids:
        if h not in done:
            continue
        state, got = states[h], sorted(events.received.get(h, []))
        spooled = sorted((run_dir / "spool" / h / "images").glob("*.dcm"))
        decoded = decode_one_core(spooled)
        for syntax, wall_s, _ in decoded:
            by_syntax.setdefault(syntax, []).append(wall_s)
        dec_wall, dec_cpu = sum(d[1] for d in decoded), sum(d[2] for d in decoded)
        sec = state.get("seconds", {})
        first, last = (got[0], got[-1]) if got else (t_start, t_start)
        row = {"received": len(got), "latency": events.done.get(h, t_end) - first, "receive": last - first,
               "queued": events.begun.get(h, last) - last, "decode": min(dec_wall, sec.get("preprocess", 0.0)),
               "decode_wall": dec_wall, "decode_cpu": dec_cpu, **{k: float(v) for k, v in sec.items()}}
        row["preprocessing"] = sec.get("preprocess", 0.0) - row["decode"]
        per_study.append(row)

    def total(*keys: str) -> float:
        return sum(r.get(k, 0.0) for r in per_study for k in keys)

    shares = {"transfer": total("receive", *TRANSFER), "decode": total("decode"),
              "preprocessing": total("preprocessing"), "model": total(*MODEL), "dicom encoding": total("encode"),
              "other": total(*OTHER)}
    work_s = sum(shares.values())
    latency = total("latency")
    waited = latency - work_s
    wall = last_done - t_start
    per_min = 60.0 * len(done) / wall
    print(f"\nend to end (first upload -> last study done): {wall:.1f} s for {len(done)} studies = {per_min:.2f} "
          f"studies/min")
    lat = [r["latency"] for r in per_study]
    print(f"latency per study (first image received -> done): median {statistics.median(lat):.1f} s, min "
          f"{min(lat):.1f}, max {max(lat):.1f}")
    print(f"\nwhere the work went, summed over the {len(done)} studies ({work_s:.1f} s):")
    notes = {"transfer": f"first -> last image received {total('receive'):.1f} s (REST upload into Orthanc + its Lua "
                         f"C-STORE to the listener) + C-STORE of the results {total('send'):.1f} s",
             "decode": f"read_dicom of the spooled files, one core, serially: wall {total('decode_wall'):.2f} s, CPU "
                       f"{total('decode_cpu'):.2f} s; per image " + ", ".join(
                           f"{k} {1000 * statistics.median(v):.0f} ms" for k, v in sorted(by_syntax.items())),
             "preprocessing": f"'preprocess' stage {total('preprocess'):.2f} s minus decode",
             "model": " + ".join(f"{k} {total(k):.2f}" for k in MODEL),
             "dicom encoding": "SR, SEG and SC objects built and written",
             "other": " + ".join(f"{k} {total(k):.2f}" for k in OTHER)}
    for name, seconds in shares.items():
        print(f"  {name:15s} {seconds:7.2f} s {100 * seconds / work_s:5.1f} %   ({notes[name]})")
    print(f"  not work: {waited:.1f} s of the summed latency {latency:.1f} s ({100 * waited / latency:.0f} %) went to "
          f"waiting (queued behind other studies {total('queued'):.1f} s: one study is processed at a time; the rest "
          f"is bookkeeping between stages)")
    own = main_cpu + fs_cpu
    print(f"\nCPU s during the run: this process {main_cpu:.1f} (listener threads, uploads), mammokit worker "
          f"processes {fs_cpu:.1f}, together {own:.1f} ({own / len(done):.1f} per study); Orthanc {orthanc_cpu:.1f}; "
          f"every other process of the machine {max(0.0, busy - own - orthanc_cpu):.1f} (noise); wall {wall:.1f} s "
          f"on {os.cpu_count()} CPUs")
    print(f"load average (1, 5, 15 min) before {', '.join(f'{x:.2f}' for x in load_before)}; after "
          f"{', '.join(f'{x:.2f}' for x in load_after)}")
    result = {
        "studies": len(ids), "done": len(done), "images": sum(map(len, files)), "size_scale": args.size_scale,
        "vendors": args.vendors, "workers": args.workers, "quiet_s": args.quiet_s, "heatmap": args.heatmap,
        "warm": not args.cold, "wall_s": round(wall, 2), "upload_s": round(t_uploaded - t_start, 2),
        "studies_per_min": round(per_min, 3), "latency_median_s": round(statistics.median(lat), 2),
        "latency_s": [round(x, 2) for x in lat], "work_s": round(work_s, 2), "waiting_s": round(waited, 2),
        "shares": {k: round(v / work_s, 4) for k, v in shares.items()},
        "seconds": {k: round(v, 3) for k, v in shares.items()},
        "stages": {k: round(total(k), 3) for k in (*OTHER[:3], "preprocess", *MODEL, "write", "encode", "send")},
        "decode_ms_per_image": {k: round(1000 * statistics.median(v), 1) for k, v in sorted(by_syntax.items())},
        "cpu_s": {"main": round(main_cpu, 2), "workers": round(fs_cpu, 2), "orthanc": round(orthanc_cpu, 2),
                  "others": round(max(0.0, busy - own - orthanc_cpu), 2)},
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after],
        "sr_in_orthanc": sum(m.get("SR", 0) >= 1 for m in in_orthanc), "psutil_cpus": psutil.cpu_count(),
    }
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
