"""`pacs listen` against a real Orthanc over real DIMSE associations: Orthanc routes MG instances to the listener
(Lua), the listener spools and predicts the study once and stores its SR/SEG/SC back into Orthanc; and the faults:
a listener stopped mid-study or mid-processing, a sender that aborts, an archive down while results are sent, a CT
routed by mistake, a dataset with cut pixel data, a done study met again after a restart.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from mammokit.ids import hash_id, resolve_salt
from mammokit.io import TEMP_NAME
from mammokit.pacs.dimse import Listener, parse_destination, send_files
from mammokit.predict import predict_studies
from mammokit.synth import generate
from orthanc_server import ROUTE_LUA, OrthancServer, free_port
from test_predict import release_tiny  # the same tiny released model as the predict tests

AET = "MAMMOKIT"
PROB_CANCER = "111047"  # DCM "Probability of cancer"


# ------------------------------------------------------------------------------------------------------ helpers


def _wait(what: Callable[[], Any], timeout_s: float = 60.0, every_s: float = 0.1) -> Any:
    """Poll `what()` until it is truthy; fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(every_s)
    pytest.fail(f"not reached within {timeout_s} s")


def _settled(listener: Listener, study_hash: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """The study's state once it reached a final status."""
    final = ("done", "failed", "not-mammography")
    return _wait(lambda: (s := listener.status().get(study_hash)) and s["status"] in final and s, timeout_s)


def _study_hash(files: list[Path]) -> str:
    return hash_id(str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), resolve_salt())


def _study_uid(files: list[Path]) -> str:
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def _orthanc_series(server: OrthancServer, study_uid: str) -> dict[str, list[str]]:
    """Orthanc's series of one study: modality -> instance ids (all series of that modality together)."""
    response = requests.post(f"{server.url}/tools/lookup", data=study_uid, auth=server.auth, timeout=30)
    response.raise_for_status()
    studies = [hit["ID"] for hit in response.json() if hit["Type"] == "Study"]
    out: dict[str, list[str]] = {}
    for study in studies:
        for series in server.get(f"/studies/{study}/series"):
            out.setdefault(series["MainDicomTags"].get("Modality", ""), []).extend(series["Instances"])
    return out


def _probabilities(ds: Dataset) -> list[float]:
    """Every "Probability of cancer" value of an SR, depth first."""
    values = []
    for item in ds.get("ContentSequence", []):
        name = item.get("ConceptNameCodeSequence")
        if item.get("ValueType") == "NUM" and name and name[0].CodeValue == PROB_CANCER:
            values.append(float(item.MeasuredValueSequence[0].NumericValue))
        values.extend(_probabilities(item))
    return values


def _listener(workspace: dict[str, Any], spool: str, **kwargs: Any) -> Listener:
    kwargs.setdefault("quiet_s", 1.0)
    return Listener(AET, kwargs.pop("port", free_port()), workspace["model"], workspace["root"] / spool, **kwargs)


def _to(listener: Listener) -> tuple[str, str, int]:
    return AET, "127.0.0.1", listener.port


def _association(listener: Listener, datasets: list[Dataset]) -> Any:
    ae = AE(ae_title="SENDER")
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title=AET)
    assert assoc.is_established
    return assoc


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Six four-view exams (one per test that needs its own study; uncompressed MG and JPEG 2000) and the tiny
    released model."""
    root = tmp_path_factory.mktemp("pacs_dimse")
    generate(root / "raw", exams=6, seed=21, size_scale=0.2, masks=False, vendors=["hologic", "siemens"])
    studies = sorted(p for p in (root / "raw" / "dicom").glob("*/*") if p.is_dir())
    return {"root": root, "model": release_tiny(root / "model"), "folders": studies,
            "studies": [sorted(s.rglob("*.dcm")) for s in studies]}


@pytest.fixture(scope="module")
def archive(workspace: dict[str, Any]) -> Iterator[OrthancServer]:
    """Orthanc routing MG to the listener's port (`workspace["listen_port"]`) with `ROUTE_LUA`."""
    workspace["listen_port"] = port = free_port()
    server = OrthancServer(workspace["root"] / "orthanc", modalities={"mammokit": (AET, "127.0.0.1", port)},
                           lua=ROUTE_LUA)
    with server:
        yield server


