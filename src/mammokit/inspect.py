"""`mammokit info`: a table of what the DICOM reader sees, file by file.

Patients show as their salted hash (`mammokit.ids`), in the `patient` column and in folder names that name them,
unless the user asks for raw ids (`show_ids=True`, `mammokit info --show-ids`).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path, PurePath

from mammokit.dicom import DicomReadError, read_dicom, transfer_syntax_name
from mammokit.ids import resolve_salt, safe_relpath
from mammokit.isolate import ItemFailure, isolated_map

COLUMNS = ("file", "vendor", "size", "bits", "photometric", "spacing_mm", "spacing_source", "film", "laterality",
           "view", "intent", "syntax", "patient", "status")
REFUSED = "refused: "  # how a refusal's status starts; a readable file's is "ok" or "ok (its warnings)"
FILE_TIME_LIMIT_S = 300.0  # one file's read and decode; a file still running then has hung the reader


def iter_dicom_files(path: str | Path) -> Iterator[Path]:
    """Yield `path` itself or every regular file below it (sorted; DICOM files often have no extension)."""
    path = Path(path)
    if path.is_file():
        yield path
        return
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in {".csv", ".json", ".png", ".txt"}:
            yield p


def _name(path: Path, root: Path | None) -> str:
    return str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else str(path)


def describe_file(path: Path, *, decode: bool = True, root: Path | None = None,
                  show_ids: bool = False) -> dict[str, str]:
    """One table row for one file; a refusal becomes a row with the reason as its status.

    `film` is "yes" for a scanned film (see `mammokit.dicom.film_signs`), else "no". `patient` and the folders of
    `file` that name the patient show the salted patient hash, or the raw PatientID and path with `show_ids`.
    """
    name = _name(path, root)
    row = dict.fromkeys(COLUMNS, "")
    row["file"] = name
    try:
        img = read_dicom(path, pixels=decode, keep_ids=True)
    except DicomReadError as err:
        row["status"] = f"{REFUSED}{err.reason}"
        return row
    if not show_ids:
        row["file"] = safe_relpath(name, img.patient_id, resolve_salt(), img.accession_number, img.study_uid,
                                    img.series_uid, img.sop_uid)
    spacing = img.spacing_mm or img.spacing_raw_mm
    row.update(
        vendor=img.manufacturer or "?",
        size=f"{img.rows}x{img.columns}",
        bits=str(img.bits_stored) if img.bits_stored is not None else "?",
        photometric=img.photometric or "?",
        spacing_mm=f"{spacing[0]:.4g}x{spacing[1]:.4g}" if spacing else "-",
        spacing_source=(img.spacing_source or "-") + (" (untrusted)" if img.spacing_source and not img.spacing_trusted
                                                      else ""),
        film="yes" if img.film else "no",
        laterality=img.laterality or "-",
        view=img.view or "-",
        intent=img.presentation_intent or "-",
        syntax=transfer_syntax_name(img.transfer_syntax) if img.transfer_syntax else "-",
        patient=(img.patient_id if show_ids else img.patient_hash) or "-",
        status="ok" + (f" ({'; '.join(img.warnings)})" if img.warnings else ""),
    )
    return row


def describe_files(paths: list[Path], *, decode: bool = True, root: Path | None = None, show_ids: bool = False,
                   time_limit_s: float | None = FILE_TIME_LIMIT_S) -> list[dict[str, str]]:
    """Rows for many files; a refused file's folders that a readable file's patient names show hashed too.

    Each file is read in a worker process (`mammokit.isolate`): one that crashes the reader (a native decoder's
    segfault, a panic) or runs past `time_limit_s` becomes a refused row with that reason; the others are still shown.
    """
    fn = partial(describe_file, decode=decode, root=root, show_ids=show_ids)
    outcomes = dict(isolated_map(fn, paths, time_limit_s=time_limit_s))
    rows = [_failed_row(p, root, outcomes[i].reason) if isinstance(outcomes[i], ItemFailure) else outcomes[i]
            for i, p in enumerate(paths)]
    if not show_ids:
        _hide_refused_folders(rows, [_name(p, root) for p in paths])
    return rows


def _failed_row(path: Path, root: Path | None, reason: str) -> dict[str, str]:
    """The row of a file whose reading crashed, hung or raised past the reader's own refusals."""
    row = dict.fromkeys(COLUMNS, "")
    row.update(file=_name(path, root), status=f"{REFUSED}the reader failed: {reason}")
    return row


def _hide_refused_folders(rows: list[dict[str, str]], names: list[str]) -> None:
    """Give unread files' folders the hashed names that readable files' rows gave the same folders."""
    hashed: dict[str, str] = {}
    for row, name in zip(rows, names, strict=True):
        hashed.update({raw: safe for raw, safe in zip(PurePath(name).parts[:-1], PurePath(row["file"]).parts[:-1],
                                                      strict=False) if raw != safe})
    for row, name in zip(rows, names, strict=True):
        parts = PurePath(name).parts
        if hashed and not row["patient"] and len(parts) > 1:  # no header read: no patient of its own
            row["file"] = str(PurePath(*(hashed.get(p, p) for p in parts[:-1]), parts[-1]))


def summary(rows: list[dict[str, str]]) -> str:
    """One line counting what the rows' statuses say: files, readable (with or without warnings), refused, film."""
    refused = sum(r["status"].startswith(REFUSED) for r in rows)
    films = sum(r["film"] == "yes" for r in rows)
    return f"{len(rows)} files, {len(rows) - refused} readable, {refused} refused" + (
        f", {films} scanned film" if films else "")


def format_table(rows: list[dict[str, str]]) -> str:
    """Left-aligned plain-text table with a header."""
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
    lines.append("  ".join("-" * widths[c] for c in COLUMNS))
    lines += ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS) for r in rows]
    return "\n".join(lines)
