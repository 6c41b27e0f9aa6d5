"""DICOMweb against a real Orthanc: find (QIDO-RS) mammography studies only, pull (WADO-RS) into hash-named folders
with values equal to the source, push (STOW-RS) that survives an archive restart, and archive access (credentials
from the environment or an owner-only file, refused credentials in one line, TLS verified with a CA bundle)."""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, DigitalXRayImageStorageForPresentation, generate_uid

from dicom_factory import write_test_dicom
from mammokit.errors import InvalidInputError, MissingInputError
from mammokit.ids import hash_id, resolve_salt
from mammokit.pacs.access import (
    ENV_CA_BUNDLE,
    ENV_PASSWORD,
    ENV_USER,
    ArchiveAccess,
    ArchiveUnreachableError,
    CredentialsRefusedError,
    default_config_file,
    http_session,
    load_access,
)
from mammokit.pacs.dicomweb import ALREADY_ON_DISK, client, find_studies, pull, push
from mammokit.synth import generate
from orthanc_server import PASSWORD, USER, OrthancServer, free_port

SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(autouse=True)
def no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (ENV_USER, ENV_PASSWORD, ENV_CA_BUNDLE):
        monkeypatch.delenv(name, raising=False)


def _small(path: Path, study_uid: str, *, modality: str, sop_class: str, date: str, **tags: object) -> Path:
    """A 16x16 instance of `study_uid` in a series of its own."""
    return write_test_dicom(path, np.arange(256, dtype=np.uint16).reshape(16, 16), modality=modality,
                            sop_class=sop_class, StudyInstanceUID=study_uid, SeriesInstanceUID=generate_uid(),
                            SOPInstanceUID=generate_uid(), StudyDate=date, **tags)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two synthetic MG studies (J2K lossless and explicit VR) dated 2020-01-01/02, an SR in the first, a DX BREAST
    study (01-03), a DX CHEST study (01-04) and a CT study (01-05)."""
    root = tmp_path_factory.mktemp("dicomweb")
    generate(root / "raw", exams=2, seed=21, vendors="siemens,hologic", size_scale=0.2, masks=False)
    mg = sorted((root / "raw" / "dicom").rglob("*.dcm"))
    studies: dict[str, list[Path]] = {}
    for path in mg:
        studies.setdefault(str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID), []).append(path)
    first = min(studies, key=lambda uid: str(pydicom.dcmread(studies[uid][0], stop_before_pixels=True).StudyDate))
    extra = root / "extra"
    sr = _small(extra / "sr.dcm", first, modality="SR", sop_class=SR_STORAGE, date="20200101")
    dx_breast, dx_chest, ct = generate_uid(), generate_uid(), generate_uid()
    dx = DigitalXRayImageStorageForPresentation
    files = {
        "dx_breast": _small(extra / "dx_breast.dcm", dx_breast, modality="DX", sop_class=dx, date="20200103",
                            BodyPartExamined="BREAST"),
        "dx_chest": _small(extra / "dx_chest.dcm", dx_chest, modality="DX", sop_class=dx, date="20200104",
                           BodyPartExamined="CHEST"),
        "ct": _small(extra / "ct.dcm", ct, modality="CT", sop_class=CTImageStorage, date="20200105",
                     BodyPartExamined="CHEST", ImageLaterality=None, ViewPosition=None),
    }
    return {"root": root, "mg": mg, "studies": studies, "first": first, "sr": sr, "files": files,
            "uids": {"dx_breast": dx_breast, "dx_chest": dx_chest, "ct": ct}}


@pytest.fixture(scope="module")
def server(data: dict) -> Iterator[OrthancServer]:
    with OrthancServer(data["root"] / "orthanc") as archive:
        yield archive


@pytest.fixture(scope="module")
def access(server: OrthancServer) -> ArchiveAccess:
    return ArchiveAccess(server.dicomweb, USER, PASSWORD)


@pytest.fixture(scope="module")
def stored(data: dict, access: ArchiveAccess) -> dict:
    """Everything of `data` stored on the archive with our own STOW-RS."""
    files = [*data["mg"], data["sr"], *data["files"].values()]
    result = push(access, files)
    assert result.ok and result.stored == files, result.failed
    return data


def _hash(uid: str) -> str:
    return hash_id(uid, resolve_salt()) or ""


# ------------------------------------------------------------------------------------------------------ find


def test_find_keeps_mammography_only(stored: dict, access: ArchiveAccess) -> None:
    found = find_studies(access)
    expected = {*stored["studies"], stored["uids"]["dx_breast"]}
    assert {s.study_uid for s in found} == expected  # neither the CT nor the DX CHEST study
    assert [s.study_date for s in found] == sorted(s.study_date for s in found)
    assert all(s.study_hash == _hash(s.study_uid) and s.study_uid not in repr(s) for s in found)


def test_find_by_study_uid_and_date(stored: dict, access: ArchiveAccess) -> None:
    first = stored["first"]
    assert [s.study_uid for s in find_studies(access, study_uid=first)] == [first]
    assert find_studies(access, study_uid=stored["uids"]["ct"]) == []
    assert find_studies(access, study_uid=stored["uids"]["dx_chest"]) == []
    later = {s.study_uid for s in find_studies(access, since="20200102")}
    assert later == {*stored["studies"], stored["uids"]["dx_breast"]} - {first}
    assert {s.study_uid for s in find_studies(access, since="2020-01-03")} == {stored["uids"]["dx_breast"]}
    assert find_studies(access, since="2020-01-06") == []
    with pytest.raises(InvalidInputError, match="not a date"):
        find_studies(access, since="last tuesday")


# ------------------------------------------------------------------------------------------------------ pull


@pytest.fixture(scope="module")
def pulled(stored: dict, access: ArchiveAccess, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("pulled")
    return {"out": out, "result": pull(access, out)}


def test_pull_writes_every_image_equal_to_the_source(stored: dict, pulled: dict) -> None:
    result, out = pulled["result"], pulled["out"]
    assert result.ok and result.written == len(stored["mg"]) + 1  # the MG images and the DX BREAST one
    by_hash = {s.study_hash: s for s in result.studies}
    first = by_hash[_hash(stored["first"])]
    assert first.written == 4 and first.skipped["not a mammography image (Modality SR)"] == 1
    sources = {str(pydicom.dcmread(p).SOPInstanceUID): pydicom.dcmread(p) for p in stored["mg"]}
    written = sorted(out.rglob("*.dcm"))
    assert len(written) == result.written
    for path in written:
        ds = pydicom.dcmread(path)
        study, series, sop = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        assert path.relative_to(out).parts == (_hash(study), _hash(series), f"{_hash(sop)}.dcm")
        if sop in sources:
            source = sources.pop(sop)
            assert ds.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
            assert ds.PixelData == source.PixelData
            assert (ds.Rows, ds.Columns, ds.StudyInstanceUID) == (source.Rows, source.Columns, source.StudyInstanceUID)
    assert not sources  # every MG image came
    assert {pydicom.dcmread(p).file_meta.TransferSyntaxUID.is_compressed for p in written} == {True, False}


def test_no_uid_in_any_written_path(stored: dict, pulled: dict) -> None:
    uids = set()
    for path in [*stored["mg"], stored["sr"], *stored["files"].values()]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        uids |= {str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)}
    names = [str(p.relative_to(pulled["out"])) for p in pulled["out"].rglob("*")]
    assert names and not [n for n in names if any(uid in n for uid in uids)]


def test_pull_again_skips_what_is_on_disk(stored: dict, access: ArchiveAccess, pulled: dict) -> None:
    before = {p: p.stat().st_mtime_ns for p in pulled["out"].rglob("*.dcm")}
    again = pull(access, pulled["out"])
    assert again.ok and again.written == 0
    assert sum(s.skipped.get(ALREADY_ON_DISK, 0) for s in again.studies) == len(before)
    assert {p: p.stat().st_mtime_ns for p in pulled["out"].rglob("*.dcm")} == before


def test_pull_one_study(stored: dict, access: ArchiveAccess, tmp_path: Path) -> None:
    assert pull(access, tmp_path, study_uid=stored["uids"]["ct"]).studies == ()
    result = pull(access, tmp_path, study_uid=stored["first"])
    assert [s.study_hash for s in result.studies] == [_hash(stored["first"])] and result.written == 4


# ------------------------------------------------------------------------------------------------------ push


def _results(folder: Path, study_uid: str, n: int) -> list[Path]:
    """`n` small secondary captures of `study_uid`, as mammokit's results would be."""
    return [_small(folder / f"result{i}.dcm", study_uid, modality="OT", sop_class=SECONDARY_CAPTURE, date="20200101")
            for i in range(n)]