@pytest.fixture(scope="module")
def routed(workspace: dict[str, Any], archive: OrthancServer) -> Iterator[dict[str, Any]]:
    """Study 0 stored into Orthanc by a modality over C-STORE, routed by Lua to the listener, processed, results
    stored back."""
    listener = _listener(workspace, "spool-routed", port=workspace["listen_port"], quiet_s=30.0,
                         destination=(archive.aet, "127.0.0.1", archive.dicom_port)).start()
    files = workspace["studies"][0]
    assert all(o.sent for o in send_files((archive.aet, "127.0.0.1", archive.dicom_port), files, ae_title="MODALITY"))
    state = _settled(listener, _study_hash(files))
    try:
        yield {"listener": listener, "files": files, "state": state}
    finally:
        listener.stop()


# ------------------------------------------------------------------------------------------------------ tests


@pytest.mark.slow
def test_a_routed_study_is_predicted_once_and_its_results_land_in_the_archive(
        workspace: dict[str, Any], archive: OrthancServer, routed: dict[str, Any]) -> None:
    state = routed["state"]
    assert state["status"] == "done" and state["reason"] is None
    assert state["runs"] == 1 and state["received"] == 4
    assert state["views"] == ["L-CC", "L-MLO", "R-CC", "R-MLO"]
    assert state["results"] and set(state["results"].values()) == {"sent"}
    series = _orthanc_series(archive, _study_uid(routed["files"]))
    assert len(series["MG"]) == 4 and len(series["SR"]) == 1
    assert len(series["SEG"]) == 4 and len(series["OT"]) == 4  # a segmentation and an overlay per view
    report = pydicom.dcmread(io.BytesIO(archive.instance_file(series["SR"][0])))
    expected = predict_studies(workspace["model"], workspace["folders"][0], out=workspace["root"] / "direct",
                               one_study=True)[0].prediction["exam"]["prob"]
    assert state["exam"]["prob"] == pytest.approx(expected, abs=1e-6)
    assert any(abs(p - expected) < 1e-6 for p in _probabilities(report))


@pytest.mark.slow
def test_a_done_study_is_not_processed_again_after_a_restart(workspace: dict[str, Any], archive: OrthancServer,
                                                             routed: dict[str, Any]) -> None:
    routed["listener"].stop()
    study_hash = _study_hash(routed["files"])
    with _listener(workspace, "spool-routed", destination=(archive.aet, "127.0.0.1", archive.dicom_port)) as again:
        assert again.status()[study_hash]["status"] == "done"
        assert all(o.sent for o in send_files(_to(again), routed["files"][:1]))  # the modality sends one again
        time.sleep(again.quiet_s + 1.0)
        state = again.status()[study_hash]
    assert state["status"] == "done" and state["runs"] == 1
    assert len(state["late"]) == 1 and state["received"] == 4  # recorded, kept in late/, not processed
    assert len(_orthanc_series(archive, _study_uid(routed["files"]))["SR"]) == 1


@pytest.mark.slow
def test_a_listener_stopped_mid_study_resumes_and_processes_it_once(workspace: dict[str, Any],
                                                                    archive: OrthancServer) -> None:
    files, destination = workspace["studies"][1], (archive.aet, "127.0.0.1", archive.dicom_port)
    study_hash = _study_hash(files)
    first = _listener(workspace, "spool-resume", quiet_s=60.0, destination=destination).start()
    assert all(o.sent for o in send_files(_to(first), files[:2]))
    assert first.status()[study_hash]["status"] == "receiving"
    first.stop()  # mammokit goes down before the study is complete
    with _listener(workspace, "spool-resume", quiet_s=60.0, destination=destination) as second:
        assert second.status()[study_hash]["received"] == 2
        assert all(o.sent for o in send_files(_to(second), files[2:]))
        state = _settled(second, study_hash)  # four views in and the association closed: no quiet wait
    assert state["status"] == "done" and state["runs"] == 1 and state["received"] == 4
    assert len(_orthanc_series(archive, _study_uid(files))["SR"]) == 1


