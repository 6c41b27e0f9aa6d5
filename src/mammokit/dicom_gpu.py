"""GPU decoding of JPEG 2000 and lossless JPEG frames through NVIDIA nvImageCodec, for `mammokit.dicom_decode`.

`read_dicom`'s "auto" backend tries nvImageCodec first on the syntaxes in `GPU_SYNTAXES` when this process can use
it (`gpu_decoder`): the ``nvidia-nvimgcodec-cu13`` package is installed (``pip install mammokit[gpu]`` brings it
with nvJPEG and nvJPEG2000) and the CUDA driver reports a device. Anything it does not decode (nvJPEG decodes
lossless JPEG with predictor 1 only, and some JPEG 2000 streams not at all) comes back as a `GpuDecodeError`, and the
CPU decoders of the syntax take over; after one such failure the GPU is not tried again for that syntax in this
process, so an archive the GPU cannot read costs one failed attempt per worker, not one per file.

What comes back is checked like every decoder's: Rows x Columns, integers, and no value above the stream's own bit
depth (a decoder that scaled 14-bit samples to 16 bits would fail here rather than pass silently).

``MAMMOKIT_GPU_DECODE``: ``auto`` (default) uses the GPU when there is one; ``off`` never; ``cpu`` runs
nvImageCodec on its CPU codecs (OpenCV's OpenJPEG), which checks this module's handling end to end on a machine
without a GPU (unsigned JPEG 2000 only: the CPU codecs return nothing for signed or lossless 16-bit JPEG).
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import threading
from typing import Any

import numpy as np
from pydicom import uid as _uid

log = logging.getLogger(__name__)

LABEL = "nvimgcodec"
ENV_GPU_DECODE = "MAMMOKIT_GPU_DECODE"
MODES = ("auto", "off", "cpu")
# nvJPEG2000 decodes JPEG 2000 (lossless and lossy); nvJPEG's lossless backend decodes process 14 with predictor 1,
# which is what the SV1 syntax declares (a general process-14 file may use any predictor: not sent to the GPU).
GPU_SYNTAXES = frozenset({_uid.JPEG2000Lossless, _uid.JPEG2000, _uid.JPEGLosslessSV1})

_lock = threading.Lock()


class GpuDecodeError(Exception):
    """nvImageCodec did not decode a frame; `mammokit.dicom_decode` then tries the syntax's CPU decoders."""


_state: dict[str, Any] = {"pid": None, "mode": None, "decoder": None, "failed": set()}


def gpu_mode() -> str:
    """`MAMMOKIT_GPU_DECODE` ("auto", "off" or "cpu"); raises ValueError for anything else."""
    mode = (os.environ.get(ENV_GPU_DECODE) or "auto").strip().lower()
    if mode in ("0", "false", "no"):
        mode = "off"
    if mode not in MODES:
        raise ValueError(f"${ENV_GPU_DECODE}={mode!r} must be one of {MODES}")
    return mode


def cuda_device_count() -> int:
    """CUDA devices the driver reports (0 without a driver), asked through libcuda without importing torch."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def _installed() -> bool:
    """Is nvImageCodec installed? Found without importing it: its import loads every codec extension and prints
    an error for each CUDA library it misses, which a machine without a GPU should not see."""
    try:
        return importlib.util.find_spec("nvidia.nvimgcodec") is not None
    except ImportError:  # no `nvidia` namespace at all
        return False


def make_decoder(on_cpu: bool = False) -> tuple[Any, Any] | None:
    """An nvImageCodec decoder (on the current CUDA device, or on its CPU codecs) and the decode parameters that
    keep a grayscale frame's native bit depth; None when nvImageCodec is missing or cannot start."""
    try:
        from nvidia import nvimgcodec
    except ImportError:
        return None
    try:
        if on_cpu:
            decoder = nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                                         backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)])
        else:
            decoder = nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CURRENT,
                                         backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.GPU_ONLY),
                                                   nvimgcodec.Backend(nvimgcodec.BackendKind.HYBRID_CPU_GPU)])
    except RuntimeError as err:  # no usable CUDA device or driver
        log.warning("nvImageCodec could not start (%s); decoding on the CPU", err)
        return None
    params = nvimgcodec.DecodeParams(color_spec=nvimgcodec.ColorSpec.UNCHANGED, allow_any_depth=True)
    return decoder, params


def gpu_decoder() -> tuple[Any, Any] | None:
    """This process's nvImageCodec decoder, made on first use; None when GPU decoding is off or unavailable.

    Kept per process id and `gpu_mode`: a process forked after the parent made one builds its own (or none: CUDA
    refuses a fork of an initialised parent, and the CPU decoders take over)."""
    mode = gpu_mode()
    with _lock:
        if (_state["pid"], _state["mode"]) != (os.getpid(), mode):
            made = None
            if mode == "cpu" or (mode == "auto" and _installed() and cuda_device_count() > 0):
                made = make_decoder(on_cpu=mode == "cpu")
            _state.update(pid=os.getpid(), mode=mode, decoder=made, failed=set())
        return _state["decoder"]


def wants(uid: str, signed: bool) -> bool:
    """Should the auto backend try nvImageCodec first on this syntax (and signedness) in this process?"""
    return uid in GPU_SYNTAXES and gpu_decoder() is not None and (uid, signed) not in _state["failed"]


def decode(frame: bytes, valid: tuple[int, int], uid: str, signed: bool) -> np.ndarray:
    """Decode one grayscale frame to a host array of its stored values.

    Args:
        frame: the compressed stream (JPEG 2000 codestream or JP2, or a JPEG stream).
        valid: the smallest and largest value the stream's own bit depth allows (`dicom_decode.stored_range`);
            anything outside means the decoder rescaled.
        uid, signed: its transfer syntax and pixel sign, remembered as failed (not tried again in this process)
            when decoding fails.

    Raises:
        GpuDecodeError: nvImageCodec is unavailable, returned nothing, or returned values outside `valid`.
    """
    made = gpu_decoder()
    if made is None:
        raise GpuDecodeError("nvImageCodec is not installed or found no GPU")
    decoder, params = made
    try:
        with _lock:
            image = decoder.decode(frame, params=params)
            pixels = None if image is None else np.array(image.cpu(), copy=True)
    except RuntimeError as err:
        _state["failed"].add((uid, signed))
        raise GpuDecodeError(f"nvImageCodec failed: {err}") from err
    if pixels is None:
        _state["failed"].add((uid, signed))
        raise GpuDecodeError("nvImageCodec could not decode this stream (its codecs do not support it)")
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.size and (pixels.min() < valid[0] or pixels.max() > valid[1]):
        _state["failed"].add((uid, signed))
        raise GpuDecodeError(f"nvImageCodec returned values outside the stream's range {valid} (rescaled?)")
    return pixels


def describe() -> str:
    """One line: whether this process decodes on the GPU, and why not."""
    mode = gpu_mode()
    if mode == "off":
        return f"GPU decode: off (${ENV_GPU_DECODE}=off)"
    if not _installed():
        return "GPU decode: off (nvidia-nvimgcodec-cu13 not installed: pip install 'mammokit[gpu]')"
    if mode == "cpu":
        return "GPU decode: nvImageCodec on its CPU codecs ($MAMMOKIT_GPU_DECODE=cpu)"
    devices = cuda_device_count()
    if not devices:
        return "GPU decode: off (no CUDA device)"
    return f"GPU decode: nvImageCodec first for JPEG 2000 and JPEG Lossless SV1 ({devices} CUDA device(s))"