def _on_archive(access: ArchiveAccess, files: list[Path]) -> list[bool]:
    web = client(access)
    return [bool(web.search_for_instances(search_filters={
        "SOPInstanceUID": str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)})) for f in files]


def test_push_stores_files_and_names_the_bad_ones(stored: dict, access: ArchiveAccess, tmp_path: Path) -> None:
    files = _results(tmp_path, stored["first"], 3)
    garbage = tmp_path / "notes.dcm"
    garbage.write_text("not DICOM at all")
    missing = tmp_path / "gone.dcm"
    result = push(access, [files[0], garbage, *files[1:], missing])
    assert result.stored == files and not result.ok
    assert [(r.path, r.reason) for r in result.failed] == [(garbage, "not a DICOM file (InvalidDicomError)"),
                                                           (missing, "file not found")]
    assert str(result.records[1]) == f"{garbage}: not a DICOM file (InvalidDicomError)"
    assert _on_archive(access, files) == [True] * 3
    assert push(access, files).stored == files  # storing again is harmless


def test_push_survives_an_archive_restart(stored: dict, server: OrthancServer, access: ArchiveAccess,
                                          tmp_path: Path) -> None:
    files = _results(tmp_path, stored["first"], 8)
    old = server.process
    restart = threading.Thread(target=server.restart)
    restart.start()
    deadline = time.monotonic() + 20
    while old is not None and old.poll() is None and time.monotonic() < deadline:  # push while it is down
        time.sleep(0.005)
    result = push(access, files, batch_size=2)
    restart.join()
    assert result.ok and result.stored == files, result.failed
    assert result.requests > 4  # some were sent again
    assert _on_archive(access, files) == [True] * 8