@pytest.mark.slow
def test_a_study_left_processing_by_a_killed_listener_is_processed_at_the_next_start(
        workspace: dict[str, Any]) -> None:
    files = workspace["studies"][2]
    study_hash = _study_hash(files)
    first = _listener(workspace, "spool-killed", quiet_s=60.0).start()
    assert all(o.sent for o in send_files(_to(first), files[:3]))
    first.stop()  # then the state is made what a kill during processing leaves
    first.spool.open()
    first.spool.update(study_hash, status="processing")
    first.spool.close()
    with _listener(workspace, "spool-killed", quiet_s=60.0) as second:
        state = _settled(second, study_hash)
    assert state["status"] == "done" and state["runs"] == 1 and state["received"] == 3
    assert all((second.spool.folder(study_hash) / "out" / rel).is_file() for rel in state["results"])


@pytest.mark.slow
def test_an_aborted_association_keeps_what_was_acknowledged(workspace: dict[str, Any]) -> None:
    files = workspace["studies"][3]
    study_hash = _study_hash(files)
    sent = [pydicom.dcmread(p) for p in files[:2]]
    with _listener(workspace, "spool-abort", quiet_s=1.5) as listener:
        assoc = _association(listener, sent)
        assert [assoc.send_c_store(ds).Status for ds in sent] == [0, 0]
        assoc.abort()  # the sender drops without a release
        spool = listener.spool.folder(study_hash)
        kept = {str(ds.SOPInstanceUID): ds.PixelData for ds in map(pydicom.dcmread, (spool / "images").glob("*"))}
        assert kept == {str(ds.SOPInstanceUID): ds.PixelData for ds in sent}  # whole, as sent
        state = _settled(listener, study_hash)  # completes on quiet time
    assert state["status"] == "done" and state["received"] == 2 and state["runs"] == 1
    assert not [p for p in spool.rglob("*") if TEMP_NAME.fullmatch(p.name) or p.parent.name == "incoming"]


def test_send_files_retries_until_the_archive_is_back(workspace: dict[str, Any], archive: OrthancServer) -> None:
    files = workspace["studies"][4]
    outcomes: list[Any] = []
    archive.stop()  # the archive restarts while results are being sent
    sender = threading.Thread(target=lambda: outcomes.extend(
        send_files((archive.aet, "127.0.0.1", archive.dicom_port), files, retry_s=30.0)))
    sender.start()
    time.sleep(1.5)
    archive.start()
    sender.join(60)
    assert [o.sent for o in outcomes] == [True] * len(files)
    assert len(_orthanc_series(archive, _study_uid(files))["MG"]) == len(files)


def test_send_files_records_each_file_it_could_not_send(tmp_path: Path, workspace: dict[str, Any]) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    outcomes = send_files(f"NOBODY@127.0.0.1:{free_port()}", [workspace["studies"][4][0], junk], retry_s=1.0)
    assert [o.sent for o in outcomes] == [False, False]
    assert "not stored by NOBODY@127.0.0.1" in outcomes[0].reason and "not a readable DICOM" in outcomes[1].reason
    with pytest.raises(ValueError, match="AET@host:port"):
        parse_destination("ORTHANC:4242")


