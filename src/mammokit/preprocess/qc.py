"""Quality control of a preprocessed store: which images most likely went wrong, and a page to look at them.

`suspicion(table)` scores every row of `preprocessed.parquet` from the numbers preprocessing recorded; higher = more
likely wrong. Each signal gives a strength in [0, 1] (a ramp between a "fine" and a "surely wrong" value) times a
weight; the score is their sum, so an image wrong in two ways ranks above one wrong in one way. The ramps are
judgement, not fitted to labelled failures. Weights:

- 3: **tissue outside the mask** (`qc_tissue_outside_mask`, ramp 1 % → 10 %): the breast mask dropped tissue, the one
  failure that silently removes what the model should see.
- 2: **mask area far from the median of its view** (`qc_mask_area_fraction`, or the crop-box area for stores
  without it; ramp 1.5× → 3× off the median, either way; the store's median for a view with under 5 images),
  **low threshold separability** (`qc_threshold_separability`, ramp 0.6 → 0.3: the air/breast threshold was a
  guess), **orientation ambiguous** (`orientation_ambiguous`, or `orientation_confidence` ramp 0.6 → 0.2), **crop
  touching all four borders** (nothing was cropped: the mask found no edge); each is a direct sign a step failed.
- 1–1.5: **orientation disagreement** between header and content (1.5: often a header quirk, but the flip may be
  wrong), **view / laterality read from the content** with low confidence (1.5 each, ramp 0.9 → 0.5; an unknown
  confidence counts half), **MLO without a pectoral muscle** (1.5: a true MLO shows the muscle, so either the view
  or the mask is off), **QC flags** (1; half per flag, full from 2) and **warnings** from the mask or the reader
  (1; half per warning, full from 2): a step already said something looked off.
- 0.5: **markers removed** (a third per marker, full from 3: masking labels inside the crop can take tissue with
  them) and **film** (scanned film has edges, labels and grain that trip the mask more often).

A column a store lacks (older stores predate the `qc_*` columns) or a missing value is unknown and adds nothing.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from mammokit import INTENDED_USE, __version__
from mammokit.dicom import DicomReadError, read_dicom
from mammokit.io import atomic_write_text
from mammokit.preprocess.geometry import stored_to_original_heatmap
from mammokit.preprocess.show import GREEN, draw_original, draw_stored, fit_height, to_rgb
from mammokit.preprocess.sources import with_sources
from mammokit.preprocess.store import read_mask
from mammokit.preprocess.store_schema import row_transform

DEFAULT_PECTORAL_REASON = "not an MLO view"  # what the pipeline records when it never looked for a muscle
FLAG_SCORE = 1.0  # a row at or above this suspicion counts as flagged


@dataclass(frozen=True)
class Signal:
    """One reason to suspect an image: `strength(table)` in [0, 1] per row, `reason(table)` its short text, and the
    columns it reads (when a store has none of them, the signal is unknown there)."""

    name: str
    weight: float
    strength: Callable[[pd.DataFrame], pd.Series]
    reason: Callable[[pd.DataFrame], pd.Series]
    columns: tuple[str, ...]


def _num(table: pd.DataFrame, col: str) -> pd.Series:
    """A numeric column (NaN where missing or absent)."""
    if col not in table:
        return pd.Series(np.nan, index=table.index, dtype=float)
    return pd.to_numeric(table[col], errors="coerce").astype(float)


def _flag(table: pd.DataFrame, col: str) -> pd.Series:
    """A boolean column: True only where the value is known and true (missing = unknown = False)."""
    if col not in table:
        return pd.Series(False, index=table.index)
    return table[col].map(_is_true).astype(bool)


def _is_true(value: object) -> bool:
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return bool(value)
    return isinstance(value, (float, np.floating)) and bool(np.isfinite(value)) and value != 0


def _text(table: pd.DataFrame, col: str) -> pd.Series:
    """A text column with missing values as empty strings."""
    if col not in table:
        return pd.Series("", index=table.index)
    return table[col].map(lambda v: v.strip() if isinstance(v, str) else "")


def _items(text: pd.Series) -> pd.Series:
    """The "; "-joined items of a text column, as lists."""
    return text.map(lambda s: [p.strip() for p in s.split(";") if p.strip()])


def ramp(values: pd.Series, fine: float, wrong: float) -> pd.Series:
    """0 at `fine`, 1 at `wrong`, linear between (either direction); NaN becomes 0."""
    return ((values - fine) / (wrong - fine)).clip(0, 1).fillna(0.0)


def _pct(values: pd.Series, fmt: str) -> pd.Series:
    """Each finite value through `fmt` ("" for NaN), as text."""
    return values.map(lambda v: fmt.format(v) if np.isfinite(v) else "").astype(object)


def area_fraction(table: pd.DataFrame) -> tuple[pd.Series, str]:
    """Mask area / image area, or the crop box's share of the image for stores without `qc_mask_area_fraction`."""
    area = _num(table, "qc_mask_area_fraction")
    if area.notna().any():
        return area, "mask area"
    w = _num(table, "crop_x1") - _num(table, "crop_x0")
    h = _num(table, "crop_y1") - _num(table, "crop_y0")
    return w * h / (_num(table, "rows") * _num(table, "columns")), "crop area"


