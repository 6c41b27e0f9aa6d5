"""`pacs listen`: a C-STORE receiver that spools each study, predicts it once it is complete and sends the results
back with a C-STORE sender.

- Receiving (`Listener`): mammography storage (MG and DX for presentation / processing, CR) in the transfer syntaxes
  mammokit decodes, and every other storage class in any syntax, so a wrongly routed study ends in a record rather
  than an association failure. Each mammogram is on disk, whole, with its state before the sender hears success
  (`mammokit.pacs.spool`); a dataset the reader refuses from its header (cut pixel data, broken tags) is kept aside
  and answered 0xC000 with the reason; an instance that is not mammography (a CT) is recorded and answered
  success, not kept. Pixel data that is whole but will not decode shows in the prediction's warnings.
- Completion: a study is complete when no image came for `quiet_s` seconds, or when its four screening views
  (L-CC, L-MLO, R-CC, R-MLO) are in and no open association is still delivering to it. Then a worker thread (never
  the C-STORE handler) runs `mammokit.pacs.node.process_study` on it once, and sends the result files to the
  destination (`send_files`). Images that arrive once processing began are kept in `late/` and recorded, not
  processed.
- Resume: on start the quiet clock of a receiving study restarts (its sender may still be resending), a processing
  study is processed again (results already written and recorded are sent as they are: nothing is recomputed or
  doubled), and a done, failed or not-mammography study is left alone. Status `done` is written only after every
  result file was stored by the destination.

Logs name studies and images by their salted hashes and view labels only.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom import sop_class as sop

from mammokit.dicom import DECODERS
from mammokit.errors import InvalidInputError, MammokitError
from mammokit.pacs.spool import DONE, FAILED, PROCESSING, SCREENING_VIEWS, Spool, StudyState
from mammokit.predict import HEATMAPS
from mammokit.release.model import resolve_model_dir

__all__ = ["DEFAULT_AE_TITLE", "Destination", "Listener", "SendOutcome", "check_ae_title", "not_mammography",
           "parse_destination", "send_files"]

log = logging.getLogger("mammokit.pacs.dimse")

DEFAULT_AE_TITLE = "MAMMOKIT"
MAMMOGRAPHY_CLASSES = frozenset({
    sop.DigitalMammographyXRayImageStorageForPresentation, sop.DigitalMammographyXRayImageStorageForProcessing,
    sop.DigitalXRayImageStorageForPresentation, sop.DigitalXRayImageStorageForProcessing,
    sop.ComputedRadiographyImageStorage,
})
MAMMOGRAPHY_SYNTAXES = list(DECODERS)  # what `mammokit.dicom` decodes; a sender transcodes to one of these or fails
OTHER_SYNTAXES = list(dict.fromkeys([*DECODERS, *AllTransferSyntaxes]))
SUCCESS, CANNOT_UNDERSTAND, OUT_OF_RESOURCES = 0x0000, 0xC000, 0xA700
WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})
MAX_CONTEXTS = 128  # presentation contexts one association may propose
POLL_S = 0.2  # how often the worker looks for complete studies


class Destination(NamedTuple):
    """Where results go: the archive's AE title, host and DIMSE port."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_destination(value: str | Sequence[Any] | Destination) -> Destination:
    """A `Destination` from ("AET", host, port) or the text "AET@host:port"; raises InvalidInputError."""
    if isinstance(value, str):
        ae_title, at, rest = value.partition("@")
        host, colon, port = rest.rpartition(":")
        if not (at and colon and port.isdigit()):
            raise InvalidInputError(f"destination {value!r}: write it as AET@host:port (e.g. ORTHANC@pacs:4242)")
        value = (ae_title, host, int(port))
    try:
        ae_title, host, port = value
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"destination {value!r}: give (AE title, host, port)") from err
    check_ae_title(str(ae_title))
    if not host or not 0 < int(port) < 65536:
        raise InvalidInputError(f"destination {value!r}: needs a host and a port in 1-65535")
    return Destination(str(ae_title), str(host), int(port))


def check_ae_title(title: str) -> str:
    """An AE title as DICOM allows it (1-16 printable ASCII characters, no backslash); raises InvalidInputError."""
    if not 0 < len(title.strip()) <= 16 or not title.isascii() or not title.isprintable() or "\\" in title:
        raise InvalidInputError(f"AE title {title!r}: use 1-16 printable ASCII characters without a backslash")
    return title