def test_push_to_an_archive_that_stays_away_records_every_file(stored: dict, tmp_path: Path) -> None:
    files = _results(tmp_path, stored["first"], 2)
    away = ArchiveAccess(f"http://127.0.0.1:{free_port()}/dicom-web", USER, PASSWORD, timeout_s=2)
    started = time.monotonic()
    result = push(away, files, max_wait_s=1.0)
    assert time.monotonic() - started < 10
    assert [r.path for r in result.failed] == files
    assert all(r.reason.startswith("not stored: the archive was unavailable for 1 s") for r in result.failed)


# ---------------------------------------------------------------------------------------------------- access


def test_refused_credentials_are_one_clear_line(stored: dict, server: OrthancServer, tmp_path: Path) -> None:
    wrong = ArchiveAccess(server.dicomweb, USER, "hunter2-wrong")
    for call in (lambda: find_studies(wrong), lambda: pull(wrong, tmp_path),
                 lambda: push(wrong, [stored["files"]["ct"]])):
        with pytest.raises(CredentialsRefusedError) as err:
            call()
        message = str(err.value)
        assert isinstance(err.value, InvalidInputError) and "\n" not in message
        assert message.startswith(f"{server.dicomweb}: the archive refused the credentials (HTTP 401)")
        assert ENV_USER in message and str(default_config_file()) in message
        assert "hunter2" not in message and PASSWORD not in message
    assert "hunter2" not in repr(wrong)


