"""Decode speed per transfer syntax: every decoder mammokit could use, and the one `read_dicom` chose.

Builds a 3328x2560 14-bit synthetic mammogram (breast-shaped, smooth tissue with 1/f texture and quantum-like
noise, so compressors do real work), writes it in each transfer syntax with `tests/dicom_factory.py`, and times,
round-robin (median of `--repeats`, page-cached file), from file to pixel array:

- each candidate decoder of the syntax: `dcmread` + the frame + `mammokit.dicom_decode._run_fast(name, ...)`, the
  very call the auto path makes (imagecodecs codecs, pylibjpeg-openjpeg, pylibjpeg-rle, GDCM in memory), or numpy
  for native data; plus pydicom's default plugins (`dcmread(path).pixel_array`);
- nvImageCodec (``nvimgcodec``) on JPEG 2000 and JPEG Lossless SV1 where `mammokit.dicom_gpu` can run it (a CUDA
  GPU and the ``gpu`` extra; or its CPU codecs with ``MAMMOKIT_GPU_DECODE=cpu``), one file at a time as `read_dicom`
  decodes: its images/s stands beside GDCM's on the same machine;
- mammokit: `read_dicom(path)` (auto backend: float32, modality LUT, masking and checks included), whose chosen
  decoder (`MammoImage.decoder`) is printed.

Every candidate's values are checked: bit-identical to the encoded image on lossless syntaxes (a mismatch stops the
run), the largest difference from the chosen decoder's on lossy ones. Times are wall and CPU seconds; CPU is
`time.process_time` (every thread of the process: a decoder that runs threads, GDCM's OpenJPEG, pays for them all;
"threads" marks one whose main thread did under 80% of it) and is what ranks, since an archive run keeps every core
busy with one file each. ratio = the chosen decoder's CPU time / the fastest candidate's, FLAG above 1.2;
read_dicom / fastest is printed too (it adds the float32 copy, the masking and the checks). Ends with one JSON line.

Run: `.venv/bin/python bench/decode.py [--repeats 3] [--size 3328x2560]`.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from pydicom.encaps import get_frame  # noqa: E402
from pydicom.uid import (  # noqa: E402
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dicom_factory import write_test_dicom  # noqa: E402
from mammokit import dicom_gpu  # noqa: E402
from mammokit.dicom import read_dicom  # noqa: E402
from mammokit.dicom_decode import DECODERS, FrameInfo, _run_fast, library_error  # noqa: E402

# label: (syntax, bits stored, lossless)
SYNTAXES = {
    "uncompressed": (ExplicitVRLittleEndian, 14, True),
    "RLE Lossless": (RLELossless, 14, True),
    "JPEG Lossless SV1": (JPEGLosslessSV1, 14, True),
    "JPEG Lossless P14": (JPEGLossless, 14, True),
    "JPEG-LS lossless": (JPEGLSLossless, 14, True),
    "JPEG-LS near (2)": (JPEGLSNearLossless, 14, False),
    "JPEG 2000 lossless": (JPEG2000Lossless, 14, True),
    "JPEG 2000 lossy": (JPEG2000, 14, False),
    "JPEG Ext. 12-bit": (JPEGExtended12Bit, 12, False),
    "JPEG Baseline 8-bit": (JPEGBaseline8Bit, 8, False),
}
# decoders worth measuring per kind of syntax, beyond those in mammokit's table
CANDIDATES = {
    "native": ("numpy",),
    "rle": ("imagecodecs.dicomrle", "pylibjpeg-rle", "gdcm"),
    "jpeg-lossless": ("imagecodecs.jpeg8", "imagecodecs.ljpeg", "imagecodecs.jpegsof3", "gdcm"),
    "jpeg": ("imagecodecs.jpeg8", "gdcm"),
    "jpegls": ("imagecodecs.jpegls", "gdcm"),
    "jpeg2000": ("pylibjpeg-openjpeg", "imagecodecs.jpeg2k", "gdcm"),
}
FLAG_RATIO = 1.2


def synthetic_mammogram(rows: int = 3328, columns: int = 2560, seed: int = 0) -> np.ndarray:
    """A 14-bit breast-like image: half-ellipse on the left, thickness falloff, 1/f texture, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
    r = np.sqrt(((y - rows / 2) / (rows * 0.45)) ** 2 + (x / (columns * 0.8)) ** 2)
    breast = r < 1.0
    thickness = np.sqrt(np.clip(1.0 - r**2, 0, 1))
    spectrum = np.fft.rfft2(rng.standard_normal((rows, columns)).astype(np.float32))
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(columns)[None, :]
    spectrum /= np.maximum(np.hypot(fy, fx), 1.0 / max(rows, columns)) ** 1.5
    texture = np.fft.irfft2(spectrum, s=(rows, columns)).astype(np.float32)
    texture /= texture.std()
    signal = 1500 + breast * (6000 * thickness + 900 * texture * thickness)
    noisy = signal + rng.normal(0, 1, signal.shape).astype(np.float32) * np.sqrt(signal) * 2
    return np.clip(noisy, 0, 2**14 - 1).astype(np.uint16)


def median_times(candidates: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, ...]]:
    """Median (wall, process CPU, main-thread CPU) seconds per candidate, run round-robin so background load hits
    every one alike."""
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
            fn()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - thread))
    return {name: tuple(statistics.median(t[i] for t in v) for i in range(3)) for name, v in times.items()}


def _pydicom_pixels(path: Path) -> np.ndarray:
    return pydicom.dcmread(path).pixel_array