def not_mammography(ds: Dataset) -> str | None:
    """None for a mammography candidate (MG, or DX/CR of the breast or of no named body part), else what it is."""
    sop_class = str(ds.get("SOPClassUID", "") or "")
    modality = str(ds.get("Modality", "") or "").strip().upper()
    body_part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    if sop_class in MAMMOGRAPHY_CLASSES and (modality == "MG" or (modality in ("", "DX", "CR")
                                                                  and body_part in ("", "BREAST"))):
        return None
    name = UID(sop_class).name if sop_class else "no SOP Class UID"
    return f"{name}, Modality {modality or 'none'}{f', {body_part}' if body_part else ''}"


def _status(code: int, comment: str | None = None) -> Dataset:
    status = Dataset()
    status.Status = code
    if comment:
        status.ErrorComment = comment[:64]
    return status


# --------------------------------------------------------------------------------------------------- sender


@dataclass(frozen=True)
class SendOutcome:
    """What became of one file: `sent` (the destination answered success or a warning), else `reason`."""

    path: Path
    sent: bool
    status: int | None = None
    reason: str | None = None


def _file_meta(path: Path) -> tuple[str, str] | str:
    """(SOP class, transfer syntax) of a DICOM file, or why it cannot be sent."""
    try:
        meta = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]).file_meta
        return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)
    except (OSError, AttributeError, ValueError, pydicom.errors.InvalidDicomError) as err:
        return f"not a readable DICOM file ({type(err).__name__})"


def _sender(ae_title: str, metas: Iterable[tuple[str, str]], timeout_s: float) -> AE:
    """An SCU proposing, per SOP class, each file's own transfer syntax (files are sent as they are, never
    transcoded) and, for uncompressed ones, Explicit/Implicit VR Little Endian that pynetdicom converts to."""
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout_s
    contexts: dict[tuple[str, tuple[str, ...]], None] = {}
    for sop_class, syntax in metas:
        contexts[(sop_class, (syntax,))] = None
        if not UID(syntax).is_encapsulated:
            contexts[(sop_class, (ExplicitVRLittleEndian, ImplicitVRLittleEndian))] = None
    if len(contexts) > MAX_CONTEXTS:
        raise InvalidInputError(f"{len(contexts)} presentation contexts needed; at most {MAX_CONTEXTS} fit one "
                                "association (send fewer kinds of files at once)")
    for sop_class, offered in contexts:
        ae.add_requested_context(sop_class, list(offered))
    return ae


def _send_some(ae: AE, destination: Destination, pending: list[Path], metas: dict[Path, tuple[str, str]],
               outcomes: dict[Path, SendOutcome]) -> str | None:
    """One association: send what it takes of `pending` (removing each file answered); returns why it ended early."""
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        return "association rejected" if assoc.is_rejected else "no association (archive unreachable or aborted)"
    try:
        for path in list(pending):
            try:
                answer = assoc.send_c_store(path)
            except ValueError:  # no accepted context for this file's class and syntax: sending again will not help
                sop_class, syntax = metas[path]
                reason = f"archive accepts no {UID(sop_class).name} in {UID(syntax).name}"
                outcomes[path] = SendOutcome(path, False, None, reason)
                pending.remove(path)
                continue
            except (RuntimeError, OSError) as err:
                return f"send failed: {err}"
            code = answer.get("Status") if answer else None
            if code is None:
                return "connection lost while sending"
            ok = code == SUCCESS or code in WARNING_STATUSES
            reason = None if ok else f"archive refused it (status 0x{code:04X}{_comment(answer)})"
            outcomes[path] = SendOutcome(path, ok, int(code), reason)
            pending.remove(path)
        return None
    finally:
        if assoc.is_established:
            assoc.release()
        else:
            assoc.abort()


def _comment(answer: Dataset) -> str:
    comment = answer.get("ErrorComment")
    return f": {comment}" if comment else ""


