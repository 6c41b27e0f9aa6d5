"""Identifier hashing: one salt rule for the reader, the dataset adapters and predict; a random salt per installation
instead of a public one; paths with the patient's folders replaced by the patient hash."""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import mammokit.ids as ids
from dicom_factory import write_test_dicom
from mammokit.datasets import public_common
from mammokit.datasets.index import header_row
from mammokit.dicom import read_dicom
from mammokit.errors import InvalidInputError
from mammokit.ids import ENV_CONFIG_DIR, ENV_SALT, hash_id, installation_salt, resolve_salt, safe_relpath

PIXELS = (np.arange(32 * 24).reshape(32, 24) % 4096).astype(np.uint16)
SRC = Path(__file__).resolve().parents[1] / "src" / "mammokit"


@pytest.mark.parametrize("env", [None, "", "site-secret"])
def test_reader_adapters_and_predict_hash_the_same_id_alike(tmp_path, monkeypatch, env):
    from mammokit.predict import _image_hash

    if env is None:
        monkeypatch.delenv(ENV_SALT, raising=False)
    else:
        monkeypatch.setenv(ENV_SALT, env)
    salt = env or installation_salt()
    path = write_test_dicom(tmp_path / "p.dcm", PIXELS, PatientID="PAT-77", SOPInstanceUID="1.2.840.77")
    header = read_dicom(path, pixels=False).patient_hash
    label = public_common.hash_patient("PAT-77", public_common.resolve_salt(None))
    assert header == label == hash_id("PAT-77", salt)
    row = header_row(path, tmp_path)  # the index names an image by the keyed hash of its SOP UID; predict too
    assert row["image_id"] == _image_hash(row) == hash_id("1.2.840.77", salt)


def test_an_explicit_salt_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_SALT, "site-secret")
    path = write_test_dicom(tmp_path / "p.dcm", PIXELS, PatientID="PAT-77")
    assert read_dicom(path, pixels=False, salt="study-key").patient_hash == hash_id("PAT-77", "study-key")
    assert public_common.resolve_salt("study-key") == "study-key"


def test_only_mammokit_ids_reads_the_salt_variable():
    readers = [p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")
               if re.search(r"environ[^\n]*(ENV_SALT|MAMMOKIT_ID_SALT)", p.read_text())]
    assert readers == ["ids.py"]



# ------------------------------------------------------------------------------------ the per-installation salt


@pytest.fixture
def fresh_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installation that has never hashed anything: an empty config folder and no MAMMOKIT_ID_SALT."""
    folder = tmp_path / "config"
    monkeypatch.setenv(ENV_CONFIG_DIR, str(folder))
    monkeypatch.delenv(ENV_SALT, raising=False)
    return folder


def test_a_random_salt_is_made_once_owner_only_and_reused(fresh_install: Path) -> None:
    first = resolve_salt()
    path = fresh_install / "id_salt"
    assert re.fullmatch(r"[0-9a-f]{64}", first) and path.read_text().strip() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [resolve_salt() for _ in range(3)] == [first] * 3 and path.read_text().strip() == first
    assert _salt_in_a_new_process(fresh_install) == first  # a later run of the same installation hashes alike
    assert _salt_in_a_new_process(fresh_install.parent / "other") != first  # another installation does not


def test_processes_starting_together_agree_on_one_salt(fresh_install: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        salts = set(pool.map(lambda _: _salt_in_a_new_process(fresh_install), range(4)))
    assert salts == {(fresh_install / "id_salt").read_text().strip()}
    assert [p.name for p in fresh_install.iterdir()] == ["id_salt"]  # no temporary file left behind


def test_the_environment_wins_and_no_salt_file_is_made(fresh_install: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SALT, "site-secret")
    assert resolve_salt() == "site-secret" and not fresh_install.exists()


def test_the_salt_lives_in_the_xdg_config_folder_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (ENV_CONFIG_DIR, ENV_SALT, "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ids.config_dir() == tmp_path / "home" / ".config" / "mammokit"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    salt = resolve_salt()
    assert (tmp_path / "xdg" / "mammokit" / "id_salt").read_text().strip() == salt
    assert not (tmp_path / "home").exists()


def test_the_public_default_salt_is_gone(fresh_install: Path) -> None:
    """The old public salt let anyone recompute a patient's hash by trying every id; nothing falls back to it."""
    assert not hasattr(ids, "DEFAULT_ID_SALT")
    # only the demo names it, for its synthetic patients (a fixed split on every machine), and only while it runs
    assert [p.name for p in SRC.rglob("*.py") if "mammokit-v1-public-salt" in p.read_text()] == ["demo.py"]
    public = hash_id("PID98765", "mammokit-v1-public-salt")
    assert hash_id("PID98765", resolve_salt()) != public


def test_the_location_is_logged_once_and_the_salt_never(fresh_install: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mammokit.ids"):
        salts = {resolve_salt() for _ in range(3)}
    (salt,) = salts
    where = str(fresh_install / "id_salt")
    created = [r for r in caplog.records if r.levelno == logging.WARNING]
    reused = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(created) == 1 and where in created[0].getMessage() and ENV_SALT in created[0].getMessage()
    assert len(reused) == 1 and where in reused[0].getMessage()
    assert salt not in caplog.text


@pytest.mark.parametrize("content", ["", "short\n"])
def test_a_damaged_salt_file_stops_rather_than_hashing_differently(fresh_install: Path, content: str) -> None:
    fresh_install.mkdir()
    (fresh_install / "id_salt").write_text(content)
    with pytest.raises(InvalidInputError, match="id_salt"):
        resolve_salt()
    assert (fresh_install / "id_salt").read_text() == content  # never silently replaced


def _salt_in_a_new_process(config: Path) -> str:
    env = {**{k: v for k, v in os.environ.items() if k != ENV_SALT}, ENV_CONFIG_DIR: str(config)}
    done = subprocess.run([sys.executable, "-c", "from mammokit.ids import resolve_salt; print(resolve_salt())"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# ---------------------------------------------------------------------------------------------- paths


def test_patient_folders_become_the_patient_hash() -> None:
    h = hash_id("PID98765", "k")
    assert safe_relpath("dicom/PID98765/1.2.3/1-1.dcm", "PID98765", "k") == f"dicom/{h}/1.2.3/1-1.dcm"
    assert safe_relpath("dicom/pid98765_Doe/s/1-1.dcm", "PID98765", "k") == f"dicom/{h}/s/1-1.dcm"  # contained
    # in a file name only the id is replaced, so the files of one folder keep distinct names
    assert safe_relpath("x/PID98765_L_CC.dcm", "PID98765", "k") == f"x/{h}_L_CC.dcm"
    acc = hash_id("ACC42424", "k")
    assert safe_relpath("PID98765/ACC42424/a.dcm", "PID98765", "k", "ACC42424") == f"{h}/{acc}/a.dcm"
    assert safe_relpath("dicom/case01/a.dcm", "PID98765", "k") == "dicom/case01/a.dcm"
    assert safe_relpath("dicom/x/a.dcm", None, "k") == "dicom/x/a.dcm"


def test_a_short_patient_id_counts_only_as_a_whole_name() -> None:
    h = hash_id("12", "k")
    assert safe_relpath("12/1.2.840.12/12.dcm", "12", "k") == f"{h}/1.2.840.12/{h}.dcm"
    assert safe_relpath("a/112/x12.dcm", "12", "k") == "a/112/x12.dcm"
