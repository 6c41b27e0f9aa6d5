"""`mammokit info`: a table of what the DICOM reader sees, file by file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mammokit.dicom import DicomReadError, read_dicom, transfer_syntax_name

COLUMNS = ("file", "vendor", "size", "bits", "photometric", "spacing_mm", "spacing_source", "film", "laterality",
           "view", "intent", "syntax", "status")
REFUSED = "refused: "  # how a refusal's status starts; a readable file's is "ok" or "ok (its warnings)"


def iter_dicom_files(path: str | Path) -> Iterator[Path]:
    """Yield `path` itself or every regular file below it (sorted; DICOM files often have no extension)."""
    path = Path(path)
    if path.is_file():
        yield path
        return
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in {".csv", ".json", ".png", ".txt"}:
            yield p


def describe_file(path: Path, *, decode: bool = True, root: Path | None = None) -> dict[str, str]:
    """One table row for one file; a refusal becomes a row with the reason as its status.

    `film` is "yes" for a scanned film (see `mammokit.dicom.film_signs`), else "no".
    """
    name = str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else str(path)
    row = dict.fromkeys(COLUMNS, "")
    row["file"] = name
    try:
        img = read_dicom(path, pixels=decode)
    except DicomReadError as err:
        row["status"] = f"{REFUSED}{err.reason}"
        return row
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
        status="ok" + (f" ({'; '.join(img.warnings)})" if img.warnings else ""),
    )
    return row


def describe_files(paths: list[Path], *, decode: bool = True, root: Path | None = None) -> list[dict[str, str]]:
    """Rows for many files."""
    return [describe_file(p, decode=decode, root=root) for p in paths]


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
