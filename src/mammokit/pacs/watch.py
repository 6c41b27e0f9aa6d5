"""`watch`: follow a DICOMweb archive's new mammography studies and process each once (pull, predict, push back).

New studies come from Orthanc's change feed (`GET <base>/changes`, events `StableStudy`, base = the URL without
`/dicom-web`), else, on an archive without one, from polling QIDO-RS by StudyDate: a study is taken once two polls
`poll_s` apart count the same number of instances. A poll asks for StudyDate >= yesterday (or the earliest date of
a study still settling or to be tried again, never before `since`); the first poll asks from `since` (None: every
study), so a study whose StudyDate is older than that when it reaches the archive is not seen.

Each new study is pulled into `out_dir/incoming/<study hash>`, predicted by `node.process_study` into
`out_dir/results`, and its result objects are pushed back with STOW-RS.

The state file (JSON, rewritten atomically, names studies by salted hash only) lets a restarted watch neither
repeat nor lose a study:

    {"version": 1, "archive": URL, "feed": "changes" | "qido",
     "last_change": N,            # the change feed's sequence number handled last
     "poll_since": "YYYYMMDD",    # QIDO polling: the StudyDate the next poll asks from (null: every date)
     "settling": {hash: count},   # QIDO polling: instances seen at the last poll, for studies not yet stable
     "studies": {hash: {"status": "done" | "failed" | "not-mammography", "reason": str, "attempts": n,
                        "retry": bool, "updated": ISO time, "results": n, "orthanc_id": id}}}

A study already recorded is never taken again (the SR/SEG/SC mammokit pushes back make the archive announce the
study anew; that announcement is ignored), except a "failed" one whose failure may pass (archive trouble, a push not
acknowledged): it is tried again on the next cycles, `MAX_ATTEMPTS` times in all. The `last_change` moves past a
study only once its status is written, so a watch killed mid-study does that study again on restart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from mammokit.config import one_line
from mammokit.errors import InvalidInputError, MissingInputError
from mammokit.ids import hash_id, resolve_salt
from mammokit.io import atomic_write_text
from mammokit.pacs.access import (
    ArchiveAccess,
    ArchiveUnreachableError,
    CredentialsRefusedError,
    access_error,
    check_response,
    http_session,
)
from mammokit.pacs.dicomweb import StudyRef, client, date_range, find_studies, pull_study, push, study_dir

__all__ = ["DONE", "FAILED", "NOT_MAMMOGRAPHY", "WatchState", "watch"]

log = logging.getLogger("mammokit.pacs.watch")

DONE, FAILED, NOT_MAMMOGRAPHY = "done", "failed", "not-mammography"
FEEDS = ("auto", "changes", "qido")
STATE_VERSION = 1
MAX_ATTEMPTS = 3  # a study whose failure may pass is tried this many times in all
CHANGES_PAGE = 100
DICOMWEB_SUFFIX = "/dicom-web"
INCOMING, RESULTS = "incoming", "results"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class WatchState:
    """The state file's contents (see the module docstring)."""

    archive: str
    feed: str = ""
    last_change: int = 0
    poll_since: str | None = None
    settling: dict[str, int] = field(default_factory=dict)
    studies: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, archive: str) -> WatchState:
        """The state in `path` (a fresh one when the file does not exist)."""
        if not path.exists():
            return cls(archive=archive)
        try:
            data = json.loads(path.read_text())
            state = cls(archive=str(data["archive"]), feed=str(data.get("feed", "")),
                        last_change=int(data.get("last_change", 0)), poll_since=data.get("poll_since"),
                        settling={str(k): int(v) for k, v in data.get("settling", {}).items()},
                        studies={str(k): dict(v) for k, v in data.get("studies", {}).items()})
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
            raise InvalidInputError(f"{path}: unreadable watch state ({type(err).__name__}); move it away to start "
                                    "afresh (every study on the archive is then considered new)") from err
        if state.archive != archive:
            raise InvalidInputError(f"{path}: this state follows {state.archive}, not {archive}: use another state "
                                    "file per archive")
        return state

    def save(self, path: Path) -> None:
        data = {"version": STATE_VERSION, "archive": self.archive, "feed": self.feed, "last_change": self.last_change,
                "poll_since": self.poll_since, "settling": self.settling, "studies": self.studies}
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def settled(self, study_hash: str) -> bool:
        """Whether the study needs no (further) attempt."""
        entry = self.studies.get(study_hash)
        return entry is not None and not (entry["status"] == FAILED and entry.get("retry")
                                          and int(entry.get("attempts", 0)) < MAX_ATTEMPTS)

    def record(self, study_hash: str, status: str, reason: str = "", *, retry: bool = False, **extra: Any) -> None:
        attempts = int(self.studies.get(study_hash, {}).get("attempts", 0)) + (status != NOT_MAMMOGRAPHY)
        entry = {**self.studies.get(study_hash, {}), **extra, "status": status, "reason": reason,
                 "attempts": attempts, "retry": bool(retry and status == FAILED and attempts < MAX_ATTEMPTS),
                 "updated": now()}
        self.studies[study_hash] = entry
        self.settling.pop(study_hash, None)