def send_files(destination: Destination | Sequence[Any] | str, files: Sequence[str | Path], *,
               ae_title: str = DEFAULT_AE_TITLE, retry_s: float = 120.0, timeout_s: float = 30.0,
               stop: threading.Event | None = None) -> list[SendOutcome]:
    """C-STORE `files` to `destination`; one `SendOutcome` per file, in order.

    Association failures and connections lost mid-send are retried with backoff (0.5 s doubling to 5 s) until
    `retry_s` seconds pass without a file being stored, so an archive that restarts mid-send still ends with
    everything; a file the archive refuses (a failure status) is not retried. `stop` (an Event) ends the retries
    early. A file already stored and sent again replaces itself in the archive (same SOP Instance UID).
    """
    destination = parse_destination(destination)
    paths = [Path(f) for f in files]
    outcomes: dict[Path, SendOutcome] = {}
    metas: dict[Path, tuple[str, str]] = {}
    for path in paths:
        meta = _file_meta(path)
        if isinstance(meta, str):
            outcomes[path] = SendOutcome(path, False, None, meta)
        else:
            metas[path] = meta
    pending = list(dict.fromkeys(p for p in paths if p in metas))
    ae = _sender(check_ae_title(ae_title), metas.values(), timeout_s)
    deadline, delay, why = time.monotonic() + retry_s, 0.5, ""
    while pending:
        before = len(pending)
        why = _send_some(ae, destination, pending, metas, outcomes) or why
        if len(pending) < before:
            deadline, delay = time.monotonic() + retry_s, 0.5
        if not pending or time.monotonic() + delay > deadline or (stop is not None and stop.is_set()):
            break
        log.info("sending to %s: %d file(s) left (%s); retrying in %.1f s", destination, len(pending), why, delay)
        if stop is not None and stop.wait(delay):
            break
        if stop is None:
            time.sleep(delay)
        delay = min(delay * 2, 5.0)
    for path in pending:
        outcomes[path] = SendOutcome(path, False, None, f"not stored by {destination}: {why}")
    return [outcomes[p] for p in paths]


# --------------------------------------------------------------------------------------------------- receiver