def area_ratio(table: pd.DataFrame) -> pd.Series:
    """Area fraction over the median of its view group (the store's median where a group has under 5 values)."""
    area, _ = area_fraction(table)
    groups = _text(table, "view_group").replace("", "OTHER")
    overall = area.median()
    medians = area.groupby(groups).transform(lambda a: a.median() if a.notna().sum() >= 5 else overall)
    return area / medians.where(medians > 0)


def _area_strength(table: pd.DataFrame) -> pd.Series:
    with np.errstate(divide="ignore"):  # an empty mask is infinitely far off: full strength
        off = np.abs(np.log(area_ratio(table)))
    return ramp(off, np.log(1.5), np.log(3.0))


def _area_reason(table: pd.DataFrame) -> pd.Series:
    _, what = area_fraction(table)
    return _pct(area_ratio(table), what + " {:.2f}× the view's median")


def _orientation_strength(table: pd.DataFrame) -> pd.Series:
    low = ramp(_num(table, "orientation_confidence"), 0.6, 0.2)
    return np.maximum(low, _flag(table, "orientation_ambiguous").astype(float))


def _orientation_reason(table: pd.DataFrame) -> pd.Series:
    conf = _pct(_num(table, "orientation_confidence"), " (confidence {:.2f})")
    return "orientation ambiguous" + conf


def _content_strength(kind: str) -> Callable[[pd.DataFrame], pd.Series]:
    def strength(table: pd.DataFrame) -> pd.Series:
        from_content = _text(table, f"{kind}_source").str.lower() == "content"
        conf = _num(table, f"{kind}_confidence")
        return ramp(conf, 0.9, 0.5).where(conf.notna(), 0.5).where(from_content, 0.0)
    return strength


def _content_reason(kind: str) -> Callable[[pd.DataFrame], pd.Series]:
    def reason(table: pd.DataFrame) -> pd.Series:
        return f"{kind} read from the image" + _pct(_num(table, f"{kind}_confidence"), " (confidence {:.2f})")
    return reason


def _mlo_without_pectoral(table: pd.DataFrame) -> pd.Series:
    mlo = _text(table, "view_group") == "MLO"
    looked = _text(table, "pectoral_reason") != DEFAULT_PECTORAL_REASON
    known = table["pectoral_found"].notna() if "pectoral_found" in table else pd.Series(False, index=table.index)
    return (mlo & looked & known & ~_flag(table, "pectoral_found")).astype(float)


def _all_borders(table: pd.DataFrame) -> pd.Series:
    touches = ((_num(table, "crop_x0") <= 0) & (_num(table, "crop_y0") <= 0)
               & (_num(table, "crop_x1") >= _num(table, "columns")) & (_num(table, "crop_y1") >= _num(table, "rows")))
    return touches.astype(float)


def _warnings_reason(table: pd.DataFrame) -> pd.Series:
    both = _items(_text(table, "mask_warnings")) + _items(_text(table, "read_warnings"))
    return both.map(lambda w: "warnings: " + "; ".join(w))


def _const(text: str) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda table: pd.Series(text, index=table.index)


def _count(table: pd.DataFrame, col: str) -> pd.Series:
    return _items(_text(table, col)).map(len).astype(float)


