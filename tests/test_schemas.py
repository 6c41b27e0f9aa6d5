"""The two declared schemas: a store row (`preprocess.store_schema`) and a released model's config.json
(`release.config_schema`), each checked on write and on read, with a clear error for an old or foreign file."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conftest import SynthStore
from mammokit.errors import InvalidInputError
from mammokit.models import create_model
from mammokit.preprocess.config import PreprocessConfig
from mammokit.preprocess.pipeline import file_stem, run_pipeline
from mammokit.preprocess.store_schema import (
    BY_NAME,
    ROW_SCHEMA,
    StoreRowError,
    build_row,
    check_store_table,
    row_lesions,
    row_patches,
    row_pectoral_line,
    row_stats,
    row_transform,
)
from mammokit.release.config_schema import FORMAT, read_config, write_config
from mammokit.release.model import load_released, save_released, set_calibration
from mammokit.release.store_table import load_store_table

STORE_CFG = PreprocessConfig(spacing_mm=0.4, global_long_side=256, patch_size=64)  # as conftest's synth_store


# ------------------------------------------------------------------------------------------------------ store rows


@pytest.fixture(scope="module")
def table(synth_store: SynthStore) -> pd.DataFrame:
    return pd.read_parquet(synth_store.store / "preprocessed.parquet")


def _record(store: Path, image_id: str) -> dict[str, Any]:
    return json.loads((store / "records" / f"{file_stem(image_id)}.json").read_text())


def _values(record: dict[str, Any]) -> dict[str, Any]:
    """What `process_image` hands `build_row`: the record without its version."""
    return {k: v for k, v in record.items() if k != "row_schema"}


def test_every_pipeline_row_is_declared_and_validates(synth_store: SynthStore, table: pd.DataFrame) -> None:
    assert set(table.columns) <= set(BY_NAME) and (table["row_schema"] == ROW_SCHEMA).all()
    check_store_table(table, "preprocessed.parquet")
    for image_id in table["image_id"]:
        record = _record(synth_store.store, image_id)
        assert build_row(_values(record)) == record


@pytest.mark.parametrize(("change", "named"), [
    ({"height": None}, "height is missing"),
    ({"height": "429"}, "height is str"),
    ({"flip": 1}, "flip is int"),
    ({"spacing_mm": True}, "spacing_mm is bool"),
    ({"surprise": 1}, "unknown column 'surprise'"),
    ({"patches": json.dumps({"boxes": [[0, 0, 64, 64]], "breast_fraction": [1.0], "patch_size": 64})},
     "patches does not hold its declared structure (stride"),
    ({"transform": "{not json"}, "transform does not hold its declared structure"),
])
def test_a_wrong_row_fails_on_write(synth_store: SynthStore, table: pd.DataFrame, change: dict[str, Any],
                                    named: str) -> None:
    values = {**_values(_record(synth_store.store, table["image_id"].iloc[0])), **change}
    with pytest.raises(StoreRowError, match=re.escape(named)):
        build_row(values)


def test_a_row_missing_a_column_fails_on_write(synth_store: SynthStore, table: pd.DataFrame) -> None:
    values = _values(_record(synth_store.store, table["image_id"].iloc[0]))
    del values["transform"]
    with pytest.raises(StoreRowError, match="missing column 'transform'"):
        build_row(values)


def test_nullable_and_carried_columns_may_be_missing(synth_store: SynthStore, table: pd.DataFrame) -> None:
    values = _values(_record(synth_store.store, table["image_id"].iloc[0]))
    values.update(pectoral_line=None, cancer=float("nan"), bits_stored=np.int64(14))
    del values["split_group"]
    row = build_row(values)
    assert row["row_schema"] == ROW_SCHEMA and type(row["bits_stored"]) is int


def _store_copy(synth_store: SynthStore, tmp_path: Path) -> Path:
    store = tmp_path / "store"
    shutil.copytree(synth_store.store, store)
    return store


@pytest.mark.parametrize(("edit", "named"), [
    (lambda t: t.drop(columns=["row_schema"]), "no row_schema column"),
    (lambda t: t.assign(row_schema="mammokit-store-row/0"), "mammokit-store-row/0"),
    (lambda t: t.drop(columns=["transform"]), "columns missing: transform"),
    (lambda t: pd.DataFrame({"id": [1, 2], "score": [0.1, 0.9]}), "no row_schema column"),  # a foreign parquet
], ids=["no-version", "old-version", "missing-column", "foreign"])
def test_an_old_or_foreign_store_fails_on_read(synth_store: SynthStore, table: pd.DataFrame, tmp_path: Path,
                                               edit: Any, named: str) -> None:
    store = _store_copy(synth_store, tmp_path)
    path = store / "preprocessed.parquet"
    edit(table).to_parquet(path, index=False)
    with pytest.raises(InvalidInputError, match=re.escape(named)) as err:
        load_store_table(store)
    assert str(path) in str(err.value) and "mammokit preprocess" in str(err.value)


def test_a_current_store_loads(synth_store: SynthStore, table: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(load_store_table(synth_store.store), table)


def test_a_record_of_an_older_schema_is_redone(synth_store: SynthStore, table: pd.DataFrame, tmp_path: Path) -> None:
    store = _store_copy(synth_store, tmp_path)
    image_id = table["image_id"].iloc[3]
    path = store / "records" / f"{file_stem(image_id)}.json"
    old = {k: v for k, v in json.loads(path.read_text()).items() if k != "row_schema"}
    path.write_text(json.dumps(old))
    summary = run_pipeline(synth_store.index, store, STORE_CFG, workers=1, progress=False)
    assert summary["processed"] == 1 and summary["skipped_done"] == len(table) - 1
    assert json.loads(path.read_text())["row_schema"] == ROW_SCHEMA


def test_typed_accessors_read_the_json_columns(table: pd.DataFrame) -> None:
    for _, row in table.iterrows():
        assert row_transform(row).stored_shape == (row["height"], row["width"])
        patches = row_patches(row)
        assert patches.boxes.shape == (row["n_patches"], 4) and len(patches.breast_fraction) == row["n_patches"]
        assert row_stats(row).mean == pytest.approx(row["stat_mean"])
        line = row_pectoral_line(row)
        assert (line is not None) == bool(row["pectoral_found"])
        assert len(row_lesions(row)) == len(json.loads(row["lesions_stored"]))
    with_lesion = table[table["lesions_stored"] != "[]"].iloc[0]
    lesion = row_lesions(with_lesion)[0]
    assert {"x0", "y0", "x1", "y1", "malignant"} <= set(lesion)
    assert row_lesions(pd.Series({"image_id": "x", "lesions_stored": np.nan})) == []
    assert row_pectoral_line({"image_id": "x"}) is None


def test_a_malformed_json_cell_is_named_on_read(table: pd.DataFrame) -> None:
    row = table.iloc[0].copy()
    row["lesions_stored"] = json.dumps([{"x0": 1.0, "y0": 2.0}])
    with pytest.raises(InvalidInputError, match="column lesions_stored"):
        row_lesions(row)


# ------------------------------------------------------------------------------------------ released config.json

KW = {"preset": "cpu", "image_size": [64, 40], "full_size": [128, 80], "patch_size": 16, "num_patches": 2}
SECTIONS: dict[str, Any] = {
    "model": {"name": "multiview_gmic", "kwargs": KW},
    "input": {"level": "exam", "input_size": [64, 40], "full_scale": 2, "normalization": "image", "view_stats": {}},
    "preprocess": {"config": STORE_CFG.model_dump(), "config_hash": "abc"},
    "training": {"run": "tiny", "seed": 0, "exams": 3, "images": 12, "sites": ["site-A"], "vendors": ["x"],
                 "spacing_mm": 0.4, "stages": {"all": {"stage": "all", "epochs": 1, "best_score": None}},
                 "initial_weights": {}, "hardware": "cpu", "precision": "32-true"},
}


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("release") / "model"
    return save_released(folder, create_model("multiview_gmic", seed=0, **KW), SECTIONS)


def _copy_with_config(released: Path, tmp_path: Path, content: Any) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(released, folder)
    (folder / "config.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


def test_save_then_load_preserves_the_config(released: Path) -> None:
    _, config = load_released(released)
    assert config == {"format": FORMAT, "mammokit_version": config["mammokit_version"],
                      "intended_use": config["intended_use"], "temperature": 1.0, **SECTIONS}
    assert config == json.loads((released / "config.json").read_text())
    typed = read_config(released / "config.json")
    assert typed.input.input_size == (64, 40) and typed.training.stages["all"].epochs == 1


def test_an_old_format_fails_on_load(released: Path, tmp_path: Path) -> None:
    config = json.loads((released / "config.json").read_text())
    folder = _copy_with_config(released, tmp_path, {**config, "format": "mammokit-model/0"})
    with pytest.raises(InvalidInputError, match="format 'mammokit-model/0', this mammokit reads") as err:
        load_released(folder)
    assert str(folder / "config.json") in str(err.value)


@pytest.mark.parametrize(("edit", "named"), [
    (lambda c: c["input"].pop("level"), "input.level: missing"),
    (lambda c: c.pop("model"), "model: missing"),
    (lambda c: c["input"].update(full_scale="two"), "input.full_scale"),
    (lambda c: c.update(notes="hand-added"), "notes: unknown key"),
    (lambda c: c["training"].update(colour="blue"), "training.colour: unknown key"),
    (lambda c: c.update(temperature=-1.0), "temperature"),
    (lambda c: c["model"].update(name="ensemble"), "model: Value error, members are given exactly when"),
], ids=["missing-level", "missing-model", "wrong-type", "unknown-top-key", "unknown-nested-key", "negative-T",
        "ensemble-without-members"])
def test_a_missing_or_invalid_field_fails_on_load(released: Path, tmp_path: Path, edit: Any, named: str) -> None:
    config = json.loads((released / "config.json").read_text())
    edit(config)
    folder = _copy_with_config(released, tmp_path, config)
    with pytest.raises(InvalidInputError, match=re.escape(named)) as err:
        load_released(folder)
    assert str(folder / "config.json") in str(err.value)


@pytest.mark.parametrize("content", [
    {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 768},  # another tool's config.json
    [1, 2, 3],
    "{ not json",
], ids=["other-tool", "not-an-object", "not-json"])
def test_a_foreign_config_fails_on_load(released: Path, tmp_path: Path, content: Any) -> None:
    folder = _copy_with_config(released, tmp_path, content)
    with pytest.raises(InvalidInputError, match=r"not a (mammokit released-model config|readable JSON file)") as err:
        load_released(folder)
    assert str(folder / "config.json") in str(err.value)


def test_an_onnx_model_card_is_not_taken_for_a_released_config(released: Path, tmp_path: Path) -> None:
    card = {**json.loads((released / "config.json").read_text()), "onnx": {"file": "model.onnx", "opset": 17}}
    folder = _copy_with_config(released, tmp_path, card)
    with pytest.raises(InvalidInputError, match="model card beside an exported ONNX file"):
        load_released(folder)


def test_an_invalid_config_fails_on_write_before_anything_is_written(tmp_path: Path) -> None:
    model = create_model("multiview_gmic", seed=0, **KW)
    with pytest.raises(InvalidInputError, match=re.escape("input.normalization")):
        save_released(tmp_path / "bad", model, {**SECTIONS, "input": {**SECTIONS["input"], "normalization": "zscore"}})
    with pytest.raises(InvalidInputError, match="extra: unknown key"):
        save_released(tmp_path / "bad", model, {**SECTIONS, "extra": 1})
    assert not (tmp_path / "bad").exists()


def test_set_calibration_is_checked(released: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(released, folder)
    before = (folder / "config.json").read_text()
    bad = {"exam": {"chosen": {"method": "platt", "params": {}}, "temperature": {"method": "temperature",
                                                                                 "params": {"T": 1.2}}}}
    with pytest.raises(InvalidInputError, match=re.escape("calibration.exam.chosen")):
        set_calibration(folder, bad, temperature=1.2, source="val")
    assert (folder / "config.json").read_text() == before
    good = {"exam": {**bad["exam"], "chosen": {"method": "temperature", "params": {"T": 1.2}}}}
    set_calibration(folder, good, temperature=1.2, source="val")
    _, config = load_released(folder)
    assert config["calibration"]["exam"]["chosen"]["params"] == {"T": 1.2} and config["temperature_source"] == "val"


def test_write_config_checks_a_typed_config_edited_in_place(released: Path, tmp_path: Path) -> None:
    config = read_config(released / "config.json")
    config.training.stages["all"].epochs = 2
    write_config(tmp_path / "config.json", config)
    assert read_config(tmp_path / "config.json").training.stages["all"].epochs == 2
    config.input.level = "patient"  # pydantic does not check assignments: writing does
    with pytest.raises(InvalidInputError, match=re.escape("input.level")):
        write_config(tmp_path / "config.json", config)