class Listener:
    """`mammokit pacs listen`: C-STORE SCP + spool + one worker that predicts complete studies and sends results.

    `start()` returns once the SCP listens; `stop()` ends it; `serve_forever()` blocks until SIGTERM or Ctrl-C.
    `status()` gives every study's state (`StudyState.summary()`), keyed by study hash.
    """

    def __init__(self, ae_title: str, port: int, model: str | Path, spool: str | Path, *,
                 out_dir: str | Path | None = None, destination: Destination | Sequence[Any] | str | None = None,
                 quiet_s: float = 10.0, host: str = "127.0.0.1", heatmap: str = "saliency", workers: int = 1,
                 device: str = "auto", send_retry_s: float = 120.0, timeout_s: float = 30.0,
                 mc_passes: int = 0) -> None:
        if quiet_s <= 0:
            raise InvalidInputError(f"quiet_s must be positive, got {quiet_s}")
        if heatmap not in HEATMAPS:
            raise InvalidInputError(f"heatmap must be one of {HEATMAPS}, got {heatmap!r}")
        if not 0 <= int(port) < 65536:
            raise InvalidInputError(f"port must be in 0-65535, got {port}")
        self.ae_title = check_ae_title(ae_title)
        self.model = resolve_model_dir(model)
        self.spool = Spool(spool)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.destination = parse_destination(destination) if destination is not None else None
        self.quiet_s, self.host, self.heatmap, self.workers, self.device = quiet_s, host, heatmap, workers, device
        self.send_retry_s, self.timeout_s, self.mc_passes = send_retry_s, timeout_s, mc_passes
        self._port = int(port)
        self._ae: AE | None = None
        self._server: Any = None
        self._worker: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._guard = threading.Lock()
        self._last: dict[str, float] = {}  # study hash -> monotonic time of its last instance
        self._open: dict[Any, set[str]] = {}  # association -> the studies it delivered to

    # ----------------------------------------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        """The port the SCP listens on (the one the system picked when 0 was asked)."""
        return int(self._server.server_address[1]) if self._server is not None else self._port

    @property
    def listening(self) -> bool:
        """Whether the SCP is up (between `start()` and `stop()`)."""
        return self._server is not None

    def start(self) -> Listener:
        """Open the spool, reschedule unfinished studies, start the worker and the SCP; returns once it listens."""
        if self._server is not None:
            return self
        self.spool.open()
        self._stopping.clear()
        started = time.monotonic()
        for study_hash, state in self.spool.open_studies().items():
            self._last[study_hash] = started
            log.info("study %s: resumed (%s, %d image(s), views %s)", study_hash, state.status, len(state.images),
                     ",".join(state.views) or "none")
        self._ae = self._receiver()
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_RELEASED, self._on_close),
                    (evt.EVT_ABORTED, self._on_close), (evt.EVT_CONN_CLOSE, self._on_close)]
        try:
            self._server = self._ae.start_server((self.host, self._port), block=False, evt_handlers=handlers)
        except OSError as err:
            self.spool.close()
            raise InvalidInputError(f"cannot listen on {self.host}:{self._port}: {err}") from err
        self._worker = threading.Thread(target=self._run, name="mammokit-listen-worker", daemon=True)
        self._worker.start()
        log.info("listening as %s on %s:%d (spool %s, destination %s)", self.ae_title, self.host, self.port,
                 self.spool.root, self.destination or "none")
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop receiving (open associations are aborted), let the worker finish its study (up to `timeout_s`),
        release the spool. A study cut short stays `processing` and resumes at the next start."""
        self._stopping.set()
        self._wake.set()
        if self._ae is not None:
            active = list(self._ae.active_associations)
            self._ae.shutdown()
            for assoc in active:
                assoc.join(timeout=5)
        self._ae = self._server = None
        if self._worker is not None:
            self._worker.join(timeout_s)
            if self._worker.is_alive():
                log.warning("the worker is still busy after %s s: its study resumes at the next start", timeout_s)
                return
        self._worker = None
        self.spool.close()

    def serve_forever(self) -> None:
        """Run until SIGTERM or Ctrl-C, then stop cleanly (the study being processed is finished first)."""
        done = threading.Event()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            self.start()
            while not done.wait(1.0):
                pass
        except KeyboardInterrupt:
            log.info("interrupted")
        finally:
            log.info("stopping")
            self.stop()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def status(self) -> dict[str, dict[str, Any]]:
        """Every study in the spool: study hash -> its state (status, reason, received, views, results, ...)."""
        return {h: s.summary() for h, s in self.spool.studies().items()}

    def __enter__(self) -> Listener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _receiver(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.add_supported_context(sop.Verification)
        for cx in AllStoragePresentationContexts:
            mammography = cx.abstract_syntax in MAMMOGRAPHY_CLASSES
            ae.add_supported_context(cx.abstract_syntax, MAMMOGRAPHY_SYNTAXES if mammography else OTHER_SYNTAXES)
        return ae

    # ----------------------------------------------------------------------------------------------- receiving

    def _on_store(self, event: Any) -> Dataset:
        """C-STORE: spool the instance (or record it) before answering; never raises."""
        try:
            ds = event.dataset
            study_uid, sop_uid = str(ds.StudyInstanceUID or ""), str(ds.SOPInstanceUID or "")
            other = not_mammography(ds)
        except Exception as err:  # pydicom raises many kinds on garbage; the sender gets 0xC000
            log.warning("refused a dataset that cannot be parsed (%s)", type(err).__name__)
            return _status(CANNOT_UNDERSTAND, "dataset cannot be parsed")
        if not study_uid or not sop_uid:
            log.warning("refused a dataset without StudyInstanceUID or SOPInstanceUID")
            return _status(CANNOT_UNDERSTAND, "no StudyInstanceUID or SOPInstanceUID")
        try:
            if other is not None:
                stored = self.spool.record_other(study_uid, sop_uid, other)
            else:
                stored = self.spool.store(study_uid, sop_uid, event.encoded_dataset())
        except OSError as err:
            log.error("could not spool an instance: %s", err.strerror or type(err).__name__)
            return _status(OUT_OF_RESOURCES, "cannot write to the spool")
        with self._guard:
            self._last[stored.study_hash] = time.monotonic()
            self._open.setdefault(event.assoc, set()).add(stored.study_hash)
        log.info("study %s: %s %s (%s)", stored.study_hash, stored.kind, stored.sop_hash[:10], stored.detail)
        if stored.kind == "rejected":
            return _status(CANNOT_UNDERSTAND, stored.detail)
        self._wake.set()
        return _status(SUCCESS)

    def _on_close(self, event: Any) -> None:
        with self._guard:
            delivered = self._open.pop(event.assoc, None)
        if delivered:
            self._wake.set()

    def _busy(self, study_hash: str) -> bool:
        with self._guard:
            return any(study_hash in studies for studies in self._open.values())

    # ----------------------------------------------------------------------------------------------- worker

    def _run(self) -> None:
        while not self._stopping.is_set():
            study_hash = self._next_due()
            if study_hash is None:
                self._wake.wait(POLL_S)
                self._wake.clear()
                continue
            try:
                self._process(study_hash)
            except Exception:  # the worker must outlive any one study
                log.exception("study %s: unexpected error while processing", study_hash)
                self.spool.update(study_hash, status=FAILED, reason="unexpected error (see the listener's log)")

    def _next_due(self) -> str | None:
        """A study to process now: one left processing by an earlier run, else the complete receiving one that
        waited longest."""
        now = time.monotonic()
        due: list[tuple[float, str]] = []
        for study_hash, state in self.spool.open_studies().items():
            with self._guard:
                last = self._last.setdefault(study_hash, now)
            if state.status == PROCESSING:
                return study_hash
            if now - last >= self.quiet_s or (set(state.views) >= SCREENING_VIEWS and not self._busy(study_hash)):
                due.append((last, study_hash))
        return min(due)[1] if due else None

    def _process(self, study_hash: str) -> None:
        state = self.spool.begin(study_hash)
        if state is None:
            final = self.spool.state(study_hash)
            if final is not None:
                log.warning("study %s: %s: %s", study_hash, final.status, final.reason)
            return
        log.info("study %s: complete (%d image(s), views %s): processing", study_hash, len(state.images),
                 ",".join(state.views) or "none")
        try:
            state = self._results(state)
        except MammokitError as err:
            log.warning("study %s: failed: %s", study_hash, err)
            self.spool.update(study_hash, status=FAILED, reason=str(err))
            return
        self._deliver(state)

    def _out_root(self, study_hash: str) -> Path:
        return self.out_dir if self.out_dir is not None else self.spool.folder(study_hash) / "out"

    def _results(self, state: StudyState) -> StudyState:
        """The study's result files: those an earlier run wrote and recorded, else `process_study`'s."""
        root = self._out_root(state.study_hash)
        if state.results and all((root / rel).is_file() for rel in state.results):
            log.info("study %s: results of an earlier run found, not recomputed", state.study_hash)
            return state
        from mammokit.pacs.node import (
            process_study,  # imported here: the model stack loads only when a study is processed
        )

        self.spool.update(state.study_hash, runs=state.runs + 1, results={})
        result = process_study(self.model, self.spool.images_dir(state.study_hash), root, heatmap=self.heatmap,
                               workers=self.workers, device=self.device, mc_passes=self.mc_passes)
        results = {_relative(p, root): "pending" for p in result.result_files}
        return self.spool.update(state.study_hash, results=results, exam=result.prediction.get("exam"),
                                 warnings=list(result.prediction.get("warnings", [])), seconds=result.seconds,
                                 prediction_dir=_relative(result.prediction_dir, root))

    def _deliver(self, state: StudyState) -> None:
        """Send the result files not yet stored; `done` once all are, `failed` when the destination would not."""
        if self.destination is None:
            self.spool.update(state.study_hash, status=DONE, reason=None)
            log.info("study %s: done (%d result file(s), no destination)", state.study_hash, len(state.results))
            return
        root = self._out_root(state.study_hash)
        todo = [rel for rel, outcome in state.results.items() if outcome != "sent"]
        t0 = time.perf_counter()
        outcomes = send_files(self.destination, [root / rel for rel in todo], ae_title=self.ae_title,
                              retry_s=self.send_retry_s, timeout_s=self.timeout_s, stop=self._stopping)
        state = self.spool.update(state.study_hash, seconds={**state.seconds,
                                                             "send": round(time.perf_counter() - t0, 4)})
        results = dict(state.results)
        for rel, outcome in zip(todo, outcomes, strict=True):
            results[rel] = "sent" if outcome.sent else f"not sent: {outcome.reason}"
        unsent = [r for r in results.values() if r != "sent"]
        if not unsent:
            self.spool.update(state.study_hash, results=results, status=DONE, reason=None)
            log.info("study %s: done (%d result file(s) stored by %s)", state.study_hash, len(results),
                     self.destination)
        elif self._stopping.is_set():
            self.spool.update(state.study_hash, results=results)  # still processing: sent at the next start
        else:
            reason = f"{len(unsent)} of {len(results)} result file(s) not stored by {self.destination}: {unsent[0]}"
            self.spool.update(state.study_hash, results=results, status=FAILED, reason=reason)
            log.warning("study %s: failed: %s", state.study_hash, reason)


def _relative(path: str | Path, root: Path) -> str:
    """`path` relative to `root` when inside it, else absolute (as stored in the state)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path.resolve())