SIGNALS: tuple[Signal, ...] = (
    Signal("tissue_outside_mask", 3.0, lambda t: ramp(_num(t, "qc_tissue_outside_mask"), 0.01, 0.10),
           lambda t: _pct(_num(t, "qc_tissue_outside_mask"), "tissue outside mask {:.1%}"),
           ("qc_tissue_outside_mask",)),
    Signal("mask_area", 2.0, _area_strength, _area_reason, ("qc_mask_area_fraction", "crop_x0", "rows")),
    Signal("low_separability", 2.0, lambda t: ramp(_num(t, "qc_threshold_separability"), 0.6, 0.3),
           lambda t: _pct(_num(t, "qc_threshold_separability"), "low threshold separability {:.2f}"),
           ("qc_threshold_separability",)),
    Signal("orientation_ambiguous", 2.0, _orientation_strength, _orientation_reason,
           ("orientation_ambiguous", "orientation_confidence")),
    Signal("crop_all_borders", 2.0, _all_borders, _const("crop touches all four borders"), ("crop_x0", "rows")),
    Signal("orientation_disagreement", 1.5, lambda t: _flag(t, "orientation_disagreement").astype(float),
           _const("orientation: header and content disagree"), ("orientation_disagreement",)),
    Signal("view_from_content", 1.5, _content_strength("view"), _content_reason("view"), ("view_source",)),
    Signal("laterality_from_content", 1.5, _content_strength("laterality"), _content_reason("laterality"),
           ("laterality_source",)),
    Signal("mlo_without_pectoral", 1.5, _mlo_without_pectoral, _const("MLO without pectoral muscle"),
           ("pectoral_found",)),
    Signal("qc_flags", 1.0, lambda t: ramp(_count(t, "qc_flags"), 0, 2), lambda t: "flags: " + _text(t, "qc_flags"),
           ("qc_flags",)),
    Signal("warnings", 1.0, lambda t: ramp(_count(t, "mask_warnings") + _count(t, "read_warnings"), 0, 2),
           _warnings_reason, ("mask_warnings", "read_warnings")),
    Signal("markers_removed", 0.5, lambda t: ramp(_num(t, "markers_removed"), 0, 3),
           lambda t: _pct(_num(t, "markers_removed"), "{:.0f} markers removed"), ("markers_removed",)),
    Signal("film", 0.5, lambda t: _flag(t, "film").astype(float), _const("film"), ("film",)),
)


def contributions(table: pd.DataFrame) -> pd.DataFrame:
    """Weight × strength of every signal (one column per signal name), indexed like `table`."""
    return pd.DataFrame({s.name: s.weight * s.strength(table).astype(float) for s in SIGNALS}, index=table.index)


def suspicion(table: pd.DataFrame) -> pd.DataFrame:
    """How likely each row of `preprocessed.parquet` is wrong (see the module docstring for signals and weights).

    Returns:
        DataFrame indexed like `table` with `score` (float, 0 = nothing suspicious; higher = more likely wrong) and
        `reasons` (the firing signals' short texts, strongest first, "; "-joined; "" when none fired).
    """
    parts = contributions(table)
    reasons = ["; ".join(r) for r in reason_lists(table, parts)]
    return pd.DataFrame({"score": parts.sum(axis=1).round(3), "reasons": reasons}, index=table.index)


def reason_lists(table: pd.DataFrame, parts: pd.DataFrame | None = None) -> list[list[str]]:
    """Per row, the short texts of the signals that fired, strongest first (`parts`: `contributions(table)`)."""
    values = (contributions(table) if parts is None else parts)[[s.name for s in SIGNALS]].to_numpy()
    texts = np.column_stack([s.reason(table).to_numpy(dtype=object) for s in SIGNALS])
    order = np.argsort(-values, axis=1, kind="stable")
    return [[str(texts[r, c]) for c in order[r] if values[r, c] > 0] for r in range(len(table))]


# ---------------------------------------------------------------------------------------------------------- page

MAGENTA = (200, 40, 200)  # BGR tint over what the breast mask left out
FAILURES_SHOWN = 30  # failures.csv rows listed on the page (the count covers all)


@dataclass(frozen=True)
class QCPage:
    """What `write_qc_page` wrote: the file and its counts."""

    path: Path
    images: int
    flagged: int
    failures: int | None  # None when the store has no failures.csv
    shown: int

    def summary(self) -> str:
        """One line for the terminal."""
        failed = "no failures.csv" if self.failures is None else f"{self.failures} failed"
        return (f"{self.images} images, {self.flagged} flagged (suspicion ≥ {FLAG_SCORE:g}), {failed}; "
                f"{self.shown} most suspicious shown")


