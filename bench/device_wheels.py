"""Fetch (here, with pip) the wheels `bench/device_check.sh` installs on the GPU machine, trimmed to fit its carry.

The GPU machine (Python 3.12, PyTorch, OpenCV, no package index) lacks mammokit's DICOM stack and nvImageCodec.
This downloads the cp312 manylinux wheels of what the decode check needs into ``.whl/`` (ignored by git: run
``echo /.whl/ >> .git/info/exclude`` once) and trims the two large ones to what the check imports: nvImageCodec's
bindings for Python 3.12 only and its JPEG and JPEG 2000 codecs (GPU, and OpenCV for the tests of its CPU path; not
TIFF), imagecodecs without the AVIF / JPEG XL / HEIF / SZ3 codecs. Each trimmed wheel's RECORD lists exactly the
files it still holds. Prints the total, which must stay under the 64 MiB a device call carries (with the ~2 MB
working tree).

Run: ``python3 bench/device_wheels.py [--dest .whl]``; then the device call carries ``.whl`` (see device_check.sh).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

WHEELS = (
    "nvidia-nvimgcodec-cu13==0.9.0.20",
    "nvidia-nvjpeg==13.3.2.43",
    "nvidia-nvjpeg2k-cu13==0.11.0.51",
    "pydicom==3.0.2",
    "pylibjpeg==2.1.0",
    "pylibjpeg-openjpeg==2.6.0",
    "pylibjpeg-rle==2.2.0",
    "python-gdcm==3.2.6",
    "imagecodecs==2026.10.10",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
# (wheel name prefix, a path part that marks a file to drop)
DROP = {
    "nvidia_nvimgcodec": ("cpython-39", "cpython-310", "cpython-311", "cpython-313", "cpython-314",  # all but 3.12
                          "libtiff_ext", "libnvtiff_ext", "/include/", "/tools/"),
    "imagecodecs": ("libaom", "libavif", "libjxl", "libheif", "libSZ3", "libdav1d", "librav1e", "libde265",
                    "libx265", "/_avif.", "/_jpegxl.", "/_heif.", "/_sz3.", "/_jpegxs.", "/_ultrahdr.", "libuhdr"),
}
CARRY_LIMIT_MB = 64


def download(dest: Path, python: str) -> None:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", python, "--implementation", "cp", *platforms, "-d", str(dest), *WHEELS],
                   check=True)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def trim(wheel: Path, drop: tuple[str, ...]) -> int:
    """Rewrite `wheel` without the files whose path contains one of `drop`; returns how many were dropped."""
    out = wheel.with_suffix(".trim")
    dropped = 0
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        kept, record = [], None
        for item in src.infolist():
            if item.filename.endswith(".dist-info/RECORD"):
                record = item.filename
            elif any(part in "/" + item.filename for part in drop):
                dropped += 1
            else:
                data = src.read(item)
                dst.writestr(item, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
                kept.append(_record_line(item.filename, data))
        if record is None:
            raise SystemExit(f"{wheel.name} has no RECORD")
        dst.writestr(record, "\n".join([*kept, f"{record},,"]) + "\n")
    out.replace(wheel)
    return dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path(".whl"))
    parser.add_argument("--python", default="3.12", help="the device's Python (3.11 checks the trimming here)")
    args = parser.parse_args()
    args.dest.mkdir(exist_ok=True)
    download(args.dest, args.python)
    tag = "cpython-" + args.python.replace(".", "")
    for wheel in sorted(args.dest.glob("*.whl")):
        for prefix, drop in DROP.items():
            if wheel.name.startswith(prefix):
                keep = tuple(d for d in drop if d != tag) + (("cpython-312",) if tag != "cpython-312" else ())
                print(f"{wheel.name}: dropped {trim(wheel, keep)} files")
    total = 0.0
    for wheel in sorted(args.dest.glob("*.whl")):
        size = wheel.stat().st_size / 2**20
        total += size
        print(f"  {size:6.1f} MiB  {wheel.name}")
    print(f"total {total:.1f} MiB (a device call carries at most {CARRY_LIMIT_MB} MiB with the working tree)")
    if total > CARRY_LIMIT_MB - 4:
        raise SystemExit("too large to carry: trim more")


if __name__ == "__main__":
    main()
