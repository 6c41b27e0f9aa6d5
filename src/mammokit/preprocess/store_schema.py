"""The declared schema of a store row: one image's row of `preprocessed.parquet`, also its `records/<stem>.json`.

`COLUMNS` names every column with its type, whether it may be missing (None) and a one-line meaning. Six columns
hold JSON text whose parsed structure is declared here too (`transform` a `TransformRecord`, `lesions_stored` a list
of `StoredLesion`, `patches` a `PatchGrid`, `stats` a `StatsRecord`, `pectoral_line` two points, `qc_markers` a list
of boxes). Readers use `row_transform`, `row_lesions`, `row_patches`, `row_stats` and `row_pectoral_line` instead of
parsing the text themselves.

Versioned: every row records `row_schema` = `ROW_SCHEMA`; renaming, removing, adding or re-typing a column (or
changing what it means) bumps the version. Checked in three places:

- on write, `build_row` (what `process_image` returns and writes): a missing, unknown or wrongly typed key is a bug
  in the writer and raises `StoreRowError`;
- on reading a record back, `is_current_record` (the pipeline's skip-what-is-done): a record of another schema is
  not done, so re-running `mammokit preprocess` into the same store redoes it;
- on reading a table, `check_store_table` (used by `release.store_table.load_store_table`), vectorised: a store
  written by an older mammokit (no `row_schema` column, or another version) or a foreign parquet raises
  `InvalidInputError` naming the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from mammokit.errors import InvalidInputError
from mammokit.preprocess.geometry import TransformRecord
from mammokit.preprocess.patches import PatchIndex
from mammokit.preprocess.stats import PERCENTILES, IntensityStats, percentile_key

ROW_SCHEMA = "mammokit-store-row/3"  # /2: no raw `path`, a `safe_relpath` instead; /3: no raw UIDs, hashed image_id
REBUILD = ("re-run `mammokit preprocess` to rebuild it, into a fresh store or into this one "
           "(records of an older schema are redone)")


class StoreRowError(ValueError):
    """A row that does not match `COLUMNS` reached the writer: a bug in the code that built it."""


# ------------------------------------------------------------------------------ parsed structure of the JSON columns


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoredLesion(BaseModel):
    """One lesion box of `lesions_stored`, on the stored grid (xyxy, pixel edges); the index's other keys pass."""

    model_config = ConfigDict(extra="allow")
    x0: float
    y0: float
    x1: float
    y1: float
    kind: str = ""
    malignant: int = 0
    lesion_id: str = ""


class PatchGrid(_Strict):
    """`patches`: the dense patch grid on the stored image (see `mammokit.preprocess.patches.PatchIndex`)."""

    boxes: list[tuple[int, int, int, int]]  # xyxy on the stored grid
    breast_fraction: list[float]  # breast pixels / patch area, one per box
    patch_size: int
    stride: int


class StatsRecord(_Strict):
    """`stats`: `IntensityStats.to_dict()` of the stored image's breast pixels."""

    count: int
    mean: float
    std: float
    min: float
    max: float
    percentiles: dict[str, float]  # "p0.5", "p1", "p50", "p99", "p99.5"


Point = tuple[float, float]
PectoralLine = tuple[Point, Point]  # (x, y) on the top edge, (x, y) on the chest-wall edge; stored grid
MarkerBoxes = list[tuple[float, float, float, float]]  # xyxy in original DICOM pixels


def _checker(structure: Any) -> Callable[[Any], Any]:
    adapter = TypeAdapter(structure)
    return adapter.validate_python


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "transform": TransformRecord.from_dict,
    "lesions_stored": _checker(list[StoredLesion]),
    "patches": _checker(PatchGrid),
    "stats": _checker(StatsRecord),
    "pectoral_line": _checker(PectoralLine),
    "qc_markers": _checker(MarkerBoxes),
}


# ------------------------------------------------------------------------------------------------------ the columns


@dataclass(frozen=True)
class Column:
    """One column: its name, type (`KINDS`), what it means, whether it may be None/NaN, whether every row has it and
    whether `process_image` copies it from the index row."""

    name: str
    kind: str
    meaning: str
    nullable: bool = False
    required: bool = True  # False: copied from the index only when the index has the column
    carried: bool = False


KINDS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int, np.integer),
    "float": (float, int, np.floating, np.integer),
    "bool": (bool, np.bool_),
    "number": (int, float, np.integer, np.floating),  # an index value that may arrive as int or float
    "label": (str, int, float, np.integer, np.floating),  # a user's grouping key: text or a number
    "json": (str,),  # JSON text; its parsed structure is in _PARSERS
}


