"""DICOMweb with dicomweb-client: find mammography studies (QIDO-RS), pull them (WADO-RS), push results (STOW-RS).

`pull` writes `out_dir/<study hash>/<series hash>/<sop hash>.dcm` (salted hashes, no UID in any path), the layout
`mammokit index` and `mammokit predict` read; an instance already there is not fetched again, and only mammography
images are fetched (MG, or DX/CR of body part BREAST; never SR, SEG, secondary captures or presentation states).
`push` stores files and survives an archive restart: connection errors and 5xx are retried with backoff for a
bounded time, re-sending only what the archive has not acknowledged; each file ends stored or with a reason.
Logs name studies by their salted hash only.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import requests
from dicomweb_client import DICOMwebClient
from pydicom.errors import InvalidDicomError

from mammokit.errors import InvalidInputError
from mammokit.ids import hash_id, resolve_salt
from mammokit.io import atomic_write_bytes
from mammokit.pacs.access import ArchiveAccess, CredentialsRefusedError, access_error, check_response, http_session

__all__ = ["PullResult", "PushRecord", "PushResult", "StudyPull", "StudyRef", "client", "find_studies", "pull",
           "push", "study_dir"]

log = logging.getLogger("mammokit.pacs.dicomweb")
# dicomweb-client logs study UIDs at INFO and URLs at DEBUG, and the `retrying` package it wraps every request in logs
# each failed request's traceback (its message holds the URL, UIDs included) at WARNING: keep both out of the logs
# unless someone sets their levels explicitly (mammokit reports failures itself, by study hash)
for _name, _level in (("dicomweb_client", logging.WARNING), ("retrying", logging.ERROR)):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(_level)

MAMMO_MODALITY = "MG"
PROJECTION_MODALITIES = ("DX", "CR")  # mammography only when BodyPartExamined is BREAST
BREAST = "BREAST"
# SOP classes that are never an image to predict on: SR, KO (…88.*), presentation states (…11.*), SEG and other
# segmentations / registrations (…66.*), encapsulated documents (…104.*)
NON_IMAGE_SOP_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.",
                          "1.2.840.10008.5.1.4.1.1.66", "1.2.840.10008.5.1.4.1.1.104.")
ALREADY_ON_DISK = "already on disk"
PUSH_MAX_WAIT_S = 300.0  # how long push keeps retrying an unreachable archive before giving a file up
PUSH_BATCH = 16  # files per STOW-RS request
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 10.0
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
STORED_TAG = "ReferencedSOPSequence"
FAILED_TAG = "FailedSOPSequence"


# ------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class StudyRef:
    """One mammography study on the archive (the UID is kept out of `repr`, so it does not reach a log by accident)."""

    study_uid: str = field(repr=False)
    study_hash: str
    study_date: str | None = None
    modalities: tuple[str, ...] = ()
    instances: int | None = None


@dataclass(frozen=True)
class StudyPull:
    """What `pull` did for one study: instances written, skipped (reason -> count) and failed (sop hash, reason)."""

    study_hash: str
    folder: Path
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    failed: tuple[tuple[str, str], ...] = ()
    error: str | None = None  # the study could not be listed at all

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed

    @property
    def images(self) -> int:
        """Mammography images of this study now on disk (written now or before)."""
        return self.written + self.skipped.get(ALREADY_ON_DISK, 0)


@dataclass(frozen=True)
class PullResult:
    """One record per study found."""

    studies: tuple[StudyPull, ...] = ()

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.studies)

    @property
    def written(self) -> int:
        return sum(s.written for s in self.studies)

    @property
    def failed(self) -> int:
        return sum(len(s.failed) + (s.error is not None) for s in self.studies)


@dataclass(frozen=True)
class PushRecord:
    """The outcome of one file: stored, or not with the reason."""

    path: Path
    stored: bool
    reason: str = ""
    sop_hash: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {'stored' if self.stored else self.reason}"


@dataclass(frozen=True)
class PushResult:
    """One record per file given to `push`, in the order given; `requests` counts the STOW-RS requests made."""

    records: tuple[PushRecord, ...] = ()
    requests: int = 0

    @property
    def ok(self) -> bool:
        return all(r.stored for r in self.records)

    @property
    def stored(self) -> list[Path]:
        return [r.path for r in self.records if r.stored]

    @property
    def failed(self) -> list[PushRecord]:
        return [r for r in self.records if not r.stored]


# ------------------------------------------------------------------------------------------------- find


def client(access: ArchiveAccess, *, retry: bool = True) -> DICOMwebClient:
    """A dicomweb-client for `access.url` on `http_session(access, retry=retry)`: the session's retries are the only
    ones (dicomweb-client's own, up to 30 s more on a 503, are off)."""
    web = DICOMwebClient(access.url, session=http_session(access, retry=retry), timeout=access.timeout_s)
    web.set_http_retry_params(retry=False)
    return web


def _value(item: dict[str, Any], keyword: str) -> Any:
    """The first value of `keyword` in a DICOM JSON object, or None."""
    tag = f"{pydicom.datadict.tag_for_keyword(keyword):08X}"
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def _values(item: dict[str, Any], keyword: str) -> list[Any]:
    tag = f"{pydicom.datadict.tag_for_keyword(keyword):08X}"
    return list(item.get(tag, {}).get("Value") or [])


def date_range(since: str | dt.date | None) -> str | None:
    """`since` (a date, "YYYYMMDD" or ISO "YYYY-MM-DD") as the QIDO StudyDate range "YYYYMMDD-"."""
    if since is None:
        return None
    if isinstance(since, dt.datetime):
        since = since.date()
    if isinstance(since, dt.date):
        return since.strftime("%Y%m%d") + "-"
    text = str(since).strip()
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, fmt).strftime("%Y%m%d") + "-"
        except ValueError:
            continue
    raise InvalidInputError(f"since={since!r}: not a date (YYYYMMDD or YYYY-MM-DD)")


