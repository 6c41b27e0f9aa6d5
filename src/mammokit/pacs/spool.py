"""The on-disk spool of `pacs listen`: every received instance and one state file per study, named by salted hashes.

Layout (no UID, no patient name in any path)::

    spool/.lock                          held (flock) by the one listener that owns the spool
    spool/<study hash>/state.json        the study's state (see `StudyState`), rewritten atomically on each change
    spool/<study hash>/images/<sop hash>.dcm    mammograms received while the study was receiving (the input)
    spool/<study hash>/late/<sop hash>.dcm      mammograms received once processing had begun (kept, not processed)
    spool/<study hash>/rejected/<sop hash>.dcm  datasets the reader refuses (cut, garbage); the reason is in the state

Each instance is written to a temporary file, synced and renamed into place (`mammokit.io.atomic_write`), so a file
in the spool is always whole, and its state entry is written before the sender hears "success". Instances that are
not mammography (a wrongly routed CT) are recorded in the state and not kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import threading
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mammokit.dicom import DicomReadError, read_dicom
from mammokit.errors import InvalidInputError
from mammokit.ids import hash_id, resolve_salt
from mammokit.io import atomic_write, atomic_write_text, remove_temp_files

__all__ = ["SCREENING_VIEWS", "STATUSES", "Spool", "Stored", "StudyState"]

log = logging.getLogger("mammokit.pacs.spool")

RECEIVING, PROCESSING, DONE, FAILED, NOT_MAMMOGRAPHY = "receiving", "processing", "done", "failed", "not-mammography"
STATUSES = (RECEIVING, PROCESSING, DONE, FAILED, NOT_MAMMOGRAPHY)
FINAL = frozenset({DONE, FAILED, NOT_MAMMOGRAPHY})
SCREENING_VIEWS = frozenset({"L-CC", "L-MLO", "R-CC", "R-MLO"})
STATE, IMAGES, LATE, REJECTED, INCOMING = "state.json", "images", "late", "rejected", "incoming"
LOCK = ".lock"


def now() -> str:
    """The time of day in UTC, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class StudyState:
    """What the spool knows of one study; `state.json` holds exactly these fields.

    `images`/`late`: sop hash -> view label ("L-CC", "R-MLO", "?" when the header names none); `rejected`:
    sop hash -> why the reader refused it; `other`: sop hash -> what it is (not mammography, not kept);
    `results`: result file (relative to the output folder) -> "sent", "pending" or "not sent: <why>";
    `runs`: how many times the study was handed to `process_study`; `exam` and `warnings`: the prediction's exam
    scores and warnings (images named by hash, e.g. one whose pixels would not decode); `seconds`: where the last
    run's time went (`StudyResult.seconds`, plus "send").
    """

    study_hash: str
    status: str = RECEIVING
    reason: str | None = None
    images: dict[str, str] = field(default_factory=dict)
    late: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    other: dict[str, str] = field(default_factory=dict)
    first_received: str | None = None
    last_received: str | None = None
    runs: int = 0
    prediction_dir: str | None = None
    results: dict[str, str] = field(default_factory=dict)
    exam: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    updated: str | None = None

    @property
    def views(self) -> list[str]:
        return sorted(set(self.images.values()) - {"?"})

    def summary(self) -> dict[str, Any]:
        """The state as `state.json` holds it, plus `received` (images) and `views`."""
        return {**asdict(self), "received": len(self.images), "views": self.views}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudyState:
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in data.items() if k in known})
        if state.status not in STATUSES:
            raise ValueError(f"unknown status {state.status!r}")
        return state


@dataclass(frozen=True)
class Stored:
    """What became of one received instance: `kind` is "image", "late", "rejected" or "other"."""

    study_hash: str
    sop_hash: str
    kind: str
    detail: str  # the view label, the refusal reason or what the instance is