def _carried(name: str, kind: str, meaning: str, *, required: bool = False) -> Column:
    return Column(name, kind, meaning + " (from the index)", nullable=not required, required=required, carried=True)


def _stat_columns() -> tuple[Column, ...]:
    moments = [Column(f"stat_{k}", "float", f"breast-pixel {k} of the stored image (as in `stats`)")
               for k in ("count", "mean", "std", "min", "max")]
    percentiles = [Column("stat_" + percentile_key(q).replace(".", "_"), "float",
                          f"{q:g}th percentile of the stored image's breast pixels") for q in PERCENTILES]
    return (*moments, *percentiles)


COLUMNS: tuple[Column, ...] = (
    _carried("image_id", "str", "salted hash of the SOP Instance UID (else of the file's path): the raw UIDs stay in "
             "the local index", required=True),
    _carried("patient_id", "str", "salted hash of the patient"),
    _carried("exam_id", "str", "salted hash of the study (one exam)"),
    _carried("safe_relpath", "str", "the original's path under the dataset root, patient-named folders replaced by "
             "the patient hash (raw paths stay in the index: `preprocess.sources`)"),
    Column("laterality", "str", "L or R: the index's, else the header's, else read from the image", nullable=True,
           carried=True),
    Column("view", "str", "view code (CC, MLO, ...): the index's, else the header's, else read from the image",
           nullable=True, carried=True),
    _carried("rows", "number", "rows of the original pixel array"),
    _carried("columns", "number", "columns of the original pixel array"),
    _carried("manufacturer", "str", "Manufacturer of the header"),
    _carried("manufacturer_model", "str", "ManufacturerModelName of the header"),
    _carried("presentation_intent", "str", "FOR PRESENTATION or FOR PROCESSING"),
    _carried("photometric", "str", "PhotometricInterpretation (MONOCHROME1/2)"),
    _carried("bits_stored", "number", "BitsStored of the header"),
    _carried("cancer", "number", "1 when this breast has a cancer, 0 when not"),
    _carried("benign", "number", "1 when this breast has a benign finding"),
    _carried("birads", "number", "BI-RADS assessment category"),
    _carried("density", "str", "ACR breast density A-D"),
    _carried("site", "str", "the collection or hospital the image comes from"),
    _carried("split_group", "label", "the dataset's own split or grouping"),
    _carried("split", "str", "train / val / test, when the index assigns one"),
    Column("view_source", "str", "where `view` came from: index, a header tag, or content", nullable=True),
    Column("view_confidence", "float", "confidence 0-1 of a view read from the image (None otherwise)",
           nullable=True),
    Column("view_reason", "str", "why the image read as that view (None when not read from the image)",
           nullable=True),
    Column("laterality_source", "str", "where `laterality` came from: index, a header tag, or content",
           nullable=True),
    Column("laterality_confidence", "float", "confidence 0-1 of a laterality read from the image", nullable=True),
    Column("laterality_reason", "str", "why the image read as that side (None when not read from the image)",
           nullable=True),
    Column("view_group", "str", "CC, MLO or OTHER (`view_group(view)`)"),
    Column("image_path", "str", "the stored image, relative to the store"),
    Column("offset", "float", "uint16 decoding of the stored image: value = offset + scale * stored"),
    Column("scale", "float", "uint16 decoding of the stored image (see offset)"),
    Column("global_path", "str", "the downsized global image, relative to the store"),
    Column("global_offset", "float", "uint16 decoding of the global image"),
    Column("global_scale", "float", "uint16 decoding of the global image"),
    Column("global_scale_row", "float", "global-image rows per stored-image row"),
    Column("global_scale_col", "float", "global-image columns per stored-image column"),
    Column("breast_mask_path", "str", "breast mask PNG on the stored grid, relative to the store"),
    Column("pectoral_mask_path", "str", "pectoral mask PNG, relative to the store (None: none found)",
           nullable=True),
    Column("background", "float", "the value written outside the breast (below all tissue)"),
    Column("height", "int", "rows of the stored image"),
    Column("width", "int", "columns of the stored image"),
    Column("spacing_mm", "float", "row spacing of the stored image in mm"),
    Column("source_spacing_row_mm", "float", "row spacing of the original in mm (as used)"),
    Column("source_spacing_col_mm", "float", "column spacing of the original in mm (as used)"),
    Column("spacing_source", "str", "the header tag the spacing came from (None: fallback or film default)",
           nullable=True),
    Column("flip", "bool", "the stored image is mirrored left-right (chest wall on the left)"),
    Column("crop_x0", "int", "crop box in original pixels: left (inclusive)"),
    Column("crop_y0", "int", "crop box in original pixels: top (inclusive)"),
    Column("crop_x1", "int", "crop box in original pixels: right (exclusive)"),
    Column("crop_y1", "int", "crop box in original pixels: bottom (exclusive)"),
    Column("transform", "json", "`TransformRecord`: maps between the original and the stored grid"),
    Column("orientation_source", "str", "what decided the flip: content, PatientOrientation, laterality, default"),
    Column("orientation_disagreement", "bool", "the header and a confident content decision disagree"),
    Column("orientation_reason", "str", "one sentence on the flip decision"),
    Column("mask_threshold", "float", "intensity threshold of the breast mask"),
    Column("mask_warnings", "str", "breast-mask warnings, '; '-joined"),
    Column("read_warnings", "str", "DICOM reading warnings, '; '-joined"),
    Column("lesions_stored", "json", "list of `StoredLesion`: the index's lesion boxes on the stored grid"),
    Column("n_patches", "int", "number of boxes in `patches`"),
    Column("patches", "json", "`PatchGrid`: the patch boxes and their breast fractions"),
    Column("config_hash", "str", "hash of the preprocessing config that wrote the row"),
    Column("stats", "json", "`StatsRecord`: intensity statistics of the breast pixels"),
    Column("film", "bool", "the original is a scanned film"),
    Column("pectoral_found", "bool", "a pectoral line was found (MLO views)"),
    Column("pectoral_line", "json", "`PectoralLine` on the stored grid (None: not found or not MLO)",
           nullable=True),
    Column("pectoral_reason", "str", "why the pectoral line was or was not accepted"),
    Column("qc_mask_area_fraction", "float", "breast mask area / image area"),
    Column("qc_threshold_separability", "float", "how well the mask threshold separates air and tissue (0-1)"),
    Column("qc_tissue_outside_mask", "float", "fraction of tissue-bright pixels left outside the mask"),
    Column("qc_air_level", "float", "intensity of the air around the breast"),
    Column("qc_edge_bands", "str", "film/plate edges cut by the mask, ','-joined"),
    Column("qc_markers", "json", "`MarkerBoxes`: bright markers found, in original pixels"),
    Column("markers_removed", "int", "markers inside the crop box"),
    Column("orientation_confidence", "float", "confidence 0-1 of the flip decision"),
    Column("orientation_ambiguous", "bool", "the flip rests on weak or conflicting evidence"),
    Column("qc_flags", "str", "other QC findings, '; '-joined"),
    *_stat_columns(),
    Column("row_schema", "str", f"the schema version of the row: {ROW_SCHEMA}"),
)
BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
REQUIRED: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.required)
CARRIED: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.carried)  # copied from the index row, in this order


