"""The `mammokit pacs` commands end to end against a real Orthanc, as a user runs them: push a study (STOW-RS), pull
it (QIDO + WADO-RS), `predict --dicom`, push the results back, read them from the archive with highdicom; `watch
--once` processes the study without doubling its results; a `listen` process killed mid-study is resumed by a new one
and the study is processed once; `listen` answers C-ECHO and stops cleanly on SIGTERM.
Credentials come from the environment only."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
import requests
from pynetdicom import AE
from typer.testing import CliRunner

from mammokit.cli import app
from mammokit.errors import MammokitError
from mammokit.pacs.access import ENV_PASSWORD, ENV_USER
from mammokit.pacs.dimse import send_files
from mammokit.synth import generate
from orthanc_server import PASSWORD, USER, OrthancServer, free_port
from test_pacs_results import _validate
from test_predict import release_tiny

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("pacs_cli")
    generate(root / "raw", exams=1, seed=21, vendors="siemens", size_scale=0.2, masks=False)
    files = sorted((root / "raw" / "dicom").rglob("*.dcm"))
    with OrthancServer(root / "orthanc") as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_USER, USER)
        mp.setenv(ENV_PASSWORD, PASSWORD)
        yield {"root": root, "files": files, "server": server, "model": release_tiny(root / "model"),
               "study_uid": str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)}


def _invoke(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _archive_results(server: OrthancServer, study_uid: str) -> dict[str, list[pydicom.Dataset]]:
    """The SR/SEG/OT instances of one study on the archive, read back from Orthanc's files."""
    found = requests.post(f"{server.url}/tools/lookup", data=study_uid, auth=server.auth, timeout=30).json()
    (study_id,) = [r["ID"] for r in found if r["Type"] == "Study"]
    out: dict[str, list[pydicom.Dataset]] = {}
    for series in server.get(f"/studies/{study_id}/series"):
        modality = series["MainDicomTags"].get("Modality")
        for instance in series["Instances"]:
            if modality in ("SR", "SEG", "OT"):
                ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(server.instance_file(instance)))
                out.setdefault(modality, []).append(ds)
    return out


@pytest.mark.slow
def test_push_pull_predict_push_back(world: dict, dciodvfy: str) -> None:
    server, root = world["server"], world["root"]
    out = _invoke("pacs", "push", server.dicomweb, root / "raw" / "dicom")
    assert "4 of 4 files stored" in out
    out = _invoke("pacs", "pull", server.dicomweb, "--study", world["study_uid"], "--out", root / "pulled")
    assert "1 studies, 4 images written, 0 failed" in out
    out = _invoke("predict", world["model"], root / "pulled", "--out", root / "pred", "--dicom")
    assert "9 DICOM result objects" in out
    (pred_dir,) = [p for p in (root / "pred").iterdir() if (p / "prediction.json").is_file()]
    prediction = json.loads((pred_dir / "prediction.json").read_text())
    assert world["study_uid"] not in json.dumps(prediction)  # hashes only in local outputs
    _invoke("predict", world["model"], root / "raw" / "dicom", "--out", root / "pred_raw")
    (raw_dir,) = [p for p in (root / "pred_raw").iterdir() if (p / "prediction.json").is_file()]
    assert json.loads((raw_dir / "prediction.json").read_text())["exam"] == prediction["exam"]  # same files, same p
    out = _invoke("pacs", "push", server.dicomweb, pred_dir / "dicom")
    assert "9 of 9 files stored" in out
    results = _archive_results(server, world["study_uid"])
    assert {k: len(v) for k, v in results.items()} == {"SR": 1, "SEG": 4, "OT": 4}
    sr = hd.sr.Comprehensive3DSR.from_dataset(results["SR"][0])
    (exam_group,) = [g for g in sr.content.get_image_measurement_groups() if g.tracking_identifier == "exam"]
    prob = {m.name.value: m.value for m in exam_group.get_measurements()}["111047"]
    assert prob == pytest.approx(prediction["exam"]["prob"], abs=1e-12)
    sources = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in world["files"]}
    assert {s.referenced_sop_instance_uid for s in exam_group.source_images} == sources
    for seg in results["SEG"]:
        (_, _, sop_uid), = hd.seg.Segmentation.from_dataset(seg).get_source_image_uids()
        assert sop_uid in sources
    path = root / "sr_from_archive.dcm"
    results["SR"][0].save_as(path, enforce_file_format=True)
    errors, _ = _validate(dciodvfy, path)
    assert not errors, errors