def is_mammography_series(modality: str | None, body_part: str | None) -> bool:
    """MG, or DX/CR of body part BREAST."""
    modality = (modality or "").upper()
    return modality == MAMMO_MODALITY or (modality in PROJECTION_MODALITIES and (body_part or "").upper() == BREAST)


def find_studies(access: ArchiveAccess, *, study_uid: str | None = None, since: str | dt.date | None = None,
                 web: DICOMwebClient | None = None) -> list[StudyRef]:
    """The archive's mammography studies (QIDO-RS): ModalitiesInStudy MG, or DX/CR with a BREAST series.

    `study_uid` narrows to one study; `since` to studies of that date or later; `web` reuses a `client(access)`.
    Sorted by date, then hash.
    """
    return _find(web or client(access), access, study_uid=study_uid, since=since)


def _find(web: DICOMwebClient, access: ArchiveAccess, *, study_uid: str | None,
          since: str | dt.date | None) -> list[StudyRef]:
    filters: dict[str, Any] = {}
    if study_uid:
        filters["StudyInstanceUID"] = study_uid
    if since is not None:
        filters["StudyDate"] = date_range(since)
    salt, found = resolve_salt(), {}
    for modality in (MAMMO_MODALITY, *PROJECTION_MODALITIES):
        # one request, no paging: Orthanc 1.10 / DICOMweb 1.7 ignores `offset` without `limit` (dicomweb-client's
        # get_remaining then never ends) and applies `limit` before `offset`; a capped answer is logged by the client
        for item in _search(access, "searching studies", web.search_for_studies,
                            fields=["ModalitiesInStudy", "NumberOfStudyRelatedInstances"],
                            search_filters={**filters, "ModalitiesInStudy": modality}):
            uid = _value(item, "StudyInstanceUID")
            if not uid or uid in found:
                continue
            if modality != MAMMO_MODALITY and not _has_breast_series(web, access, uid):
                continue
            found[uid] = StudyRef(study_uid=uid, study_hash=hash_id(uid, salt) or "",
                                  study_date=_value(item, "StudyDate"),
                                  modalities=tuple(_values(item, "ModalitiesInStudy")),
                                  instances=_int(_value(item, "NumberOfStudyRelatedInstances")))
    return sorted(found.values(), key=lambda s: (s.study_date or "", s.study_hash))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _search(access: ArchiveAccess, doing: str, method: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """A QIDO call with refused credentials and network trouble as one-line errors."""
    try:
        return method(*args, **kwargs)
    except requests.RequestException as err:
        raise access_error(err, access, doing) from err


def _series(web: DICOMwebClient, access: ArchiveAccess, study_uid: str) -> list[dict[str, Any]]:
    return _search(access, "listing series", web.search_for_series, study_uid,
                   fields=["Modality", "BodyPartExamined", "NumberOfSeriesRelatedInstances"])


def _has_breast_series(web: DICOMwebClient, access: ArchiveAccess, study_uid: str) -> bool:
    return any(is_mammography_series(_value(s, "Modality"), _value(s, "BodyPartExamined"))
               for s in _series(web, access, study_uid))


# ------------------------------------------------------------------------------------------------- pull


def study_dir(out_dir: str | Path, study_hash: str) -> Path:
    """Where `pull` puts a study: `out_dir/<study hash>`."""
    return Path(out_dir) / study_hash


def pull(access: ArchiveAccess, out_dir: str | Path, *, study_uid: str | None = None,
         since: str | dt.date | None = None) -> PullResult:
    """Fetch the mammography images of every study `find_studies` finds into `out_dir` (see the module docstring).

    One failing study does not stop the others: its record says what failed. Refused credentials raise.
    """
    web = client(access)
    records = []
    for ref in _find(web, access, study_uid=study_uid, since=since):
        records.append(pull_study(access, ref, out_dir, web=web))
    return PullResult(studies=tuple(records))


def pull_study(access: ArchiveAccess, ref: StudyRef, out_dir: str | Path, *,
               web: DICOMwebClient | None = None) -> StudyPull:
    """Fetch one study's mammography images into `study_dir(out_dir, ref.study_hash)`."""
    web = web or client(access)
    folder, salt = study_dir(out_dir, ref.study_hash), resolve_salt()
    skipped: Counter[str] = Counter()
    failed: list[tuple[str, str]] = []
    written = 0
    try:
        for series in _series(web, access, ref.study_uid):
            series_uid, modality = _value(series, "SeriesInstanceUID"), _value(series, "Modality")
            if not is_mammography_series(modality, _value(series, "BodyPartExamined")):
                count = _int(_value(series, "NumberOfSeriesRelatedInstances")) or 1
                skipped[f"not a mammography image (Modality {modality or 'missing'})"] += count
                continue
            series_folder = folder / (hash_id(series_uid, salt) or "series")
            n, skip, fail = _pull_series(web, access, ref.study_uid, series_uid, series_folder, salt)
            written, skipped, failed = written + n, skipped + skip, failed + fail
    except CredentialsRefusedError:
        raise
    except InvalidInputError as err:
        reason = _without(str(err), access)
        log.warning("study %s: %s", ref.study_hash, reason)
        return StudyPull(ref.study_hash, folder, written, dict(skipped), tuple(failed), error=reason)
    log.info("study %s: %d images written, %d skipped, %d failed", ref.study_hash, written, sum(skipped.values()),
             len(failed))
    return StudyPull(ref.study_hash, folder, written, dict(skipped), tuple(failed))


def _without(message: str, access: ArchiveAccess) -> str:
    """`message` without the archive URL in front (the record is about the study, the URL is known)."""
    return message.removeprefix(f"{access.url}: ")


def _pull_series(web: DICOMwebClient, access: ArchiveAccess, study_uid: str, series_uid: str, folder: Path,
                 salt: str) -> tuple[int, Counter[str], list[tuple[str, str]]]:
    written, skipped, failed = 0, Counter[str](), []
    for item in _search(access, "listing instances", web.search_for_instances, study_uid, series_uid,
                        fields=["SOPClassUID"]):
        sop_uid, sop_class = _value(item, "SOPInstanceUID"), str(_value(item, "SOPClassUID") or "")
        if not sop_uid:
            failed.append(("?", "the archive listed an instance without SOPInstanceUID"))
            continue
        sop_hash = hash_id(sop_uid, salt) or ""
        path = folder / f"{sop_hash}.dcm"
        if sop_class.startswith(NON_IMAGE_SOP_PREFIXES):
            skipped["not an image (SOP class " + sop_class + ")"] += 1
        elif path.is_file():
            skipped[ALREADY_ON_DISK] += 1
        elif (reason := _fetch(web, access, study_uid, series_uid, sop_uid, path)) is None:
            written += 1
        else:
            failed.append((sop_hash, reason))
    return written, skipped, failed


def _fetch(web: DICOMwebClient, access: ArchiveAccess, study_uid: str, series_uid: str, sop_uid: str,
           path: Path) -> str | None:
    """WADO-RS one instance (any transfer syntax) and write it atomically; None, or why it failed."""
    try:
        ds = web.retrieve_instance(study_uid, series_uid, sop_uid)
    except requests.RequestException as err:
        return _without(str(access_error(err, access, "retrieving an instance")), access)
    except (InvalidDicomError, ValueError, EOFError) as err:
        return f"the archive sent an unreadable instance ({type(err).__name__})"
    if str(ds.get("SOPInstanceUID", "")) != sop_uid:
        return "the archive sent another instance than the one asked for"
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    atomic_write_bytes(path, buffer.getvalue())
    return None


# ------------------------------------------------------------------------------------------------- push


@dataclass
class _Pending:
    path: Path
    sop_uid: str
    sop_hash: str
    single: bool = False  # send alone (its batch was refused as a whole)


def push(access: ArchiveAccess, files: Iterable[str | Path], *, max_wait_s: float = PUSH_MAX_WAIT_S,
         batch_size: int = PUSH_BATCH) -> PushResult:
    """STOW-RS `files` to the archive, `batch_size` a request; one record per file, in the order given.

    A request that fails without an answer (connection refused or reset, timeout, 408/429/5xx) is sent again after
    0.5, 1, 2 ... 10 s, until the archive has been away for `max_wait_s`; then every file not yet acknowledged gets a
    "not stored" record. Files the archive refuses get its reason; a batch refused as a whole is sent file by file.

    Raises:
        CredentialsRefusedError: the archive refused the credentials (nothing else raises).
    """
    paths = [Path(f) for f in files]
    outcome: dict[Path, PushRecord] = {}
    pending: list[_Pending] = []
    salt = resolve_salt()
    for path in paths:
        item = _pending(path, salt)
        if isinstance(item, PushRecord):
            outcome[path] = item
        else:
            pending.append(item)
    web = client(access, retry=False)
    deadline, delay, count, last_error = time.monotonic() + max_wait_s, BACKOFF_FIRST_S, 0, ""
    while pending:
        batch = [pending[0]] if pending[0].single else [p for p in pending if not p.single][:batch_size]
        count += 1
        answer = _stow(web, access, batch)
        if isinstance(answer, str):  # nothing acknowledged: the archive is away or busy
            last_error = answer
            if time.monotonic() + delay > deadline:
                break
            log.warning("push: %s; retrying %d file(s) in %.1f s", answer, len(pending), delay)
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
            continue
        deadline, delay = time.monotonic() + max_wait_s, BACKOFF_FIRST_S  # the bound is on one outage
        pending = _settle(pending, batch, answer, outcome)
    for item in pending:
        reason = f"not stored: the archive was unavailable for {max_wait_s:g} s ({last_error})"
        outcome[item.path] = PushRecord(item.path, False, reason, item.sop_hash)
    records = tuple(outcome[p] for p in paths)
    stored = sum(r.stored for r in records)
    log.info("push: %d of %d file(s) stored in %d request(s)", stored, len(records), count)
    return PushResult(records=records, requests=count)


def _pending(path: Path, salt: str) -> _Pending | PushRecord:
    """A file to send, or its record when it cannot be sent (missing, not DICOM, no SOPInstanceUID)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except FileNotFoundError:
        return PushRecord(path, False, "file not found")
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError) as err:
        return PushRecord(path, False, f"not a DICOM file ({type(err).__name__})")
    sop_uid = str(ds.get("SOPInstanceUID", "") or "")
    if not sop_uid or "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        return PushRecord(path, False, "not a DICOM file (no SOPInstanceUID or file meta)")
    return _Pending(path, sop_uid, hash_id(sop_uid, salt) or "")


@dataclass(frozen=True)
class _Answer:
    """What one STOW-RS request settled: SOP UIDs stored, SOP UIDs refused (-> reason), or the batch refused whole."""

    stored: frozenset[str] = frozenset()
    refused: dict[str, str] = field(default_factory=dict)
    whole: str | None = None


def _stow(web: DICOMwebClient, access: ArchiveAccess, batch: list[_Pending]) -> _Answer | str:
    """One STOW-RS request: what the archive settled, or (a string) why nothing was acknowledged and the batch
    should be sent again (connection trouble, 408/429/5xx)."""
    try:
        datasets = [pydicom.dcmread(item.path) for item in batch]
    except (OSError, InvalidDicomError, ValueError, EOFError) as err:
        return _Answer(whole=f"cannot read it any more ({type(err).__name__})")
    try:
        return _parse(web.store_instances(datasets))
    except requests.HTTPError as err:
        response = err.response
        check_response(response, access)
        if response.status_code in TRANSIENT_STATUS:
            return f"HTTP {response.status_code} {response.reason}"
        answer = _answer_of(response)
        return answer or _Answer(whole=f"the archive refused it (HTTP {response.status_code})")
    except requests.RequestException as err:
        return _without(str(access_error(err, access, "storing")), access)


def _parse(answer: pydicom.Dataset) -> _Answer:
    stored = frozenset(str(i.get("ReferencedSOPInstanceUID", "")) for i in answer.get(STORED_TAG, []))
    refused = {str(i.get("ReferencedSOPInstanceUID", "")): _failure(i) for i in answer.get(FAILED_TAG, [])}
    return _Answer(stored=stored, refused=refused)


def _answer_of(response: requests.Response) -> _Answer | None:
    """The STOW-RS answer in an error response (a 409 carries the failed SOP list), if it holds one."""
    try:
        answer = pydicom.Dataset.from_json(response.json())
    except Exception:  # any body that is not a DICOM JSON answer
        return None
    return _parse(answer) if FAILED_TAG in answer or STORED_TAG in answer else None


def _settle(pending: list[_Pending], batch: list[_Pending], answer: _Answer,
            outcome: dict[Path, PushRecord]) -> list[_Pending]:
    """Record what `answer` settles for `batch`; returns what is still pending (the rest is sent again)."""
    sent = {id(item) for item in batch}
    left = []
    for item in pending:
        if item.sop_uid in answer.stored:  # a copy of a file sent, too
            outcome[item.path] = PushRecord(item.path, True, "", item.sop_hash)
        elif id(item) not in sent:
            left.append(item)
        elif answer.whole is not None and len(batch) > 1:
            item.single = True  # refused as a whole: send each file alone to find which one the archive refuses
            left.append(item)
        elif answer.whole is not None or item.sop_uid in answer.refused:
            outcome[item.path] = PushRecord(item.path, False, answer.whole or answer.refused[item.sop_uid],
                                            item.sop_hash)
        elif not answer.stored and not answer.refused:
            outcome[item.path] = PushRecord(item.path, False, "the archive acknowledged nothing", item.sop_hash)
        else:
            left.append(item)  # not mentioned while others were: send again
    return left


def _failure(item: pydicom.Dataset) -> str:
    code = item.get("FailureReason")
    return "the archive refused it" + (f" (failure reason 0x{int(code):04X})" if code is not None else "")