def write_qc_page(store: str | Path, out: str | Path, top: int = 50, thumb_height: int = 320) -> QCPage:
    """Write one self-contained HTML page (inline PNGs, no scripts) showing the `top` most suspicious images.

    Each entry shows the original DICOM with the crop box, the breast mask over the original (what it left out is
    tinted magenta) and the stored image, with its suspicion score, reasons and QC numbers. An original that cannot
    be read is named as such and the entry shows the rest. No patient name, id, birth date or file path is written.
    """
    store = Path(store)
    if not (store / "preprocessed.parquet").is_file():
        raise FileNotFoundError(f"{store}: no preprocessed.parquet (is this a store from `mammokit preprocess`?)")
    table = pd.read_parquet(store / "preprocessed.parquet")
    table = with_sources(table, store).reset_index(drop=True)  # originals' paths from the store's index, in memory
    parts = contributions(table)
    scores = parts.sum(axis=1).round(3)
    reasons = reason_lists(table, parts)
    ids = table["image_id"].astype(str) if "image_id" in table else pd.Series("", index=table.index)
    order = pd.DataFrame({"score": scores, "id": ids}).sort_values(["score", "id"], ascending=[False, True]).index
    entries = [_entry(store, table.loc[i], float(scores[i]), reasons[i], rank, thumb_height)
               for rank, i in enumerate(order[:max(top, 0)], start=1)]
    failures = _failures(store)
    page = QCPage(Path(out), len(table), int((scores >= FLAG_SCORE).sum()),
                  None if failures is None else len(failures), len(entries))
    html = _environment().get_template("qc.html").render(
        store_name=store.resolve().name, version=__version__, intended_use=INTENDED_USE, page=page,
        flag_score=f"{FLAG_SCORE:g}", signals=_signal_rows(table, parts), entries=entries,
        failures=(failures or [])[:FAILURES_SHOWN], failures_more=max(0, len(failures or []) - FAILURES_SHOWN),
    )
    atomic_write_text(out, html)
    return page


def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                       autoescape=select_autoescape(["html"]), undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True)


def _signal_rows(table: pd.DataFrame, parts: pd.DataFrame) -> list[dict[str, str]]:
    """Per signal: its weight and how many rows it fired on (`parts`: `contributions(table)`), or that it is unknown."""
    return [{"name": s.name.replace("_", " "), "weight": f"{s.weight:g}",
             "fired": str(int((parts[s.name] > 0).sum())) if any(c in table for c in s.columns)
             else "unknown: not recorded in this store"} for s in SIGNALS]


def _failures(store: Path) -> list[dict[str, str]] | None:
    """failures.csv as (image_id, reason) with each file's path cut out of its reason; None when absent."""
    path = store / "failures.csv"
    if not path.is_file():
        return None
    try:
        fails = pd.read_csv(path, dtype=str).fillna("")
    except (OSError, pd.errors.EmptyDataError):
        return []
    return [{"image_id": r.get("image_id", ""), "reason": _without_path(r.get("reason", ""), r.get("path", ""))}
            for r in fails.to_dict("records")]


def _without_path(text: str, path: str) -> str:
    """`text` with `path` (which may name a patient in a PACS-like tree) replaced by "<file>"."""
    return text.replace(path, "<file>") if path else text


def _entry(store: Path, row: pd.Series, score: float, reasons: list[str], rank: int,
           height: int) -> dict[str, object]:
    """Everything the template shows for one image."""
    pictures, notes = _pictures(store, row, height)
    return {"rank": rank, "score": f"{score:.2f}", "flagged": score >= FLAG_SCORE, "reasons": reasons,
            "image_id": str(row.get("image_id", "")), "title": _title(row), "pictures": pictures, "notes": notes,
            "numbers": _numbers(row)}


def _pictures(store: Path, row: pd.Series, height: int) -> tuple[list[dict[str, str]], list[str]]:
    """The three thumbnails as data URIs (fewer when something cannot be read) and notes saying what is missing."""
    pictures: list[dict[str, str]] = []
    notes: list[str] = []

    def add(caption: str, draw: Callable[[], np.ndarray]) -> None:
        try:
            pictures.append({"caption": caption, "src": png_data_uri(draw())})
        except Exception as err:  # a broken file must cost one picture, not the page
            notes.append(f"{caption}: not shown ({type(err).__name__}: {_short(err, row.get('path'))})")

    pixels, problem = _read_original(row)
    if pixels is None:
        notes.append(f"original DICOM not shown: {problem}")
    else:
        add("original, crop box", lambda: draw_original(pixels, row, height))
        add("breast mask (magenta: left out)", lambda: _mask_overlay(store, row, pixels, height))
    add("stored image, mask outline", lambda: draw_stored(store, row, height))
    return pictures, notes