def test_a_ct_instance_is_recorded_as_not_mammography(workspace: dict[str, Any]) -> None:
    ct = Dataset()
    ct.file_meta = FileMetaDataset()
    ct.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ct.SOPClassUID, ct.SOPInstanceUID = CTImageStorage, generate_uid()
    ct.StudyInstanceUID, ct.SeriesInstanceUID = generate_uid(), generate_uid()
    ct.Modality, ct.PatientID, ct.BodyPartExamined = "CT", "ct-patient", "CHEST"
    ct.Rows = ct.Columns = 8
    ct.BitsAllocated, ct.BitsStored, ct.HighBit, ct.PixelRepresentation, ct.SamplesPerPixel = 16, 12, 11, 0, 1
    ct.PhotometricInterpretation, ct.PixelData = "MONOCHROME2", bytes(128)
    study_hash = hash_id(ct.StudyInstanceUID, resolve_salt())
    with _listener(workspace, "spool-ct") as listener:
        assoc = _association(listener, [ct])
        assert assoc.send_c_store(ct).Status == 0  # accepted: a wrongly routed study is a record, not an error
        assoc.release()
        echo = AE(ae_title="SENDER")
        echo.add_requested_context(Verification)
        ping = echo.associate("127.0.0.1", listener.port, ae_title=AET)
        assert ping.send_c_echo().Status == 0
        ping.release()
        state = _settled(listener, study_hash)
    assert state["status"] == "not-mammography" and state["runs"] == 0 and state["received"] == 0
    assert list(state["other"].values()) == ["CT Image Storage, Modality CT, CHEST"]
    assert "not mammography" in state["reason"]
    assert not list(listener.spool.folder(study_hash).rglob("*.dcm"))  # recorded, not kept


@pytest.mark.slow
def test_a_dataset_with_cut_pixel_data_is_refused_and_the_study_goes_on(
        workspace: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    files = workspace["studies"][5]
    study_hash = _study_hash(files)
    datasets = [pydicom.dcmread(p) for p in files]
    datasets[0].PixelData = datasets[0].PixelData[:1000]  # a sender's disk error: the pixel data is cut
    caplog.set_level(logging.INFO, logger="mammokit.pacs")
    with _listener(workspace, "spool-corrupt", quiet_s=1.5) as listener:
        assoc = _association(listener, datasets)
        answers = [assoc.send_c_store(ds) for ds in datasets]
        assoc.release()
        state = _settled(listener, study_hash)
    assert answers[0].Status == 0xC000 and "truncated" in answers[0].ErrorComment
    assert [a.Status for a in answers[1:]] == [0, 0, 0]
    assert state["status"] == "done" and state["received"] == 3 and state["runs"] == 1
    assert ["truncated" in reason for reason in state["rejected"].values()] == [True]
    assert len(list((listener.spool.folder(study_hash) / "rejected").glob("*.dcm"))) == 1
    identifiers = {str(ds.StudyInstanceUID) for ds in datasets} | {str(ds.SOPInstanceUID) for ds in datasets} | {
        str(ds.PatientID) for ds in datasets} | {str(ds.PatientName) for ds in datasets}
    mine = ("mammokit.pacs.dimse", "mammokit.pacs.spool")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name in mine)
    assert study_hash in logged and not [i for i in identifiers if i and i in logged]


def test_serve_forever_stops_cleanly_on_sigterm(workspace: dict[str, Any]) -> None:
    listener = _listener(workspace, "spool-sigterm")

    def terminate_once_listening() -> None:
        _wait(lambda: listener.listening, timeout_s=30)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_once_listening)
    killer.start()
    before = signal.getsignal(signal.SIGTERM)
    listener.serve_forever()  # returns on SIGTERM
    killer.join()
    assert signal.getsignal(signal.SIGTERM) == before and not listener.listening
    with _listener(workspace, "spool-sigterm"):  # the spool was released
        pass


def test_one_listener_per_spool_and_per_port(workspace: dict[str, Any]) -> None:
    with _listener(workspace, "spool-one") as first:
        with pytest.raises(ValueError, match="spool in use by another listener"):
            _listener(workspace, "spool-one").start()
        with pytest.raises(ValueError, match="cannot listen on"):
            _listener(workspace, "spool-two", port=first.port).start()
    with pytest.raises(ValueError, match="heatmap must be one of"):
        _listener(workspace, "spool-two", heatmap="lime")