# ---------------------------------------------------------------------------------------------------- checking rows


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float | np.floating) and math.isnan(value))


def _type_problem(column: Column, value: Any, parse_json: bool) -> str | None:
    """What is wrong with one value of `column` (None when nothing is)."""
    if _is_missing(value):
        return None if column.nullable else "is missing (None/NaN) but not nullable"
    wrong_bool = isinstance(value, bool | np.bool_) and column.kind != "bool"
    if wrong_bool or not isinstance(value, KINDS[column.kind]):
        return f"is {type(value).__name__} {value!r:.60}, expected {column.kind}"
    if column.kind == "json" and parse_json:
        try:
            _PARSERS[column.name](json.loads(value))
        except (ValueError, TypeError, KeyError) as err:  # JSONDecodeError and ValidationError are ValueErrors
            return f"does not hold its declared structure ({_one_line(err)})"
    return None


def row_problems(row: Mapping[str, Any], *, parse_json: bool = True) -> list[str]:
    """Every way `row` differs from `COLUMNS`: missing required keys, unknown keys, wrong types, another version."""
    problems = [f"missing column {name!r}" for name in REQUIRED if name not in row]
    problems += [f"unknown column {name!r}" for name in row if name not in BY_NAME]
    for name, value in row.items():
        column = BY_NAME.get(name)
        problem = _type_problem(column, value, parse_json) if column else None
        if problem:
            problems.append(f"{name} {problem}")
    if row.get("row_schema", ROW_SCHEMA) != ROW_SCHEMA:
        problems.append(f"row_schema is {row.get('row_schema')!r}, not {ROW_SCHEMA!r}")
    return problems


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (JSON and parquet then see plain int/float/bool)."""
    return value.item() if isinstance(value, np.generic) else value


def build_row(values: Mapping[str, Any]) -> dict[str, Any]:
    """The store row of `values` (every column but `row_schema`), checked against `COLUMNS`.

    Raises:
        StoreRowError: a missing, unknown or wrongly typed column (a bug in the code that built `values`).
    """
    row = {k: _plain(v) for k, v in values.items()}
    row["row_schema"] = ROW_SCHEMA
    problems = row_problems(row)
    if problems:
        raise StoreRowError(f"store row of {row.get('image_id')!r} breaks {ROW_SCHEMA}: " + "; ".join(problems))
    return row


def is_current_record(record: Any) -> bool:
    """Whether a record read back from `records/` is a valid row of this schema (JSON columns not re-parsed)."""
    return isinstance(record, dict) and not row_problems(record, parse_json=False)


def check_store_table(table: pd.DataFrame, path: str | Path) -> None:
    """Check a whole store table: the `row_schema` version of every row and the required columns.

    Raises:
        InvalidInputError: naming `path`: a store of an older mammokit, of another schema, or not a store at all.
    """
    if "row_schema" not in table.columns:
        raise InvalidInputError(f"{path}: not a store of this mammokit version (no row_schema column: written by "
                                f"an older mammokit, or not a mammokit store); {REBUILD}")
    versions = table["row_schema"].astype("string").fillna("<missing>")
    other = sorted(set(versions[versions != ROW_SCHEMA]))
    if other:
        raise InvalidInputError(f"{path}: rows of store schema {', '.join(other)}, this mammokit reads "
                                f"{ROW_SCHEMA}; {REBUILD}")
    missing = [name for name in REQUIRED if name not in table.columns]
    if missing:
        raise InvalidInputError(f"{path}: not a valid {ROW_SCHEMA} store, columns missing: {', '.join(missing)}; "
                                f"{REBUILD}")


# ------------------------------------------------------------------------------------- typed access to JSON columns


def _one_line(err: Exception) -> str:
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}" if where else first["msg"]
    return str(err).splitlines()[0]


def _parsed(row: Mapping[str, Any], name: str) -> Any:
    """The parsed, checked structure of JSON column `name`; None when the cell is empty or the column absent."""
    text = row.get(name)
    if _is_missing(text) or text == "":
        return None
    try:
        return _PARSERS[name](json.loads(text))
    except (ValueError, TypeError, KeyError) as err:
        raise InvalidInputError(f"store row {row.get('image_id')!r}: column {name} does not hold its declared "
                                f"structure ({_one_line(err)}); {REBUILD}") from err


def row_transform(row: Mapping[str, Any]) -> TransformRecord:
    """The row's `TransformRecord` (original DICOM grid ↔ stored grid)."""
    record = _parsed(row, "transform")
    if record is None:
        raise InvalidInputError(f"store row {row.get('image_id')!r}: no transform recorded; {REBUILD}")
    return record