@dataclass
class _Watch:
    """One watch run: the archive, the model, the folders and the state."""

    access: ArchiveAccess
    model: Path
    out_dir: Path
    state_file: Path
    state: WatchState
    predict: dict[str, Any]
    keep_incoming: bool
    since: str | None
    once: bool
    stop: threading.Event
    handled: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.session = http_session(self.access)
        self.web = client(self.access)
        self.base = self.access.url.removesuffix(DICOMWEB_SUFFIX)

    def save(self) -> None:
        self.state.save(self.state_file)

    # --------------------------------------------------------------------------------------- one study

    def process(self, ref: StudyRef, orthanc_id: str | None = None) -> str:
        """Pull, predict and push one mammography study; records and returns its status."""
        h, extra = ref.study_hash, ({"orthanc_id": orthanc_id} if orthanc_id else {})
        log.info("study %s: new mammography study, processing", h)
        try:
            status, reason, retry, more = self._run(ref)
        except CredentialsRefusedError:
            raise
        except Exception as err:  # a bug in one study must not stop a running watch (a `once` one re-raises)
            self.state.record(h, FAILED, f"unexpected {type(err).__name__}", retry=True, **extra)
            self.save()
            self.handled[h] = FAILED
            if self.once:
                raise
            log.error("study %s: unexpected %s", h, type(err).__name__, exc_info=True)
            return FAILED
        self.state.record(h, status, reason, retry=retry, **extra, **more)
        self.save()
        self.handled[h] = status
        if self.state.settled(h) and not self.keep_incoming:  # kept while a retry may reuse it
            shutil.rmtree(study_dir(self.out_dir / INCOMING, h), ignore_errors=True)
        if status == DONE:
            log.info("study %s: done, %d result object(s) stored on the archive", h, more.get("results", 0))
        else:
            log.warning("study %s: %s: %s%s", h, status, reason, " (will try again)" if self.state.studies[h]["retry"]
                        else "")
        return status

    def _run(self, ref: StudyRef) -> tuple[str, str, bool, dict[str, Any]]:
        """(status, reason, whether a retry may help, extra state fields)."""
        from mammokit.pacs.node import process_study  # the prediction stack loads only when a study comes

        incoming = self.out_dir / INCOMING
        pulled = pull_study(self.access, ref, incoming, web=self.web)
        if not pulled.ok:
            first = pulled.error or f"{len(pulled.failed)} instance(s) not retrieved: {pulled.failed[0][1]}"
            return FAILED, f"pull: {first}", True, {}
        if pulled.images == 0:
            return NOT_MAMMOGRAPHY, "no mammography image in the study", False, {}
        folder = study_dir(incoming, ref.study_hash)
        try:
            result = process_study(self.model, folder, self.out_dir / RESULTS, **self.predict)
        except (InvalidInputError, MissingInputError) as err:
            return FAILED, f"predict: {one_line(str(err))}", False, {}
        pushed = push(self.access, result.result_files)
        if not pushed.ok:
            bad = pushed.failed
            return FAILED, f"push: {len(bad)} of {len(pushed.records)} result(s) not stored: {bad[0].reason}", True, {}
        return DONE, "", False, {"results": len(result.result_files)}

    def consider(self, study_uid: str, orthanc_id: str | None = None) -> str | None:
        """Process the study unless the state settled it; a study that is not mammography is recorded as such."""
        h = hash_id(study_uid, resolve_salt()) or ""
        if self.state.settled(h):
            return None
        refs = find_studies(self.access, study_uid=study_uid, web=self.web)
        if not refs:
            self.state.record(h, NOT_MAMMOGRAPHY, "no MG series, nor DX/CR of body part BREAST")
            self.save()
            self.handled[h] = NOT_MAMMOGRAPHY
            log.info("study %s: not mammography, ignored", h)
            return NOT_MAMMOGRAPHY
        if self.since and (refs[0].study_date or "") < self.since:
            return None
        return self.process(refs[0], orthanc_id)

    # ---------------------------------------------------------------------------------- Orthanc changes

    def get(self, route: str) -> Any:
        """GET a route of the archive's REST API as JSON (None for 404)."""
        try:
            response = check_response(self.session.get(f"{self.base}{route}"), self.access)
        except requests.RequestException as err:
            raise access_error(err, self.access, f"reading {route.split('?')[0]}") from err
        if response.status_code == 404:
            return None
        if not response.ok:
            raise InvalidInputError(f"{self.base}{route.split('?')[0]}: HTTP {response.status_code} {response.reason}")
        try:
            return response.json()
        except ValueError:
            return None

    def has_changes(self) -> bool:
        """Whether the archive has Orthanc's change feed."""
        try:
            answer = self.get("/changes?limit=0")
        except (ArchiveUnreachableError, CredentialsRefusedError):
            raise
        except InvalidInputError:
            return False
        return isinstance(answer, dict) and "Changes" in answer

    def changes_cycle(self) -> bool:
        """Retry what may pass, then handle every change since the last; returns False (nothing left settling)."""
        for h, entry in list(self.state.studies.items()):
            if not self.state.settled(h) and entry.get("orthanc_id"):
                study = self.get(f"/studies/{entry['orthanc_id']}")
                uid = (study or {}).get("MainDicomTags", {}).get("StudyInstanceUID")
                if uid:
                    self.consider(uid, entry["orthanc_id"])
        while True:
            page = self.get(f"/changes?since={self.state.last_change}&limit={CHANGES_PAGE}") or {}
            changes = page.get("Changes", [])
            if not changes and int(page.get("Last", self.state.last_change)) < self.state.last_change:
                log.warning("the archive's change feed restarted (its database was reset?): reading it from the start")
                self.state.last_change = 0
                continue
            for change in changes:
                if self.stop.is_set():
                    break
                if change.get("ChangeType") == "StableStudy":
                    self.stable_study(str(change.get("ID", "")))
                self.state.last_change = max(self.state.last_change, int(change.get("Seq", 0)))
            self.save()
            if page.get("Done", True) or not changes or self.stop.is_set():
                return False

    def stable_study(self, orthanc_id: str) -> None:
        study = self.get(f"/studies/{orthanc_id}")
        uid = (study or {}).get("MainDicomTags", {}).get("StudyInstanceUID")
        if uid:  # None: deleted since
            self.consider(uid, orthanc_id)

    # ----------------------------------------------------------------------------------------- QIDO poll

    def qido_cycle(self) -> bool:
        """Poll QIDO by StudyDate; process the studies whose instance count held since the last poll. Returns
        whether studies are still settling."""
        since = max(self.state.poll_since or "", self.since or "") or None
        settling, waiting = {}, []
        for ref in find_studies(self.access, since=since, web=self.web):
            h = ref.study_hash
            if self.state.settled(h) or self.stop.is_set():
                continue
            if ref.instances is not None and self.state.settling.get(h) == ref.instances:
                self.process(ref)
                if self.state.settled(h):
                    continue
            else:
                settling[h] = ref.instances if ref.instances is not None else -1
            waiting.append(ref.study_date or "")
        self.state.settling = settling
        yesterday = (dt.date.today() - dt.timedelta(days=1)).strftime("%Y%m%d")
        self.state.poll_since = max(min([yesterday, *waiting]), self.since or "") or None
        self.save()
        return bool(settling)