@pytest.mark.slow
def test_watch_once_does_not_double_the_results(world: dict) -> None:
    server, root = world["server"], world["root"]
    if not _archive_results(server, world["study_uid"]):
        _invoke("pacs", "push", server.dicomweb, root / "raw" / "dicom")
    deadline = time.monotonic() + 30
    while not all(server.get(f"/studies/{s}")["IsStable"] for s in server.get("/studies")):
        assert time.monotonic() < deadline, "Orthanc's studies did not become stable"
        time.sleep(0.2)
    out = _invoke("pacs", "watch", server.dicomweb, "--model", world["model"], "--out", root / "watch", "--once")
    assert ": done" in out
    again = _invoke("pacs", "watch", server.dicomweb, "--model", world["model"], "--out", root / "watch", "--once")
    assert ": done" not in again  # a second look finds nothing new
    counts = {k: len(v) for k, v in _archive_results(server, world["study_uid"]).items()}
    assert counts == {"SR": 1, "SEG": 4, "OT": 4}  # the same UIDs again: replaced, not doubled


def test_wrong_password_is_one_line(world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_PASSWORD, "wrong horse")
    result = runner.invoke(app, ["pacs", "pull", world["server"].dicomweb, "--since", "20000101", "--out",
                                 str(world["root"] / "nope")])
    assert isinstance(result.exception, MammokitError), f"not a user error: {result.exception!r}"
    message = str(result.exception)  # what `mammokit.cli.main` prints as its one line
    assert "refused the credentials" in message and "\n" not in message and "wrong horse" not in message


def test_pull_needs_a_study_or_a_date(world: dict) -> None:
    result = runner.invoke(app, ["pacs", "pull", world["server"].dicomweb, "--out", str(world["root"] / "x")])
    assert isinstance(result.exception, MammokitError) and "--study" in str(result.exception)


def _echo(port: int) -> int | None:
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="MAMMOKIT")
    if not assoc.is_established:
        return None
    status = assoc.send_c_echo()
    assoc.release()
    return int(status.Status) if status else None


def _start_listener(world: dict, port: int, spool: Path) -> subprocess.Popen:
    """`mammokit pacs listen` in its own process, sending results to the archive; returns once it accepts."""
    server = world["server"]
    cmd = [sys.executable, "-m", "mammokit.cli", "pacs", "listen", "--model", str(world["model"]), "--port",
           str(port), "--spool", str(spool), "--quiet-s", "60",
           "--send-to", f"{server.aet}@127.0.0.1:{server.dicom_port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    while _echo(port) != 0:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.3)
    return proc


@pytest.mark.slow
def test_a_killed_listener_resumes_the_study_and_processes_it_once(world: dict, tmp_path: Path) -> None:
    """SIGKILL after two of four views, a new listener process on the same spool gets the other two: the study is
    predicted once and its results reach the archive once; the listener answers C-ECHO and stops on SIGTERM."""
    generate(tmp_path / "raw", exams=1, seed=22, vendors="hologic", size_scale=0.2, masks=False)
    files = sorted((tmp_path / "raw" / "dicom").rglob("*.dcm"))
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    port, spool = free_port(), tmp_path / "spool"
    first = _start_listener(world, port, spool)
    try:
        assert all(o.sent for o in send_files(("MAMMOKIT", "127.0.0.1", port), files[:2], ae_title="MODALITY"))
    finally:
        first.kill()  # no goodbye: what was acknowledged must be on disk already
        first.communicate(timeout=30)
    (state_file,) = spool.glob("*/state.json")
    assert len(json.loads(state_file.read_text())["images"]) == 2
    second = _start_listener(world, port, spool)
    try:
        assert all(o.sent for o in send_files(("MAMMOKIT", "127.0.0.1", port), files[2:], ae_title="MODALITY"))
        deadline = time.monotonic() + 120
        while json.loads(state_file.read_text())["status"] != "done":
            assert time.monotonic() < deadline and second.poll() is None, state_file.read_text()
            time.sleep(0.5)
    finally:
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=60)
    assert second.returncode == 0 and "listening as MAMMOKIT" in output, output  # SIGTERM: a clean stop
    state = json.loads(state_file.read_text())
    assert state["runs"] == 1 and len(state["images"]) == 4 and study_uid not in state_file.read_text()
    counts = {k: len(v) for k, v in _archive_results(world["server"], study_uid).items()}
    assert counts == {"SR": 1, "SEG": 4, "OT": 4}
