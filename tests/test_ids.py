"""Identifier hashing: one salt rule for the reader, the dataset adapters and predict; a warning for the public salt."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dicom_factory import write_test_dicom
from mammokit.datasets import public_common
from mammokit.dicom import read_dicom
from mammokit.ids import DEFAULT_ID_SALT, ENV_SALT, hash_id

PIXELS = (np.arange(32 * 24).reshape(32, 24) % 4096).astype(np.uint16)
SRC = Path(__file__).resolve().parents[1] / "src" / "mammokit"


@pytest.mark.parametrize("env", [None, "", "site-secret"])
def test_reader_adapters_and_predict_hash_the_same_id_alike(tmp_path, monkeypatch, env):
    from mammokit.predict import _image_hash

    if env is None:
        monkeypatch.delenv(ENV_SALT, raising=False)
    else:
        monkeypatch.setenv(ENV_SALT, env)
    want = hash_id("PAT-77", env or DEFAULT_ID_SALT)
    header = read_dicom(write_test_dicom(tmp_path / "p.dcm", PIXELS, PatientID="PAT-77"), pixels=False).patient_hash
    label = public_common.hash_patient("PAT-77", public_common.resolve_salt(None))
    predicted = _image_hash({"sop_uid": "PAT-77"})  # predict names images by the same keyed hash of an id
    assert header == label == predicted == want


def test_an_explicit_salt_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_SALT, "site-secret")
    path = write_test_dicom(tmp_path / "p.dcm", PIXELS, PatientID="PAT-77")
    assert read_dicom(path, pixels=False, salt="study-key").patient_hash == hash_id("PAT-77", "study-key")
    assert public_common.resolve_salt("study-key") == "study-key"


def test_only_mammokit_ids_reads_the_salt_variable():
    readers = [p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")
               if re.search(r"environ[^\n]*(ENV_SALT|MAMMOKIT_ID_SALT)", p.read_text())]
    assert readers == ["ids.py"]


WARN_SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
from mammokit.datasets import public_common
from mammokit.dicom import read_dicom
for _ in range(3):
    read_dicom(sys.argv[1], pixels=False)
    public_common.resolve_salt(None)
"""


def _stderr_of_three_reads(path: Path, salt: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != ENV_SALT}
    if salt is not None:
        env[ENV_SALT] = salt
    done = subprocess.run([sys.executable, "-c", WARN_SCRIPT, str(path)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_the_public_default_salt_warns_once_per_process(tmp_path):
    path = write_test_dicom(tmp_path / "p.dcm", PIXELS)
    warnings = [line for line in _stderr_of_three_reads(path, None).splitlines() if ENV_SALT in line]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING mammokit.ids:") and "public" in warnings[0]
    assert ENV_SALT not in _stderr_of_three_reads(path, "site-secret")
