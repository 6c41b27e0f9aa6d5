"""Decode speed per transfer syntax: mammokit's `read_dicom` against the open decoders it could use.

Builds a 3328x2560 14-bit synthetic mammogram (breast-shaped, smooth tissue with 1/f texture and
quantum-like noise, so compressors do real work), writes it in each transfer syntax with
`tests/dicom_factory.py`, and prints the median time (one thread, page-cached file) from file to
pixel array for:

- mammokit: `read_dicom(path)` (auto backend: float32, modality LUT, masking and checks included)
- mammokit-pydicom: `read_dicom(path, backend="pydicom")`
- pydicom: `dcmread(path).pixel_array` with pydicom's default plugins
- imagecodecs: `dcmread` + the frame + `imagecodecs.<codec>_decode`
- gdcm: `gdcm.ImageReader` + `GetBuffer` (stored values)
- dicomsdl: `dicomsdl.open(path).pixelData()` (float32, rescale applied), when installed

ratio = mammokit / fastest of the other columns. Run: `.venv/bin/python bench/decode.py [--repeats 5]`.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import imagecodecs  # noqa: E402
import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from pydicom.encaps import get_frame  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dicom_factory import write_test_dicom  # noqa: E402
from mammokit.dicom import read_dicom  # noqa: E402

try:
    import gdcm
except ImportError:
    gdcm = None
try:
    import dicomsdl
except ImportError:
    dicomsdl = None

SYNTAXES = {
    "uncompressed": ExplicitVRLittleEndian,
    "RLE Lossless": RLELossless,
    "JPEG Lossless SV1": JPEGLosslessSV1,
    "JPEG Lossless P14": JPEGLossless,
    "JPEG-LS lossless": JPEGLSLossless,
    "JPEG 2000 lossless": JPEG2000Lossless,
    "JPEG Ext. 12-bit": JPEGExtended12Bit,
}
IMAGECODECS = {
    RLELossless: lambda f: np.frombuffer(imagecodecs.dicomrle_decode(f, "<u2"), "<u2"),
    JPEGLosslessSV1: imagecodecs.ljpeg_decode,
    JPEGLossless: imagecodecs.ljpeg_decode,
    JPEGLSLossless: imagecodecs.jpegls_decode,
    JPEG2000Lossless: lambda f: imagecodecs.jpeg2k_decode(f, numthreads=1),
    JPEGExtended12Bit: imagecodecs.jpeg8_decode,
}


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


def median_times(candidates: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per candidate, run round-robin so background load hits every column alike."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _imagecodecs(path: Path, syntax: str) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return IMAGECODECS[syntax](get_frame(ds.PixelData, 0, number_of_frames=1))


def _gdcm(path: Path) -> np.ndarray:
    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        raise RuntimeError("gdcm cannot read")
    image = reader.GetImage()
    return np.frombuffer(image.GetBuffer().encode("utf-8", "surrogateescape"), "<u2")


def run(repeats: int, folder: Path) -> list[dict[str, object]]:
    image = synthetic_mammogram()
    rows = []
    for label, syntax in SYNTAXES.items():
        stored = image >> 2 if syntax == JPEGExtended12Bit else image
        bits = 12 if syntax == JPEGExtended12Bit else 14
        path = write_test_dicom(folder / f"{syntax}.dcm", stored, transfer_syntax=syntax, bits_stored=bits,
                                quality=95)
        expected = read_dicom(path).pixels
        candidates: dict[str, Callable[[], object]] = {
            "mammokit": lambda p=path: read_dicom(p).pixels,
            "mammokit-pydicom": lambda p=path: read_dicom(p, backend="pydicom").pixels,
            "pydicom": lambda p=path: pydicom.dcmread(p).pixel_array,
        }
        if syntax in IMAGECODECS:
            candidates["imagecodecs"] = lambda p=path, s=syntax: _imagecodecs(p, s)
        if gdcm is not None and syntax != JPEGExtended12Bit:  # file-level reader refuses 12-bit lossy here
            candidates["gdcm"] = lambda p=path: _gdcm(p)
        if dicomsdl is not None:
            candidates["dicomsdl"] = lambda p=path: dicomsdl.open(str(p)).pixelData()
        row: dict[str, object] = {"syntax": label, "MB": path.stat().st_size / 1e6}
        working: dict[str, Callable[[], object]] = {}
        for name, fn in candidates.items():
            try:
                out = np.asarray(fn()).reshape(expected.shape)  # also the warm-up
            except Exception as err:  # a backend that cannot decode this syntax
                row[name], row[f"{name}_note"] = None, type(err).__name__
                continue
            if not name.startswith("mammokit") and not np.array_equal(out, expected):
                row[f"{name}_note"] = "differs"
            working[name] = fn
        row.update(median_times(working, repeats))
        others = [v for k, v in row.items() if k in ("pydicom", "imagecodecs", "gdcm", "dicomsdl") and v]
        row["ratio"] = row["mammokit"] / min(others) if others else None
        rows.append(row)
        print(_format_row(row), flush=True)
    return rows


COLUMNS = ("mammokit", "mammokit-pydicom", "pydicom", "imagecodecs", "gdcm", "dicomsdl")


def _format_row(row: dict[str, object]) -> str:
    cells = [f"{row['syntax']:<20}", f"{row['MB']:6.1f}"]
    for name in COLUMNS:
        value = row.get(name)
        note = "*" if row.get(f"{name}_note") == "differs" else ""
        cells.append(f"{value:8.3f}{note:1}" if isinstance(value, float) else f"{'—':>8} ")
    ratio = row["ratio"]
    cells.append(f"{ratio:5.2f}" if isinstance(ratio, float) else "  —")
    return " | ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"3328x2560 14-bit, median of {args.repeats}, seconds; * = output differs from mammokit's stored values "
          "(dicomsdl: float32 rescaled; fine when equal in value)")
    print(" | ".join([f"{'syntax':<20}", f"{'MB':>6}", *[f"{c:>9}" for c in COLUMNS], "ratio"]))
    with tempfile.TemporaryDirectory() as folder:
        run(args.repeats, Path(folder))


if __name__ == "__main__":
    main()
