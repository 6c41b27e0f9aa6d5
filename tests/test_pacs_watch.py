"""`watch` against a real Orthanc: each new stable mammography study is pulled, predicted and its SR/SEG/SC results
pushed back once; a CT study is recorded as not mammography; the results mammokit pushes do not start it again; a
restarted watch (a new call with the same state file) handles only what is new; QIDO polling works where the change
feed is not used."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, generate_uid

from dicom_factory import write_test_dicom
from mammokit.errors import InvalidInputError
from mammokit.ids import hash_id, resolve_salt
from mammokit.pacs.access import ArchiveAccess
from mammokit.pacs.dicomweb import client, push
from mammokit.pacs.watch import DONE, NOT_MAMMOGRAPHY, watch
from mammokit.synth import generate
from orthanc_server import PASSWORD, USER, OrthancServer
from test_predict import release_tiny  # the same tiny released model as the predict tests

RESULT_MODALITIES = {"SR", "SEG", "OT"}


def _hash(uid: str) -> str:
    return hash_id(uid, resolve_salt()) or ""


def wait_stable(server: OrthancServer, timeout_s: float = 30.0) -> int:
    """Wait until Orthanc calls every study stable and its change feed has held still; returns its last change."""
    deadline, last, since = time.monotonic() + timeout_s, -1, time.monotonic()
    while time.monotonic() < deadline:
        now = server.get("/changes?last")["Last"]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 0.3 and all(server.get(f"/studies/{s}")["IsStable"]
                                                     for s in server.get("/studies")):
            return last
        time.sleep(0.1)
    raise AssertionError(f"Orthanc's studies did not become stable within {timeout_s} s")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """An Orthanc holding two MG studies (A: 2020-01-01, explicit VR; B: 01-02, JPEG 2000) and a CT study; study C
    (01-03) comes later."""
    root = tmp_path_factory.mktemp("watch")
    generate(root / "raw", exams=3, seed=13, vendors="hologic,siemens", size_scale=0.2, masks=False)
    studies: dict[str, list[Path]] = {}
    for path in sorted((root / "raw" / "dicom").rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        studies.setdefault(f"{ds.StudyDate}|{ds.StudyInstanceUID}", []).append(path)
    (a, b, c) = sorted(studies)
    ct_uid = generate_uid()
    ct = write_test_dicom(root / "ct.dcm", np.zeros((16, 16), np.uint16), modality="CT", sop_class=CTImageStorage,
                          StudyInstanceUID=ct_uid, SeriesInstanceUID=generate_uid(), StudyDate="20200104",
                          BodyPartExamined="CHEST", ImageLaterality=None, ViewPosition=None)
    with OrthancServer(root / "orthanc", stable_age_s=1) as server:
        access = ArchiveAccess(server.dicomweb, USER, PASSWORD)
        assert push(access, [*studies[a], *studies[b], ct]).ok
        wait_stable(server)
        yield {"root": root, "server": server, "access": access, "model": release_tiny(root / "model"),
               "uids": {"A": a.split("|")[1], "B": b.split("|")[1], "C": c.split("|")[1], "CT": ct_uid},
               "C": studies[c], "date_C": c.split("|")[0]}


def _watch(archive: dict, name: str = "out", **kwargs: object) -> dict[str, str]:
    out = archive["root"] / name
    return watch(archive["access"], archive["model"], out, state_file=out / "state.json", once=True, **kwargs)


def _state(archive: dict, name: str = "out") -> dict:
    return json.loads((archive["root"] / name / "state.json").read_text())


@pytest.fixture(scope="module")
def first(archive: dict) -> dict[str, str]:
    return _watch(archive)


@pytest.fixture(scope="module")
def second(archive: dict, first: dict[str, str]) -> dict:
    """The second call, once the results the first pushed back made Orthanc announce studies A and B anew."""
    before = _state(archive)["last_change"]
    wait_stable(archive["server"])
    return {"handled": _watch(archive), "before": before}


@pytest.fixture(scope="module")
def third(archive: dict, second: dict) -> dict[str, str]:
    """A new study C arrives after the second call."""
    assert push(archive["access"], archive["C"]).ok
    wait_stable(archive["server"])
    return _watch(archive)


@pytest.mark.slow
def test_each_new_study_is_processed_once(archive: dict, first: dict[str, str]) -> None:
    uids = archive["uids"]
    assert first == {_hash(uids["A"]): DONE, _hash(uids["B"]): DONE, _hash(uids["CT"]): NOT_MAMMOGRAPHY}
    state = _state(archive)
    assert state["feed"] == "changes" and state["last_change"] > 0
    assert {h: e["status"] for h, e in state["studies"].items()} == first
    assert all(e["attempts"] == 1 and e["results"] > 0 for e in state["studies"].values() if e["status"] == DONE)
    text = (archive["root"] / "out" / "state.json").read_text()
    assert not [uid for uid in uids.values() if uid in text]  # hashes only
    assert not list((archive["root"] / "out" / "incoming").iterdir())  # pulled studies go once done


@pytest.mark.slow
def test_results_are_stored_on_the_archive(archive: dict, first: dict[str, str]) -> None:
    web, state = client(archive["access"]), _state(archive)
    for name in ("A", "B"):
        uid = archive["uids"][name]
        series = web.search_for_series(uid, fields=["Modality", "NumberOfSeriesRelatedInstances"])
        modalities = {s["00080060"]["Value"][0] for s in series}
        assert modalities >= RESULT_MODALITIES
        results = sum(int(s["00201209"]["Value"][0]) for s in series if s["00080060"]["Value"][0] in RESULT_MODALITIES)
        assert results == state["studies"][_hash(uid)]["results"]
    assert not [s for s in web.search_for_series(archive["uids"]["CT"], fields=["Modality"])
                if s["00080060"]["Value"][0] != "CT"]  # nothing pushed to the CT study


@pytest.mark.slow
def test_the_results_pushed_back_start_nothing(archive: dict, second: dict) -> None:
    assert second["handled"] == {}
    server, state = archive["server"], _state(archive)
    ids = {server.get(f"/studies/{s}")["MainDicomTags"]["StudyInstanceUID"]: s for s in server.get("/studies")}
    announced = {c["ID"] for c in server.get(f"/changes?since={second['before']}&limit=1000")["Changes"]
                 if c["ChangeType"] == "StableStudy"}
    assert {ids[archive["uids"]["A"]], ids[archive["uids"]["B"]]} <= announced  # announced anew, and ignored
    assert state["last_change"] > second["before"]
    assert {e["status"] for e in state["studies"].values()} == {DONE, NOT_MAMMOGRAPHY}


@pytest.mark.slow
def test_a_later_study_is_processed_by_the_next_call(archive: dict, third: dict[str, str]) -> None:
    assert third == {_hash(archive["uids"]["C"]): DONE}
    assert len(_state(archive)["studies"]) == 4
    assert _watch(archive) == {}


@pytest.mark.slow
def test_a_failure_that_may_pass_is_tried_again(archive: dict, third: dict[str, str]) -> None:
    path, h = archive["root"] / "out" / "state.json", _hash(archive["uids"]["C"])
    state = _state(archive)
    state["studies"][h].update(status="failed", reason="push: the archive was unavailable", retry=True)
    path.write_text(json.dumps(state))
    assert _watch(archive) == {h: DONE}
    entry = _state(archive)["studies"][h]
    assert (entry["status"], entry["reason"], entry["attempts"]) == (DONE, "", 2)


@pytest.mark.slow
def test_qido_polling_where_there_is_no_change_feed(archive: dict, third: dict[str, str]) -> None:
    handled = _watch(archive, "out-qido", feed="qido", since=archive["date_C"], poll_s=0.3)
    assert handled == {_hash(archive["uids"]["C"]): DONE}  # two polls: the study held still between them
    state = _state(archive, "out-qido")
    yesterday = (dt.date.today() - dt.timedelta(days=1)).strftime("%Y%m%d")
    assert state["feed"] == "qido" and state["poll_since"] == max(yesterday, archive["date_C"])
    assert state["settling"] == {}
    assert _watch(archive, "out-qido", feed="qido", since=archive["date_C"], poll_s=0.3) == {}


def test_one_watch_per_state_file_and_archive(archive: dict) -> None:
    folder = archive["root"] / "locked"
    folder.mkdir()
    with open(folder / "state.json.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(InvalidInputError, match="another watch uses this state file"):
            _watch(archive, "locked")
    (folder / "state.json").write_text(json.dumps({"archive": "http://elsewhere.example/dicom-web"}))
    with pytest.raises(InvalidInputError, match=r"not http://127\.0\.0\.1"):
        _watch(archive, "locked")


@pytest.mark.slow
def test_a_running_watch_ends_when_stopped(archive: dict, third: dict[str, str]) -> None:
    stop, handled = threading.Event(), []
    out = archive["root"] / "out"
    runner = threading.Thread(target=lambda: handled.append(watch(
        archive["access"], archive["model"], out, state_file=out / "state.json", poll_s=0.2, stop=stop)))
    runner.start()
    time.sleep(1.0)  # a few cycles with nothing new
    assert runner.is_alive()
    stop.set()
    runner.join(timeout=10)
    assert not runner.is_alive() and handled == [{}]