def _decode_file(path: Path, name: str) -> np.ndarray:
    """File to stored values through one named decoder, the way a minimal reader would."""
    ds = pydicom.dcmread(path)
    info = FrameInfo(str(ds.file_meta.TransferSyntaxUID), ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored,
                     bool(ds.PixelRepresentation), str(ds.PhotometricInterpretation))
    if name == "numpy":
        return np.frombuffer(ds.PixelData, f"<u{info.bits_allocated // 8}").reshape(info.rows, info.columns)
    arr = np.asarray(_run_fast(name, get_frame(ds.PixelData, 0, number_of_frames=1), info))
    return arr.reshape(info.rows, info.columns)


def _candidates(syntax: str, lossless: bool) -> tuple[str, ...]:
    spec = DECODERS[syntax]
    kind = "jpeg-lossless" if spec.kind == "jpeg" and lossless else spec.kind
    gpu = (dicom_gpu.LABEL,) if syntax in dicom_gpu.GPU_SYNTAXES and dicom_gpu.gpu_decoder() is not None else ()
    return tuple(dict.fromkeys((*gpu, *spec.fast, *CANDIDATES[kind])))


def measure(label: str, syntax: str, bits: int, lossless: bool, image: np.ndarray, folder: Path,
            repeats: int) -> dict[str, object]:
    """Write `image` in `syntax`, check every candidate's values, time them all; one result row."""
    stored = image >> (14 - bits)
    path = write_test_dicom(folder / f"{syntax}.dcm", stored.astype(np.uint8 if bits <= 8 else np.uint16),
                            transfer_syntax=syntax, bits_stored=bits, quality=95, near=2)
    read = read_dicom(path)
    chosen = read.decoder
    reference = stored if lossless else read.pixels
    if lossless and not np.array_equal(read.pixels, stored):
        raise SystemExit(f"{label}: read_dicom differs from the encoded values")
    row: dict[str, object] = {"syntax": label, "MB": round(path.stat().st_size / 1e6, 2), "chosen": chosen,
                              "times": {}, "notes": {}}
    runs: dict[str, Callable[[], object]] = {"read_dicom": lambda: read_dicom(path).pixels}
    for name in (*_candidates(syntax, lossless), "pydicom"):
        fn = partial(_pydicom_pixels, path) if name == "pydicom" else partial(_decode_file, path, name)
        try:
            out = np.asarray(fn())  # also the warm-up
        except BaseException as err:  # a backend that cannot decode this syntax (a pyo3 panic too)
            if not library_error(err):
                raise
            row["notes"][name] = f"fails: {type(err).__name__}: {str(err)[:60]}"
            continue
        diff = int(np.abs(out.astype(np.int64) - reference.astype(np.int64)).max())
        if lossless and diff:
            raise SystemExit(f"{label}: {name} differs from the encoded values by up to {diff}")
        if diff:
            row["notes"][name] = f"max |diff| {diff} from {chosen}"
        runs[name] = fn
    row["times"] = {k: tuple(round(t, 4) for t in v) for k, v in median_times(runs, repeats).items()}
    decoders = {k: v for k, v in row["times"].items() if k != "read_dicom"}
    fastest = min(decoders, key=lambda k: decoders[k][1])
    row["fastest"] = fastest
    row["ratio"] = round(decoders[chosen][1] / decoders[fastest][1], 3)  # CPU
    row["ratio_wall"] = round(decoders[chosen][0] / min(v[0] for v in decoders.values()), 3)
    row["read_dicom_ratio"] = round(row["times"]["read_dicom"][1] / decoders[fastest][1], 3)
    row["flag"] = row["ratio"] > FLAG_RATIO
    return row


def _print_row(row: dict[str, object]) -> None:
    print(f"\n{row['syntax']} ({row['MB']} MB): read_dicom chose {row['chosen']}, fastest is {row['fastest']}: "
          f"ratio {row['ratio']:.2f} CPU ({row['ratio_wall']:.2f} wall); read_dicom / fastest "
          f"{row['read_dicom_ratio']:.2f}" + ("  FLAG" if row["flag"] else ""))
    for name, (wall, cpu, thread) in sorted(row["times"].items(), key=lambda kv: kv[1][1]):
        mark = "*" if name == row["chosen"] else " "
        notes = [row["notes"].get(name, ""), "threads" if thread < 0.8 * cpu else ""]
        print(f"  {mark} {name:<22} {wall:7.3f} s wall {cpu:7.3f} s CPU {1 / wall:7.1f} images/s  "
              f"{' '.join(n for n in notes if n)}")
    for name, note in row["notes"].items():
        if name not in row["times"]:
            print(f"    {name:<22} {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="3328x2560", help="ROWSxCOLUMNS of the synthetic image")
    parser.add_argument("--only", nargs="*", help="syntax labels to run (default: all)")
    args = parser.parse_args()
    rows, columns = (int(v) for v in args.size.split("x"))
    print(f"{rows}x{columns}, median of {args.repeats}, file to pixels; * = read_dicom's choice; ratio = its CPU time "
          f"/ the fastest decoder's (FLAG above {FLAG_RATIO}); images/s = 1 / wall, one file at a time", flush=True)
    print(dicom_gpu.describe(), flush=True)
    image = synthetic_mammogram(rows, columns)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for label, (syntax, bits, lossless) in SYNTAXES.items():
            if args.only and label not in args.only:
                continue
            results.append(measure(label, syntax, bits, lossless, image, Path(folder), args.repeats))
            _print_row(results[-1])
            sys.stdout.flush()
    flagged = [r["syntax"] for r in results if r["flag"]]
    print(f"\nflagged (ratio > {FLAG_RATIO}): {', '.join(flagged) or 'none'}")
    print(json.dumps({"size": [rows, columns], "repeats": args.repeats, "rows": results}))


if __name__ == "__main__":
    main()
