"""The packaged recipes (configs/recipes/): every YAML validates, keeps its GPU-scale promises, installs with the
package, and runs end to end on the tiny synthetic store with only sizes and hardware overridden, splitting its one
store as the recipe says; the external-validation recipe trains, calibrates on val and evaluates the run's test split
plus two other sites, one table.
"""

from __future__ import annotations

import html
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import timm

from conftest import TINY_INPUT, SynthStore
from mammokit.config import ConfigError, load_config
from mammokit.errors import InvalidInputError
from mammokit.preprocess.config import PreprocessConfig
from mammokit.recipes import RECIPES_DIR, list_recipes, main, recipe_path, resolve_config
from mammokit.training.config import TrainConfig

DATASETS = ("cbis-ddsm", "cmmd", "inbreast", "rsna", "vindr")
TRAIN_RECIPES = (*DATASETS, "rsna-external")
# what a tiny CPU run must change, and nothing else: sizes, hardware, where things are, how long it runs
HARDWARE = ["data.num_workers=0", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.strategy=auto",
            "trainer.precision=32-true", "trainer.progress_bar=false"]
SIZES = [f"data.input_size=[{TINY_INPUT[0]},{TINY_INPUT[1]}]", "model.kwargs.global_backbone=mammokit_resnet18n",
         "model.kwargs.local_backbone=mammokit_resnet18n", "model.kwargs.global_pretrained=null",
         "model.kwargs.local_pretrained=null", "model.kwargs.patch_size=16"]
LENGTH = ["trainer.max_steps=1", "trainer.max_steps_per_epoch=1"]
ALLOWED_CHANGES = {"runs_dir", "data.store", "data.num_workers", "data.input_size", "model.kwargs.global_backbone",
                   "model.kwargs.local_backbone", "model.kwargs.global_pretrained", "model.kwargs.local_pretrained",
                   "model.kwargs.patch_size", "model.kwargs.image_size", "trainer.accelerator", "trainer.devices",
                   "trainer.strategy", "trainer.precision", "trainer.progress_bar", "trainer.max_steps",
                   "trainer.max_steps_per_epoch"}
TINY_PREPROCESS = ["spacing_mm=0.4", "global_long_side=256", "patch_size=64", "patch_stride=32"]
GEOMETRY = ("spacing_mm", "resample_method", "margin_mm", "orientation_prefer", "pectoral")
# data.split_source, val_fraction, test_fraction: the official test split where the dataset has one (20 % of its
# training patients validate), else a share of the patients held out (val: 20 % of the rest, as before)
SPLITS = {"rsna": ("auto", 0.17, 0.15), "rsna-external": ("auto", 0.17, 0.15), "vindr": ("official", 0.2, 0.0),
          "cbis-ddsm": ("official", 0.2, 0.0), "cmmd": ("auto", 0.16, 0.2), "inbreast": ("auto", 0.14, 0.3)}


def tiny_overrides(recipe: str, store: Path, runs: Path) -> list[str]:
    """The overrides that turn a GPU recipe into a one-step CPU run on `store`."""
    stages = load_config(TrainConfig, recipe_path(recipe)).stages
    return [f"data.store={store}", f"runs_dir={runs}", *HARDWARE, *SIZES, *LENGTH,
            *(f"stages.{i}.epochs=1" for i in range(len(stages)))]


def flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: value}; list items of mappings by index (stages.0.epochs), other lists whole."""
    if isinstance(data, list) and all(isinstance(v, dict) for v in data):
        data = dict(enumerate(data))
    if not isinstance(data, dict) or not data:
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def changed_keys(a: TrainConfig, b: TrainConfig) -> set[str]:
    fa, fb = flat(a.model_dump(mode="json")), flat(b.model_dump(mode="json"))
    keys = {k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}
    return {re.sub(r"^stages\.\d+\.epochs$", "stages.N.epochs", k) for k in keys}


def test_the_recipes_are_the_packaged_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert list_recipes("train") == sorted(TRAIN_RECIPES)
    assert list_recipes("preprocess") == sorted(DATASETS)
    assert resolve_config("recipe:rsna", "train") == RECIPES_DIR / "train_rsna.yaml"
    assert resolve_config("recipe:cbis-ddsm", "preprocess") == RECIPES_DIR / "preprocess_cbis-ddsm.yaml"
    assert resolve_config(Path("my.yaml"), "train") == Path("my.yaml") and resolve_config(None, "train") is None
    with pytest.raises(InvalidInputError, match=r"no train recipe 'rnsa'.*rsna, rsna-external"):
        resolve_config("recipe:rnsa", "train")
    main(["list"])  # python -m mammokit.recipes list
    assert len(capsys.readouterr().out.splitlines()) == len(DATASETS) + len(TRAIN_RECIPES)
    with pytest.raises(SystemExit, match="usage"):
        main(["hold-out", "images.parquet"])
    # they install with the package
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "configs/recipes/*.yaml" in data["tool"]["setuptools"]["package-data"]["mammokit"]


@pytest.mark.parametrize("name", TRAIN_RECIPES)
def test_train_recipe_validates_at_gpu_scale(name: str) -> None:
    path = recipe_path(name)
    cfg = load_config(TrainConfig, path)
    assert cfg.name == name and cfg.data.store == f"work/{name.removesuffix('-external')}/store"
    assert max(cfg.data.input_size) == 2048 and cfg.data.full_scale == 0  # crops come from the full-res view
    kw = cfg.model.kwargs
    assert cfg.model.name == "multiview_gmic" and kw["num_patches"] > 0 and kw["grad_checkpointing"]
    for part in ("global", "local"):  # ImageNet weights by timm tag, a tag timm knows
        source = kw[f"{part}_pretrained"]
        assert source.startswith("timm:"), source
        assert f"{kw[f'{part}_backbone']}.{source[5:]}" in timm.list_pretrained(kw[f"{part}_backbone"] + "*")
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "gpu"
    assert cfg.trainer.strategy == "auto" and cfg.trainer.devices == 1  # --set trainer.devices=4 gives DDP
    first, *rest = cfg.stages
    assert first.freeze and all(p.startswith("encoder.local") or p == "encoder.mil" for p in first.freeze)
    assert first.loss["aux_weights"]["local"] == 0 and rest and not rest[-1].freeze
    assert "recipe:" + name in path.read_text() and "mammokit evaluate runs/" + name in path.read_text()


def test_the_imbalance_settings_follow_each_dataset() -> None:
    cfg = {name: load_config(TrainConfig, recipe_path(name)) for name in TRAIN_RECIPES}
    rsna = cfg["rsna"]
    assert rsna.loss.kwargs["kind"] == "focal" and rsna.data.positive_ratio_end < rsna.data.positive_ratio <= 0.5
    assert rsna.loss.kwargs["positive_only_smoothing"] and rsna.loss.box_saliency == 0
    for name in ("vindr", "cbis-ddsm", "inbreast"):  # datasets with lesion boxes use them
        assert cfg[name].loss.box_saliency > 0, name
    assert cfg["cmmd"].loss.box_saliency == 0
    # the external recipe is the rsna recipe with wider intensity augmentation
    external = cfg["rsna-external"]
    assert changed_keys(rsna, external) - {"name"} <= {f"data.augment.{k}" for k in
                                                        ("p_gamma", "gamma", "p_contrast", "contrast", "p_noise",
                                                         "noise_sigma")}
    assert external.data.augment["gamma"][1] > rsna.data.augment["gamma"][1]


@pytest.mark.parametrize("name", DATASETS)
def test_preprocess_recipe_validates(name: str) -> None:
    cfg = load_config(PreprocessConfig, recipe_path(name, "preprocess"))
    assert cfg.fallback_spacing_mm is None  # a missing spacing is refused, never guessed (film has its own default)
    ref = load_config(PreprocessConfig, recipe_path("rsna", "preprocess"))
    # one geometry for every dataset: a model trained on one store reads every other
    assert {k: getattr(cfg, k) for k in GEOMETRY} == {k: getattr(ref, k) for k in GEOMETRY}
    assert cfg.spacing_mm == 0.1


def test_the_recipe_model_builds_at_recipe_size() -> None:
    """The recipes' model (one for all) with its real backbones, randomly initialised, at 2048x1280."""
    from mammokit.models import create_model

    kwargs = {name: load_config(TrainConfig, recipe_path(name)).model.kwargs for name in TRAIN_RECIPES}
    assert all(k == kwargs["rsna"] for k in kwargs.values())
    kw = {k: v for k, v in kwargs["rsna"].items() if not k.endswith("_pretrained")}
    model = create_model("multiview_gmic", **kw)
    enc = model.encoder
    assert type(enc.global_net.model).__name__ == "EfficientNet" and enc.global_net.grad_checkpointing
    assert type(enc.local_net.model).__name__ == "ResNet" and enc.config.patch_size == 256
    example = model.example_input(1)
    assert tuple(example["images"].shape[-2:]) == (2048, 1280) and "full" not in example
    # bench/gpu.py measures exactly this model (its speed and memory are what docs/datasets.md extrapolates)
    spec = importlib.util.spec_from_file_location("bench_gpu", Path(__file__).parents[1] / "bench" / "gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    measured = bench.CONFIGS["recipe_effb3_2048"]
    assert measured["name"] == "multiview_gmic" and measured["kw"] == kw
    assert measured["batch"] == load_config(TrainConfig, recipe_path("rsna")).data.batch_size


@pytest.mark.parametrize("name", TRAIN_RECIPES)
def test_each_recipe_splits_its_one_store(name: str) -> None:
    """One store per dataset, split by training: the official test split where the dataset has one, else a share of
    the patients held out; the header's commands calibrate on its val split and evaluate its test split."""
    path = recipe_path(name)
    cfg, text = load_config(TrainConfig, path), path.read_text()
    store = cfg.data.store
    assert (cfg.data.split_source, cfg.data.val_fraction, cfg.data.test_fraction) == SPLITS[name]
    if cfg.data.split_source != "official":  # 80 % of the patients kept from the test split train, as before
        assert cfg.data.val_fraction == pytest.approx(0.2 * (1 - cfg.data.test_fraction), abs=1e-9)
    assert f"mammokit calibrate runs/{name} --data {store} --split val" in text
    assert f"mammokit evaluate runs/{name} --data {store} " in text and "--split test" in text
    assert f"--out {store} --config recipe:{name.removesuffix('-external')}" in text
    assert not re.search(r"hold-out|/dev/|/test/|--split all", text)
    if name in DATASETS:
        pre = recipe_path(name, "preprocess").read_text()
        assert f"mammokit preprocess work/{name}/images.parquet --out {store} --config recipe:{name}" in pre


def official_split_table(store: Path) -> tuple[pd.DataFrame, set[str]]:
    """The store's table with an official train/test in `split_group`, as the VinDr and CBIS-DDSM adapters write it:
    a patient without and one with a cancer in test, a third with one image in test and the rest in train (test
    whole, as `official_splits` reads it), everyone else in train. Returns it and the official test patients."""
    from mammokit.release.store_table import load_store_table

    table = load_store_table(store)
    cancer = table.groupby("patient_id")["cancer"].max()
    neg, pos = sorted(cancer.index[cancer == 0]), sorted(cancer.index[cancer == 1])
    split_group = table["patient_id"].isin([neg[0], pos[0]]).map({True: "test", False: "train"}).astype(object)
    split_group.iloc[(table["patient_id"] == neg[1]).to_numpy().nonzero()[0][:1]] = "test"
    return table.assign(split_group=split_group.to_numpy()), {neg[0], pos[0], neg[1]}


@pytest.mark.parametrize("name", DATASETS)
def test_recipe_trains_one_step_and_evaluates(name: str, synth_store: SynthStore, tmp_path: Path) -> None:
    """The recipe as written (stages, loss, sampler, box supervision, augmentation, splits) with only sizes, hardware
    and length overridden: both curriculum stages run, the model is released, and `evaluate --split test` scores
    exactly the patients the recipe's split held out. The synthetic store's split_group holds fold numbers, not an
    official split, so it is split at random with the recipe's fractions (12 exams leave val and test a positive
    each at 0.15, 0.2 and 0.3); the official-split recipes get its table with an official train/test written into
    split_group, as their adapters write it (`split_source: official` refuses a store without one)."""
    from mammokit.evaluation.evaluate import evaluate
    from mammokit.training.run import train

    recipe = load_config(TrainConfig, recipe_path(name))
    cfg = load_config(TrainConfig, recipe_path(name), tiny_overrides(name, synth_store.store, tmp_path / "runs"))
    assert changed_keys(recipe, cfg) <= ALLOWED_CHANGES | {"stages.N.epochs"}
    table, official_test = official_split_table(synth_store.store) if name in ("vindr", "cbis-ddsm") else (None, None)
    run = train(cfg, table)
    for i, stage in enumerate(recipe.stages):
        assert (run / "stages" / f"{i}-{stage.name}" / "done.json").is_file()
    released = json.loads((run / "model" / "config.json").read_text())
    assert released["training"]["stages"].keys() == {s.name for s in recipe.stages}
    assert released["training"]["split_source"] == ("official" if official_test else "random")
    splits = pd.read_csv(run / "splits.csv", dtype=str)
    assert splits.groupby("patient_id")["split"].nunique().max() == 1 and set(splits["split"]) == {"train", "val",
                                                                                                   "test"}
    test_patients = set(splits.loc[splits["split"] == "test", "patient_id"])
    if official_test:
        assert test_patients == official_test
    else:
        assert abs(len(test_patients) - recipe.data.test_fraction * splits["patient_id"].nunique()) < 1
    test_exams = set(splits.loc[splits["split"] == "test", "exam_id"])
    metrics = evaluate(run, [synth_store.store], out=tmp_path / "eval", split="test", n_boot=20, mc_passes=0,
                       tta_passes=0, report=False, device="cpu")
    assert metrics["split"] == "test" and metrics["training_overlap_exams"] == 0
    assert metrics["exam"]["n"] == len(test_exams) and [s["site"] for s in metrics["sites"]] == ["site-A"]
    scored = pd.read_parquet(tmp_path / "eval" / "predictions.parquet").query("level == 'exam'")
    assert set(scored["exam_id"]) == test_exams


def _site_store(root: Path, *, vendors: str, site: str, preprocess: str, seed: int) -> Path:
    """A tiny store of one more site: 2 exams (one with a cancer), preprocessed with a recipe's config (sizes cut)."""
    from mammokit.datasets.index import build_index, write_index
    from mammokit.preprocess.pipeline import run_pipeline
    from mammokit.synth import generate

    generate(root / "raw", exams=2, seed=seed, size_scale=0.2, masks=False, prevalence=0.5, vendors=vendors,
             site=site)
    write_index(build_index(root / "raw", adapter="synth"), root / "images.parquet")
    cfg = load_config(PreprocessConfig, recipe_path(preprocess, "preprocess"), TINY_PREPROCESS)
    assert run_pipeline(root / "images.parquet", root / "store", cfg, workers=1, progress=False)["failed"] == 0
    return root / "store"


@pytest.mark.slow
def test_external_validation_recipe_gives_one_row_per_site(synth_store: SynthStore, tmp_path: Path) -> None:
    """The rsna-external command sequence at toy size, one store per dataset: the RSNA-style session store, two more
    sites (scanned film through the cbis-ddsm preprocess recipe, other vendors through the cmmd one); train with the
    recipe's own split (15 % of the patients held out as test), calibrate on the run's val split, evaluate `--split
    test` over the RSNA store and the two sites, evaluated whole: metrics.json and report.html carry one row per
    site, and the first row scores exactly the run's test exams."""
    from mammokit.evaluation.evaluate import calibrate, evaluate
    from mammokit.training.run import train

    film = _site_store(tmp_path / "film", vendors="film", site="site-B", preprocess="cbis-ddsm", seed=31)
    other = _site_store(tmp_path / "other", vendors="external", site="site-C", preprocess="cmmd", seed=32)

    cfg = load_config(TrainConfig, resolve_config("recipe:rsna-external", "train"),
                      tiny_overrides("rsna-external", synth_store.store, tmp_path / "runs"))
    assert (cfg.data.split_source, cfg.data.test_fraction) == ("auto", 0.15)  # the recipe's split, not overridden
    run = train(cfg)
    splits = pd.read_csv(run / "splits.csv", dtype=str)
    test_exams = set(splits.loc[splits["split"] == "test", "exam_id"])
    assert test_exams and set(splits["split"]) == {"train", "val", "test"}
    fitted = calibrate(run, synth_store.store, split="val", device="cpu")
    assert set(fitted) == {"exam", "breast"}
    metrics = evaluate(run, [synth_store.store, film, other], out=run / "eval", split="test", n_boot=20, mc_passes=1,
                       tta_passes=1, gallery=1, device="cpu")

    saved = json.loads((run / "eval" / "metrics.json").read_text())
    assert saved["split"] == "test" and [s["site"] for s in saved["sites"]] == ["site-A", "site-B", "site-C"]
    assert [s["n_exams"] for s in saved["sites"]] == [len(test_exams), 2, 2]
    assert saved["training_overlap_exams"] == 0 and all(s["training_overlap_exams"] == 0 for s in saved["sites"])
    scored = pd.read_parquet(run / "eval" / "predictions.parquet").query("level == 'exam'")
    assert set(scored.loc[scored["store"] == str(synth_store.store), "exam_id"]) == test_exams
    assert scored.groupby("site_name")["exam_id"].nunique().to_dict() == {"site-A": len(test_exams), "site-B": 2,
                                                                          "site-C": 2}
    assert "split=val" in saved["temperature_source"]
    assert any("FILM" in v.upper() for v in saved["sites"][1]["vendors"])
    page = html.unescape(Path(metrics["report"]).read_text())
    table = page[page.index('<table class="site-table">'):]
    rows = re.findall(r"<tr><td>([^<]*)</td>", table[:table.index("</table>")])
    assert rows == ["site-A", "site-B", "site-C"]


def test_the_cli_takes_recipe_names() -> None:
    """`mammokit train recipe:NAME` and `preprocess --config recipe:NAME` read the packaged file (here refused
    before any work starts, naming it); an unknown name lists the known ones."""
    from typer.testing import CliRunner

    from mammokit.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["train", "recipe:rsna", "--set", "data.batch_size=0"])
    assert isinstance(result.exception, ConfigError) and "train_rsna.yaml" in str(result.exception)
    result = runner.invoke(app, ["preprocess", "images.parquet", "--config", "recipe:vindr", "--set", "spacing_mm=0"])
    assert isinstance(result.exception, ConfigError) and "preprocess_vindr.yaml" in str(result.exception)
    result = runner.invoke(app, ["train", "recipe:nope"])
    assert isinstance(result.exception, InvalidInputError) and "rsna-external" in str(result.exception)