def _read_original(row: pd.Series) -> tuple[np.ndarray | None, str]:
    """The original pixels, or None and why not (without the file's path)."""
    path = row.get("path")
    if not isinstance(path, str) or not path:
        return None, "not in the store's index (source_index.json names none, or it moved)"
    if not Path(path).is_file():
        return None, "source file not found"
    try:
        return read_dicom(path).pixels, ""
    except DicomReadError as err:
        return None, err.reason
    except Exception as err:  # an unreadable file is something to report on the page, not a crash
        return None, f"{type(err).__name__}: {_short(err, path)}"


def _short(err: Exception, path: object) -> str:
    """The error's message without the source file's path, at most 200 characters."""
    text = _without_path(str(err), path if isinstance(path, str) else "")
    return text if len(text) <= 200 else text[:199] + "…"


def _mask_overlay(store: Path, row: pd.Series, pixels: np.ndarray, height: int) -> np.ndarray:
    """The original at `height` with the stored breast mask carried back onto it; outside is tinted magenta."""
    record = row_transform(row)
    stored_mask = read_mask(store / row["breast_mask_path"]).astype(np.float32)
    full = stored_to_original_heatmap(stored_mask, record, fill=0.0, interpolation="nearest")
    img, _ = fit_height(to_rgb(pixels), height)
    inside = cv2.resize(full, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_AREA) >= 0.5
    tinted = (0.55 * img + 0.45 * np.array(MAGENTA, np.float32)).astype(np.uint8)
    img[~inside] = tinted[~inside]
    contours, _ = cv2.findContours(inside.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, contours, -1, GREEN, 1)
    return img


def png_data_uri(image: np.ndarray) -> str:
    """A BGR or grey uint8 image as a `data:image/png;base64,...` URI."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("OpenCV could not encode the PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _title(row: pd.Series) -> str:
    """Laterality and view ("?" where unknown)."""
    return f"{_plain(row.get('laterality')) or '?'} {_plain(row.get('view')) or '?'}"


def _plain(value: object) -> str:
    """A cell as short text: "" for missing values, 3 significant digits for floats, yes/no for booleans."""
    if value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and not np.isfinite(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{value:.3g}"
    return str(value)


NUMBERS: tuple[tuple[str, str, str], ...] = (  # label, column, format ("" = as text, "%" = percent)
    ("mask area / image", "qc_mask_area_fraction", "%"),
    ("threshold separability", "qc_threshold_separability", ""),
    ("tissue outside mask", "qc_tissue_outside_mask", "%"),
    ("mask threshold", "mask_threshold", ""),
    ("flip (orientation source)", "flip", ""),
    ("orientation confidence", "orientation_confidence", ""),
    ("orientation ambiguous", "orientation_ambiguous", ""),
    ("orientation disagreement", "orientation_disagreement", ""),
    ("view source (confidence)", "view_source", ""),
    ("laterality source (confidence)", "laterality_source", ""),
    ("pectoral", "pectoral_found", ""),
    ("markers removed", "markers_removed", ""),
    ("film", "film", ""),
    ("crop box (x0, y0, x1, y1) of columns × rows", "crop_x0", ""),
    ("QC flags", "qc_flags", ""),
    ("mask warnings", "mask_warnings", ""),
    ("reader warnings", "read_warnings", ""),
    ("orientation", "orientation_reason", ""),
)


def _numbers(row: pd.Series) -> list[tuple[str, str]]:
    """(label, value) rows for the entry's table: columns the store lacks are left out, "–" marks a missing value."""
    return [(label, _cell(row, col, fmt) or "–") for label, col, fmt in NUMBERS if col in row.index]


def _cell(row: pd.Series, col: str, fmt: str) -> str:
    value = row.get(col)
    if fmt == "%" and _plain(value):
        return f"{float(value):.1%}"
    text = _plain(value)
    if col == "flip" and text:
        return f"{text} ({_plain(row.get('orientation_source')) or '?'})"
    if col in ("view_source", "laterality_source") and text:
        conf = _plain(row.get(col.replace("_source", "_confidence")))
        return f"{text} ({conf})" if conf else text
    if col == "pectoral_found" and text:
        return f"{text}: {_plain(row.get('pectoral_reason'))}"
    if col == "crop_x0" and text:
        box = ", ".join(_plain(row.get(c)) for c in ("crop_x0", "crop_y0", "crop_x1", "crop_y1"))
        return f"({box}) of {_plain(row.get('columns'))} × {_plain(row.get('rows'))}"
    return text