def _config(path: Path, url: str, mode: int, **entry: str) -> Path:
    lines = ["archives:", "  - url: http://elsewhere.example/dicom-web", "    username: other", "    password: other",
             f"  - url: {url}"] + [f"    {k}: {v!r}" for k, v in entry.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(mode)
    return path


def test_config_file_must_be_private(stored: dict, server: OrthancServer, tmp_path: Path) -> None:
    path = _config(tmp_path / "pacs.yaml", server.url, 0o644, username=USER, password=PASSWORD)
    with pytest.raises(InvalidInputError) as err:
        load_access(server.dicomweb, config_file=path)
    assert str(err.value).endswith(f"chmod 600 {path}") and "(mode 0644)" in str(err.value)
    assert PASSWORD not in str(err.value)
    path.chmod(0o600)
    access = load_access(server.dicomweb, config_file=path)  # the entry's url is a prefix of the DICOMweb root
    assert (access.username, access.password, access.source) == (USER, PASSWORD, str(path))
    assert PASSWORD not in repr(access)
    assert {s.study_uid for s in find_studies(access)} >= set(stored["studies"])
    with pytest.raises(MissingInputError):
        load_access(server.dicomweb, config_file=tmp_path / "absent.yaml")


def test_default_config_file_and_no_match(server: OrthancServer) -> None:
    path = default_config_file()
    try:
        _config(path, server.dicomweb, 0o600, username=USER, password=PASSWORD, timeout_s="12")
        access = load_access(server.dicomweb + "/")
        assert (access.url, access.username, access.timeout_s) == (server.dicomweb, USER, 12.0)
        assert load_access("http://127.0.0.1:1/dicom-web").username is None  # no entry for it: no credentials
        path.chmod(0o640)
        with pytest.raises(InvalidInputError, match="chmod 600"):
            load_access(server.dicomweb)
    finally:
        path.unlink()


def test_env_credentials(stored: dict, server: OrthancServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_USER, USER)
    with pytest.raises(InvalidInputError, match="set both"):
        load_access(server.dicomweb)
    monkeypatch.setenv(ENV_PASSWORD, PASSWORD)
    access = load_access(server.dicomweb)
    assert (access.username, access.source) == (USER, "environment")
    assert len(find_studies(access)) == 3
    with pytest.raises(InvalidInputError, match="credentials do not belong in the URL"):
        load_access(f"http://{USER}:secret@127.0.0.1:{server.http_port}/dicom-web")


# ------------------------------------------------------------------------------------------------------- TLS


def test_verify_is_wired_to_the_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv(ENV_CA_BUNDLE, str(bundle))
    assert http_session(load_access("https://pacs.example/dicom-web")).verify == str(bundle)
    assert http_session(load_access("http://pacs.example/dicom-web")).verify is True  # plain http: nothing to verify
    monkeypatch.setenv(ENV_CA_BUNDLE, str(tmp_path / "absent.pem"))
    with pytest.raises(MissingInputError, match="CA bundle not found"):
        load_access("https://pacs.example/dicom-web")


class _EmptyQido(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads, block_on_close = True, False  # a client's idle keep-alive connection must not hold shutdown


@pytest.fixture
def tls_archive(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An https QIDO endpoint on loopback with a self-signed certificate (made by openssl); (url, certificate)."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    httpd = _Server(("127.0.0.1", 0), _EmptyQido)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}/dicom-web", cert
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_https_is_verified_with_the_ca_bundle(tls_archive: tuple[str, Path]) -> None:
    url, cert = tls_archive
    assert find_studies(ArchiveAccess(url, ca_bundle=cert, timeout_s=5)) == []
    started = time.monotonic()
    with pytest.raises(ArchiveUnreachableError, match="TLS certificate is not trusted") as err:
        find_studies(ArchiveAccess(url, timeout_s=5))  # the system's trust store does not know it
    assert "\n" not in str(err.value) and time.monotonic() - started < 5  # refused at once, not retried
