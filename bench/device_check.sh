#!/usr/bin/env bash
# GPU decode check, in one device call (about 4 minutes on an H200 machine; give it timeout_s=540):
#   1. tests/test_dicom_gpu.py: nvImageCodec chosen automatically, values equal to the CPU decoders (3328x2560 too);
#      tests/test_dicom_decode.py and tests/test_fuzz_reader.py with the GPU in front (fuzzed J2K / SV1 frames reach
#      nvImageCodec after mammokit's stream checks: refused or read, never a crash);
#   2. bench/decode.py on JPEG 2000 and JPEG Lossless SV1: nvImageCodec's images/s beside GDCM's on the same machine.
# Here, first: `echo /.whl/ >> .git/info/exclude; python3 bench/device_wheels.py` (the DICOM stack and nvImageCodec
# as cp312 wheels, ~50 MiB). Then the device tool's run with carry [".whl"], command `bash bench/device_check.sh`.
# Logs land in $OUT (pytest.txt, decode.txt).
set -uo pipefail
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "from mammokit import dicom_gpu; print(dicom_gpu.describe())"
status=0
timeout 300 python3 -m pytest -q -p no:cacheprovider --noconftest -x \
    tests/test_dicom_gpu.py tests/test_dicom_decode.py tests/test_fuzz_reader.py 2>&1 | tee "$OUT/pytest.txt" || status=1
timeout 200 python3 bench/decode.py --repeats 5 --only "JPEG 2000 lossless" "JPEG 2000 lossy" "JPEG Lossless SV1" \
    2>&1 | tee "$OUT/decode.txt" || status=1
exit $status