@contextlib.contextmanager
def _locked(state_file: Path) -> Iterator[None]:
    """Hold `<state file>.lock` (one watch per state file)."""
    state_file.parent.mkdir(parents=True, exist_ok=True)
    lock = state_file.with_name(state_file.name + ".lock")
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise InvalidInputError(f"{state_file}: another watch uses this state file") from err
        yield


def watch(access: ArchiveAccess, model: str | Path, out_dir: str | Path, *, state_file: str | Path,
          poll_s: float = 30.0, once: bool = False, heatmap: str = "saliency", workers: int = 1, device: str = "auto",
          stop: threading.Event | None = None, feed: str = "auto", since: str | dt.date | None = None,
          keep_incoming: bool = False, mc_passes: int = 0) -> dict[str, str]:
    """Follow the archive and process each new stable mammography study once (see the module docstring).

    Args:
        access: the archive (its DICOMweb root URL).
        model: a released model folder.
        out_dir: `incoming/` (pulled studies, removed once done or failed for good, unless `keep_incoming`) and
            `results/` (what `node.process_study` writes) go here.
        state_file: the watch's JSON state (created when missing).
        poll_s: seconds between cycles.
        once: handle what is pending now and return (QIDO polling: two polls `poll_s` apart when studies settle).
        heatmap, workers, device, mc_passes: as for `mammokit predict`.
        stop: ends the watch once set (checked between studies and while waiting).
        feed: "auto" (Orthanc's change feed when the archive has one, else QIDO), "changes" or "qido".
        since: only studies of this StudyDate or later (YYYYMMDD or ISO); None takes every study the feed reports
            (on Orthanc, a fresh state then goes through the whole change history).

    Returns:
        study hash -> status, for the studies handled by this call.

    Raises:
        CredentialsRefusedError: the archive refused the credentials (at any time).
        ArchiveUnreachableError: with `once`, when the archive cannot be reached (a running watch waits instead).
    """
    if feed not in FEEDS:
        raise InvalidInputError(f"feed={feed!r}: expected one of {', '.join(FEEDS)}")
    if poll_s <= 0:
        raise InvalidInputError(f"poll_s={poll_s}: must be positive")
    model, out_dir, state_file = Path(model), Path(out_dir), Path(state_file)
    if not model.exists():
        raise MissingInputError(f"{model}: model not found")
    stop = stop or threading.Event()
    with _locked(state_file):
        run = _Watch(access, model, out_dir, state_file, WatchState.load(state_file, access.url),
                     {"heatmap": heatmap, "workers": workers, "device": device, "mc_passes": mc_passes}, keep_incoming,
                     (date_range(since) or "").rstrip("-") or None, once, stop)
        cycle = _choose_feed(run, feed, stop)
        polls = 0
        while not stop.is_set():
            settling = _cycle(run, cycle)
            polls += 1
            if once and not (settling and polls < 2):  # QIDO: a second poll takes the studies that held still
                break
            stop.wait(poll_s)
        return dict(run.handled)