def view_label(laterality: str | None, view: str | None) -> str:
    """ "L-CC" style label of an image ("?" for whatever the header leaves unknown)."""
    return f"{laterality or '?'}-{view or '?'}" if laterality or view else "?"


class Spool:
    """The spool folder of one listener: thread-safe state of every study, and the files received."""

    def __init__(self, root: str | Path, salt: str | None = None) -> None:
        self.root = Path(root)
        self.salt = resolve_salt(salt)
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._states: dict[str, StudyState] = {}
        self._lock_file: Any = None

    # ----------------------------------------------------------------------------------------------- lifecycle

    def open(self) -> Spool:
        """Take the spool (one listener at a time), clean what a killed write left, and load every study's state."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / LOCK, "a")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.close()
            raise InvalidInputError(f"{self.root}: spool in use by another listener") from err
        self._lock_file = handle
        remove_temp_files(self.root)
        self._states = {}
        for path in sorted(self.root.glob(f"*/{STATE}")):
            self._load(path.parent)
        return self

    def close(self) -> None:
        """Release the spool."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _load(self, folder: Path) -> None:
        shutil.rmtree(folder / INCOMING, ignore_errors=True)  # written before a kill, never acknowledged
        try:
            state = StudyState.from_json(json.loads((folder / STATE).read_text()))
        except (OSError, ValueError, TypeError) as err:
            log.error("study %s: unreadable state file, left alone: %s", folder.name, err)
            return
        self._reconcile(folder, state)
        self._states[state.study_hash] = state

    def _reconcile(self, folder: Path, state: StudyState) -> None:
        """Match an unfinished study's state with its files: a file renamed into place just before a kill (never
        acknowledged) is kept when whole, an entry without its file goes."""
        if state.status in FINAL:
            return
        changed = False
        for kind, records in ((IMAGES, state.images), (LATE, state.late)):
            on_disk = {p.stem: p for p in (folder / kind).glob("*.dcm")}
            for sop_hash in set(records) - set(on_disk):
                del records[sop_hash]
                changed = True
            for sop_hash in set(on_disk) - set(records):
                label, problem = check_image(on_disk[sop_hash])
                if problem is None:
                    records[sop_hash] = label
                else:
                    on_disk[sop_hash].unlink()
                changed = True
        if changed:
            self._save(state)

    # ----------------------------------------------------------------------------------------------- access

    def folder(self, study_hash: str) -> Path:
        return self.root / study_hash

    def images_dir(self, study_hash: str) -> Path:
        return self.root / study_hash / IMAGES

    def hash(self, uid: str) -> str:
        digest = hash_id(uid, self.salt)
        if digest is None:
            raise InvalidInputError("an empty UID cannot name a study or an instance")
        return digest

    def studies(self) -> dict[str, StudyState]:
        """A snapshot (copies) of every study's state."""
        with self._guard:
            hashes = list(self._states)
        return {h: s for h in hashes if (s := self.state(h)) is not None}

    def open_studies(self) -> dict[str, StudyState]:
        """A snapshot of the studies still receiving or processing."""
        with self._guard:
            hashes = [h for h, s in self._states.items() if s.status not in FINAL]
        return {h: s for h in hashes if (s := self.state(h)) is not None and s.status not in FINAL}

    def state(self, study_hash: str) -> StudyState | None:
        """A copy of one study's state (None when unknown)."""
        with self._study(study_hash):
            state = self._states.get(study_hash)
            return StudyState.from_json(json.loads(json.dumps(asdict(state)))) if state else None

    @contextlib.contextmanager
    def _study(self, study_hash: str) -> Any:
        with self._guard:
            lock = self._locks.setdefault(study_hash, threading.Lock())
        with lock:
            yield

    def _save(self, state: StudyState) -> None:
        state.updated = now()
        atomic_write_text(self.root / state.study_hash / STATE, json.dumps(asdict(state), indent=1))

    # ----------------------------------------------------------------------------------------------- receiving

    def store(self, study_uid: str, sop_uid: str, data: bytes) -> Stored:
        """Keep one received mammogram: whole and synced on disk, with its state, before this returns."""
        study_hash, sop_hash = self.hash(study_uid), self.hash(sop_uid)
        with self._study(study_hash):
            state = self._states.get(study_hash) or StudyState(study_hash)
            incoming = _write_synced(self.folder(study_hash) / INCOMING / f"{sop_hash}.dcm", data)
            label, problem = check_image(incoming)
            if problem is not None:
                kind, detail, records = REJECTED, problem, state.rejected
            else:
                kind, detail = (IMAGES, label) if state.status == RECEIVING else (LATE, label)
                records = state.images if kind == IMAGES else state.late
            target = self.folder(study_hash) / kind / f"{sop_hash}.dcm"
            target.parent.mkdir(exist_ok=True)
            os.replace(incoming, target)
            _sync_dir(target.parent)
            records[sop_hash] = detail
            if kind != REJECTED:
                state.rejected.pop(sop_hash, None)  # a good copy sent again replaces a refused one
            self._received(state)
            return Stored(study_hash, sop_hash, {IMAGES: "image"}.get(kind, kind), detail)

    def record_other(self, study_uid: str, sop_uid: str, what: str) -> Stored:
        """Record an instance that is not mammography (not kept)."""
        study_hash, sop_hash = self.hash(study_uid), self.hash(sop_uid)
        with self._study(study_hash):
            state = self._states.get(study_hash) or StudyState(study_hash)
            state.other[sop_hash] = what
            self._received(state)
            return Stored(study_hash, sop_hash, "other", what)

    def _received(self, state: StudyState) -> None:
        state.last_received = now()
        state.first_received = state.first_received or state.last_received
        self._save(state)
        self._states[state.study_hash] = state

    # ----------------------------------------------------------------------------------------------- processing

    def begin(self, study_hash: str) -> StudyState | None:
        """Move a receiving study to processing (a processing one stays); None when it is in a final state. A study
        without a usable mammogram ends here: not-mammography (only other instances) or failed (only refused ones)."""
        with self._study(study_hash):
            state = self._states.get(study_hash)
            if state is None or state.status in FINAL:
                return None
            if state.status == RECEIVING and not state.images:
                state.status = NOT_MAMMOGRAPHY if state.other and not state.rejected else FAILED
                state.reason = _no_image_reason(state)
                self._save(state)
                return None
            state.status = PROCESSING
            self._save(state)
            return StudyState.from_json(json.loads(json.dumps(asdict(state))))

    def update(self, study_hash: str, **changes: Any) -> StudyState:
        """Set fields of one study's state (e.g. status, reason, results) and save it."""
        with self._study(study_hash):
            state = self._states[study_hash]
            for key, value in changes.items():
                if not hasattr(state, key):
                    raise AttributeError(f"StudyState has no field {key!r}")
                setattr(state, key, value)
            if state.status not in STATUSES:
                raise ValueError(f"unknown status {state.status!r}")
            self._save(state)
            return state


def _no_image_reason(state: StudyState) -> str:
    parts = []
    if state.other:
        kinds = sorted(set(state.other.values()))
        parts.append(f"{len(state.other)} instance(s) that are not mammography ({'; '.join(kinds)})")
    if state.rejected:
        parts.append(f"{len(state.rejected)} refused dataset(s) ({'; '.join(sorted(set(state.rejected.values())))})")
    return "no usable mammogram received: " + ", ".join(parts or ["nothing"])


def check_image(path: Path) -> tuple[str, str | None]:
    """(view label, None) for a file the reader takes (header and pixel-data length), else ("?", reason)."""
    try:
        image = read_dicom(path, pixels=False)
    except DicomReadError as err:
        return "?", err.reason
    return view_label(image.laterality, image.view), None


def _write_synced(path: Path, data: bytes) -> Path:
    """Write `data` atomically, its bytes on disk (fsync) before the rename."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def _sync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (where the system allows opening a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
