"""Run the preprocessing steps over an index: local process pool or a Dask cluster, resumable, atomic.

Per image (see `mammokit.preprocess` for the order): read → mask → orient → crop → resample → flip → pectoral →
stats → global image → patch grid → write. Each image's files are written atomically and its record
(`records/<name>.json`) is written last: an image is done exactly when its record exists with the current config
hash and store-row schema (`store_schema.ROW_SCHEMA`). A killed run therefore loses nothing already written, and a
re-run skips what is done; a record of an older schema is not done, so it is redone. A failing image becomes a row of
`failures.csv` with its reason; the run goes on. A row that breaks the schema is a bug and stops the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammokit.config import config_hash
from mammokit.dicom import FILM_SPACING_MM, DicomReadError, MammoImage, read_dicom
from mammokit.errors import InvalidInputError
from mammokit.ids import resolve_salt
from mammokit.io import atomic_write, atomic_write_text, remove_temp_files
from mammokit.isolate import ItemFailure, isolated_map
from mammokit.preprocess import (
    BreastMask,
    StatsAggregator,
    apply_transform,
    breast_mask,
    crop_box,
    decide_orientation,
    detect_pectoral,
    global_image,
    intensity_stats,
    original_to_stored_boxes,
    original_to_stored_mask,
    patch_grid,
    plan_transform,
    suppress_pectoral,
    view_group,
)
from mammokit.preprocess.config import PreprocessConfig
from mammokit.preprocess.mask import _mask_box, block_any, boxes_overlap  # _mask_box: breast_mask's own box rule
from mammokit.preprocess.orient import Orientation
from mammokit.preprocess.pectoral import PectoralResult
from mammokit.preprocess.preview import write_preview
from mammokit.preprocess.sources import SOURCE_LINK, link_index
from mammokit.preprocess.store import FORMATS, write_image, write_mask
from mammokit.preprocess.store_lock import store_lock
from mammokit.preprocess.store_schema import CARRIED, StoreRowError, build_row, is_current_record, row_stats
from mammokit.preprocess.view import laterality_from_content, view_from_content
from mammokit.reuse import OVERWRITE_HINT, config_changes, remove_entries, summarize

log = logging.getLogger(__name__)
CARRY_COLUMNS = CARRIED  # the index columns a store row keeps (declared in store_schema)


def file_stem(image_id: str) -> str:
    """A filesystem-safe, unique name for an image id (UIDs pass through; anything else is hashed)."""
    safe = all(c.isalnum() or c in "._-" for c in image_id) and 0 < len(image_id) <= 128
    return image_id if safe else hashlib.sha1(image_id.encode()).hexdigest()


def _stat_columns(prefix: str, stats: dict[str, Any]) -> dict[str, float]:
    out = {f"{prefix}{k}": float(stats[k]) for k in ("count", "mean", "std", "min", "max")}
    out.update({f"{prefix}{k.replace('.', '_')}": float(v) for k, v in stats["percentiles"].items()})
    return out


def process_image(row: dict[str, Any], store: str, cfg_dict: dict[str, Any], cfg_hash: str,
                  salt: str | None = None, preview_side: int = 0) -> dict[str, Any]:
    """Preprocess one index row into the store; returns its record, a row of `store_schema` (also written to
    records/<stem>.json). `salt` keys the identifier hashes the reader computes (`ids.resolve_salt` when None).
    `preview_side` > 0 also keeps the overlay picture of the DICOM pixels, long side at most that
    (`preview.write_preview`), so an overlay needs no second decode."""
    cfg = PreprocessConfig.model_validate(cfg_dict)
    store_path = Path(store)
    stem = file_stem(str(row["image_id"]))
    img = read_dicom(row["path"], salt=salt)
    if preview_side > 0:
        write_preview(store_path, stem, img.pixels, preview_side)
    if img.spacing_mm is not None:
        spacing = img.spacing_mm
    elif cfg.fallback_spacing_mm is not None:
        spacing = (cfg.fallback_spacing_mm, cfg.fallback_spacing_mm)
        img.warnings.append(f"no trusted pixel spacing; used fallback {cfg.fallback_spacing_mm} mm")
    elif img.film:
        spacing = (FILM_SPACING_MM, FILM_SPACING_MM)
        img.warnings.append(f"scanned film without pixel spacing: assumed {FILM_SPACING_MM} mm "
                            "(CBIS-DDSM/DDSM digitizers scan at 42–50 µm)")
    else:
        raise DicomReadError(row["path"], "no trusted pixel spacing (set fallback_spacing_mm to use a default)")
    bm = breast_mask(img.pixels, img.padding_mask, coarse_long_side=cfg.coarse_long_side)
    if bm.box is None:
        raise ValueError(f"{row['path']}: no breast found ({'; '.join(bm.warnings) or 'empty mask'})")
    orient = decide_orientation(bm.mask, img.laterality, img.patient_orientation, prefer=cfg.orientation_prefer)
    if cfg.film_edge_mm > 0:
        bm = _mask_without_film_edges(img.pixels, img.padding_mask, spacing, chest_wall_right=orient.flip, cfg=cfg)
        if bm.box is None:
            raise ValueError(f"{row['path']}: no breast found inside the film edges ({'; '.join(bm.warnings)})")
    box = crop_box(bm, spacing, margin_mm=cfg.margin_mm)
    record = plan_transform(img.pixels.shape, spacing, box, target_spacing_mm=cfg.spacing_mm, flip=orient.flip)
    stored = apply_transform(img.pixels, record, method=cfg.resample_method)
    mask = original_to_stored_mask(bm.mask, record, bm.scale)
    sides, view_pectoral = _sides_from_content(row, img, orient, mask, stored, record.output_spacing_mm[0])
    group = view_group(sides["view"])
    pect_info: dict[str, Any] = {"pectoral_found": False, "pectoral_line": None, "pectoral_reason": "not an MLO view"}
    pect_path = None
    if group == "MLO" and cfg.pectoral != "off":
        pect = view_pectoral or detect_pectoral(stored, mask, spacing_mm=record.output_spacing_mm[0])
        pect_info = {"pectoral_found": pect.found, "pectoral_line": json.dumps(pect.line) if pect.line else None,
                     "pectoral_reason": pect.reason}
        if pect.found:
            pect_path = f"masks/{stem}_pectoral.png"
            write_mask(store_path / pect_path, pect.mask)
            if cfg.pectoral == "suppress":
                stored = suppress_pectoral(stored, pect.mask)
    stats = intensity_stats(stored, mask)
    background = float(stats.min) - 1.0  # one constant below all tissue, so loaders can tell air from breast
    stored = np.where(mask, stored, np.float32(background)).astype(np.float32, copy=False)
    suffix = FORMATS[cfg.image_format]
    image_path, global_path, mask_path = f"images/{stem}{suffix}", f"global/{stem}{suffix}", f"masks/{stem}_breast.png"
    enc = write_image(store_path / image_path, stored)
    glob_img, glob_scale = global_image(stored, cfg.global_long_side)
    genc = write_image(store_path / global_path, glob_img)
    write_mask(store_path / mask_path, mask)
    patches = patch_grid(mask, cfg.patch_size, cfg.patch_stride, cfg.patch_min_breast_fraction)
    lesions = json.loads(row.get("lesions") or "[]")
    stored_lesions = []
    if lesions:
        boxes = np.array([[d["x0"], d["y0"], d["x1"], d["y1"]] for d in lesions], dtype=np.float64)
        for d, b in zip(lesions, original_to_stored_boxes(boxes, record), strict=True):
            stored_lesions.append({**d, "x0": float(b[0]), "y0": float(b[1]), "x1": float(b[2]), "y1": float(b[3])})
    out: dict[str, Any] = {k: row.get(k) for k in CARRY_COLUMNS if k in row}
    out.update(
        view_group=group, image_path=image_path, offset=enc["offset"], scale=enc["scale"],
        global_path=global_path, global_offset=genc["offset"], global_scale=genc["scale"],
        global_scale_row=glob_scale[0], global_scale_col=glob_scale[1],
        breast_mask_path=mask_path, pectoral_mask_path=pect_path, background=background,
        height=int(stored.shape[0]), width=int(stored.shape[1]), spacing_mm=float(record.output_spacing_mm[0]),
        source_spacing_row_mm=float(spacing[0]), source_spacing_col_mm=float(spacing[1]),
        spacing_source=img.spacing_source, flip=bool(record.flip), crop_x0=box[0], crop_y0=box[1], crop_x1=box[2],
        crop_y1=box[3], transform=json.dumps(record.to_dict()), orientation_source=orient.source,
        orientation_disagreement=bool(orient.disagreement), orientation_reason=orient.reason,
        mask_threshold=float(bm.threshold), mask_warnings="; ".join(bm.warnings), read_warnings="; ".join(img.warnings),
        lesions_stored=json.dumps(stored_lesions), n_patches=len(patches.boxes),
        patches=json.dumps({"boxes": patches.boxes.tolist(), "breast_fraction": patches.breast_fraction.tolist(),
                            "patch_size": patches.patch_size, "stride": patches.stride}),
        config_hash=cfg_hash, stats=json.dumps(stats.to_dict()), film=bool(img.film), **pect_info,
    )
    out.update(sides)
    out.update(_qc_columns(bm, orient, box))
    out.update(_stat_columns("stat_", stats.to_dict()))
    out = build_row(out)
    atomic_write_text(store_path / "records" / f"{stem}.json", json.dumps(out, default=_json_default))
    return out


def _sides_from_content(row: dict[str, Any], img: MammoImage, orient: Orientation, mask: np.ndarray,
                        stored: np.ndarray, spacing_mm: float) -> tuple[dict[str, Any], PectoralResult | None]:
    """View and laterality with their source and confidence: the index's (a label file or the header), else read
    from the image; and the pectoral search run to read the view (None when the view was known), for reuse.
    """
    view, lat = row.get("view") or img.view, row.get("laterality") or img.laterality
    out: dict[str, Any] = {
        "view": view, "view_source": (img.view_source if view == img.view else "index") if view else None,
        "view_confidence": None, "view_reason": None, "laterality": lat,
        "laterality_source": (img.laterality_source if lat == img.laterality else "index") if lat else None,
        "laterality_confidence": None, "laterality_reason": None}
    pect = None
    if view is None:
        pect = detect_pectoral(stored, mask, spacing_mm=spacing_mm)
        guess = view_from_content(mask, pect)
        out.update(view=guess.value, view_source=guess.source, view_confidence=round(guess.confidence, 3),
                   view_reason=guess.reason)
    if lat is None:
        guess = laterality_from_content(orient, img.patient_orientation)
        out.update(laterality=guess.value, laterality_source=guess.source,
                   laterality_confidence=round(guess.confidence, 3), laterality_reason=guess.reason)
    return out, pect


def _qc_columns(bm: BreastMask, orient: Orientation, box: tuple[int, int, int, int]) -> dict[str, Any]:
    """The quality-control numbers of one image (read by `mammokit qc`)."""
    in_crop = [m for m in bm.markers if boxes_overlap(m, box)]
    flags = []  # what no other column says (markers and ambiguity have their own)
    if bm.edge_bands:
        flags.append("film/plate edge cut: " + ", ".join(bm.edge_bands))
    return {"qc_mask_area_fraction": round(float(bm.area_fraction), 4),
            "qc_threshold_separability": round(float(bm.separability), 4),
            "qc_tissue_outside_mask": round(float(bm.tissue_outside), 4),
            "qc_air_level": float(bm.air_level), "qc_edge_bands": ",".join(bm.edge_bands),
            "qc_markers": json.dumps([list(m) for m in bm.markers]), "markers_removed": len(in_crop),
            "orientation_confidence": round(float(orient.confidence), 3),
            "orientation_ambiguous": bool(orient.ambiguous), "qc_flags": "; ".join(flags)}


def _mask_without_film_edges(pixels: np.ndarray, padding: np.ndarray | None, spacing: tuple[float, float], *,
                             chest_wall_right: bool, cfg: PreprocessConfig) -> BreastMask:
    """The breast mask with a `cfg.film_edge_mm` band along the top, bottom and nipple-side borders ignored.

    The band is passed to `breast_mask` as padding; afterwards each ignored band takes the mask values of the first
    row (column) inside it, so tissue that truly reaches the border (an MLO's pectoral at the top) stays whole.
    """
    ny, nx = math.ceil(cfg.film_edge_mm / spacing[0]), math.ceil(cfg.film_edge_mm / spacing[1])
    frame = np.zeros(pixels.shape, dtype=bool)
    frame[:ny], frame[-ny:] = True, True
    if chest_wall_right:  # the nipple side is on the left
        frame[:, :nx] = True
    else:
        frame[:, -nx:] = True
    bm = breast_mask(pixels, frame if padding is None else frame | padding, coarse_long_side=cfg.coarse_long_side)
    if bm.box is None:
        return bm
    band = block_any(frame, bm.factor)
    mask = bm.mask.copy()
    rows_out, cols_out = band.all(axis=1), band.all(axis=0)
    top = int(np.argmin(rows_out))  # first coarse row inside the frame
    bottom = len(rows_out) - int(np.argmin(rows_out[::-1]))  # one past the last
    mask[:top] = mask[top]
    mask[bottom:] = mask[bottom - 1]
    if chest_wall_right:
        left = int(np.argmin(cols_out))
        mask[:, :left] = mask[:, [left]]
    else:
        right = len(cols_out) - int(np.argmin(cols_out[::-1]))
        mask[:, right:] = mask[:, [right - 1]]
    return replace(bm, mask=mask, box=_mask_box(mask, bm.factor, bm.original_shape))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _safe_process(row: dict[str, Any], store: str, cfg_dict: dict[str, Any], cfg_hash: str,
                  salt: str | None = None, preview_side: int = 0) -> dict[str, Any]:
    """`process_image` that raises only for a row breaking the store schema (a bug): any other failure comes back
    as {"_failed": reason, "image_id", "safe_relpath"}, the file's raw path cut out of the reason."""
    try:
        return process_image(row, store, cfg_dict, cfg_hash, salt, preview_side)
    except StoreRowError:
        raise
    except DicomReadError as err:
        reason = err.reason
    except Exception as err:  # any other problem with one image must not stop the batch
        log.debug("preprocess failure on %s\n%s", row.get("path"), traceback.format_exc())
        reason = f"{type(err).__name__}: {err}"
    return _failure(row, reason)


def load_done(store: Path, image_id: str, cfg_hash: str) -> dict[str, Any] | None:
    """The record of an image already preprocessed with this config and store-row schema, or None."""
    path = store / "records" / f"{file_stem(image_id)}.json"
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if is_current_record(rec) and rec.get("config_hash") == cfg_hash else None


def _failure(row: dict[str, Any], reason: str) -> dict[str, Any]:
    """A failure row for failures.csv: the image's ids and the reason, the raw path (it may name the patient)
    replaced by `<file>`."""
    path = row.get("path")
    return {"_failed": reason.replace(str(path), "<file>") if path else reason, "image_id": row.get("image_id"),
            "safe_relpath": row.get("safe_relpath")}


def _run_local(todo: list[dict[str, Any]], fn: Callable[[dict[str, Any]], dict[str, Any]], workers: int,
               time_limit_s: float | None) -> Iterator[dict[str, Any]]:
    """Each row in a worker process (at least one, even serially): an image whose decoder crashes the process, hangs
    past `time_limit_s` or panics costs that image (a failure row); the worker is replaced and the rest go on."""
    for i, out in isolated_map(fn, todo, workers=max(1, workers), time_limit_s=time_limit_s):
        if isinstance(out, ItemFailure):
            if isinstance(out.error, StoreRowError):  # a bug, not a bad image: stop
                raise out.error
            out = _failure(todo[i], out.reason)
        yield out


def _run_dask(todo: list[dict[str, Any]], fn: Callable[[dict[str, Any]], dict[str, Any]],
              scheduler: str) -> Iterator[dict[str, Any]]:
    """Each row as a task on a Dask cluster; a task that errs, or whose workers the cluster lost (KilledWorker), is a
    failure row."""
    from distributed import Client, as_completed

    client = Client(scheduler)
    try:
        futures = {client.submit(fn, r): r for r in todo}
        for fut in as_completed(futures):
            try:
                out = fut.result()
            except (StoreRowError, KeyboardInterrupt, SystemExit):
                raise
            except BaseException as err:  # a PanicException (a BaseException) from the task included
                out = _failure(futures[fut], f"{type(err).__name__}: {err}")
            yield out
    finally:
        client.close()


# how long one image may take before its worker is killed and the image failed (real mammograms take seconds)
FILE_TIME_LIMIT_S = 600.0
# everything a run writes into a store; `overwrite` removes these (records first: an image without one is not done)
STORE_ENTRIES = ("records", "images", "global", "masks", "preprocessed.parquet", "view_stats.json", "failures.csv",
                 "summary.json", SOURCE_LINK, "preprocess_config.json")


def _store_conflict(store: Path, cfg: PreprocessConfig, cfg_hash: str, rows: list[dict[str, Any]]) -> str | None:
    """Why `store` cannot be resumed with this config and index (made with another config; holding images the
    index lacks, which the new table would orphan), or None."""
    try:
        saved = json.loads((store / "preprocess_config.json").read_text())
    except (OSError, ValueError):
        saved = None
    if saved is not None and saved.get("config_hash") != cfg_hash:
        changes = config_changes(saved.get("config") or {}, json.loads(json.dumps(cfg.model_dump(mode="json"))))
        what = summarize(changes) if changes else f"config hash {saved.get('config_hash')} → {cfg_hash}"
        return f"{store} was preprocessed with another config ({what})"
    wanted = {file_stem(str(r["image_id"])) for r in rows}
    records = store / "records"
    foreign = sorted(p.stem for p in records.glob("*.json") if not p.name.startswith(".") and p.stem not in wanted)
    if foreign:
        return (f"{store} holds {len(foreign)} images that are not in this index (e.g. {', '.join(foreign[:3])}): "
                "it was made from another index")
    return None


def _prepare_store(store: Path, cfg: PreprocessConfig, cfg_hash: str, rows: list[dict[str, Any]], *,
                   overwrite: bool) -> None:
    """Under the store's lock: remove what killed writes left, refuse a store of another config or index (with
    `overwrite`, empty the store whatever it holds), and record the config."""
    if remove_temp_files(store):
        log.info("%s: removed temporary files that interrupted writes left", store)
    conflict = _store_conflict(store, cfg, cfg_hash, rows)
    if conflict and not overwrite:
        raise InvalidInputError(f"{conflict}; {OVERWRITE_HINT}")
    if overwrite and any((store / name).exists() for name in STORE_ENTRIES):
        log.warning("%s: replacing the whole store (overwrite)%s", store, f": {conflict}" if conflict else "")
        remove_entries(store, STORE_ENTRIES)
    atomic_write_text(store / "preprocess_config.json",
                      json.dumps({"config": cfg.model_dump(), "config_hash": cfg_hash}))


def run_pipeline(
    index: str | Path | pd.DataFrame,
    store: str | Path,
    cfg: PreprocessConfig | None = None,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    time_limit_s: float | None = FILE_TIME_LIMIT_S,
    preview_side: int = 0,
) -> dict[str, Any]:
    """Preprocess every row of `index` into `store`; writes preprocessed.parquet, view_stats.json, failures.csv.

    One run writes a store at a time (`store_lock`: a second is refused). A store made with another config, or
    holding images of another index, is refused unless `overwrite`, which replaces the store whole. Locally every
    image is read in a worker process (`workers` of them, one when serial), so an image whose decoder crashes or
    runs past `time_limit_s` (None: no limit) fails alone; with `scheduler`, Dask runs the images. `preview_side`
    > 0 keeps each image's overlay picture too (`process_image`).
    """
    cfg = cfg or PreprocessConfig()
    store = Path(store)
    table = pd.read_parquet(index) if not isinstance(index, pd.DataFrame) else index
    h = config_hash(cfg)
    rows = [{k: (None if _is_missing(v) else v) for k, v in r.items()} for r in table.to_dict("records")]
    with store_lock(store, "preprocess") as holder:
        if "took_over" in holder:
            log.warning("%s: took over the lock of a run that is gone (%s)", store, holder["took_over"])
        _prepare_store(store, cfg, h, rows, overwrite=overwrite)
        link_index(store, index)
        return _preprocess_rows(rows, store, cfg, h, workers=workers, scheduler=scheduler, progress=progress,
                                time_limit_s=time_limit_s, preview_side=preview_side)


def _preprocess_rows(rows: list[dict[str, Any]], store: Path, cfg: PreprocessConfig, h: str, *, workers: int,
                     scheduler: str | None, progress: bool, time_limit_s: float | None,
                     preview_side: int = 0) -> dict[str, Any]:
    """Process the rows not done yet (resume), then write the store's tables and summary."""
    from tqdm import tqdm

    records, failures, todo = [], [], []
    for r in rows:
        done = load_done(store, str(r["image_id"]), h)
        (records.append(done) if done else todo.append(r))
    salt = resolve_salt() if todo else None  # once, in this process: workers get the key itself
    fn = partial(_safe_process, store=str(store), cfg_dict=cfg.model_dump(), cfg_hash=h, salt=salt,
                 preview_side=preview_side)
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), unit="img", disable=not progress, desc="preprocess")
    results: list[dict[str, Any]] = []
    outcomes = _run_dask(todo, fn, scheduler) if scheduler else _run_local(todo, fn, workers, time_limit_s)
    for res in outcomes if todo else ():
        results.append(res)
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    for res in results:
        (failures.append({"image_id": res["image_id"], "safe_relpath": res["safe_relpath"], "reason": res["_failed"]})
         if "_failed" in res else records.append(res))
    return _write_outputs(store, records, failures, {
        "images": len(rows), "processed": len(results) - len(failures), "skipped_done": len(rows) - len(todo),
        "failed": len(failures), "seconds": round(seconds, 2),
        "images_per_hour": round(len(results) / seconds * 3600) if seconds > 0 and results else None,
        "config_hash": h,
    })


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _write_outputs(store: Path, records: list[dict], failures: list[dict], summary: dict[str, Any]) -> dict[str, Any]:
    table = pd.DataFrame(records)
    if not table.empty:
        table = table.sort_values("image_id").reset_index(drop=True)
    atomic_write(store / "preprocessed.parquet", lambda tmp: table.to_parquet(tmp, index=False))
    agg = StatsAggregator()
    for rec in records:
        agg.add(rec.get("view"), row_stats(rec))
    groups = {g: s.to_dict() for g, s in agg.result().items()}
    atomic_write_text(store / "view_stats.json", json.dumps(groups, indent=1, default=_json_default))
    fail_df = pd.DataFrame(failures, columns=["image_id", "safe_relpath", "reason"])
    atomic_write(store / "failures.csv", lambda tmp: fail_df.to_csv(tmp, index=False))
    atomic_write_text(store / "summary.json", json.dumps(summary, indent=1))
    return summary