def _choose_feed(run: _Watch, feed: str, stop: threading.Event) -> Any:
    """The cycle function of the feed asked for (auto: the change feed when the archive answers `/changes`)."""
    if feed == "auto":
        feed = run.state.feed or ("changes" if _retry_until_up(run.has_changes, run.once, stop) else "qido")
        log.info("watching %s through %s", run.access.url, "Orthanc's change feed" if feed == "changes" else
                 "QIDO-RS polling by StudyDate")
    if run.state.feed and run.state.feed != feed:
        log.warning("the state followed the %s feed, now %s: studies already recorded are still skipped",
                    run.state.feed, feed)
    run.state.feed = feed
    return run.changes_cycle if feed == "changes" else run.qido_cycle


def _retry_until_up(call: Any, once: bool, stop: threading.Event) -> Any:
    """`call()`, waiting for an unreachable archive unless `once` (a set `stop` ends the wait with False)."""
    delay = 1.0
    while True:
        try:
            return call()
        except ArchiveUnreachableError as err:
            if once:
                raise
            log.warning("%s; trying again in %.0f s", err, delay)
            if stop.wait(delay):
                return False
            delay = min(delay * 2, 60.0)


def _cycle(run: _Watch, cycle: Any) -> bool:
    """One cycle; archive trouble ends a `once` watch, and is waited out by a running one."""
    try:
        return cycle()
    except CredentialsRefusedError:
        raise
    except InvalidInputError as err:
        if run.once:
            raise
        log.warning("watch cycle stopped: %s; trying again in the next cycle", one_line(str(err)))
    return False