def row_lesions(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The row's lesion boxes on the stored grid (x0, y0, x1, y1, kind, malignant, ...); [] when none."""
    lesions = _parsed(row, "lesions_stored")
    return [lesion.model_dump() for lesion in lesions] if lesions else []


def row_patches(row: Mapping[str, Any]) -> PatchIndex:
    """The row's patch grid as a `PatchIndex` (int64 (N, 4) boxes, float (N,) breast fractions)."""
    grid = _parsed(row, "patches")
    if grid is None:
        raise InvalidInputError(f"store row {row.get('image_id')!r}: no patches recorded; {REBUILD}")
    boxes = np.asarray(grid.boxes, dtype=np.int64).reshape(-1, 4)
    return PatchIndex(boxes, np.asarray(grid.breast_fraction, dtype=np.float64), grid.patch_size, grid.stride)


def row_stats(row: Mapping[str, Any]) -> IntensityStats:
    """The row's breast-pixel `IntensityStats`."""
    stats = _parsed(row, "stats")
    if stats is None:
        raise InvalidInputError(f"store row {row.get('image_id')!r}: no stats recorded; {REBUILD}")
    return IntensityStats.from_dict(stats.model_dump())


def row_pectoral_line(row: Mapping[str, Any]) -> PectoralLine | None:
    """The pectoral line ((x, y) top, (x, y) chest wall) on the stored grid; None when not found or not MLO."""
    return _parsed(row, "pectoral_line")
