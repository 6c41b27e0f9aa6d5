"""`mammokit demo`: the whole pipeline on synthetic data, on CPU, in minutes.

synth (train site, held-out test set from another seed, an external site with other vendors) → index →
preprocess → one `show` picture → train (curriculum: global, then global-local) → calibrate on the validation split →
evaluate on the test set and the external site → report.html.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from mammokit.config import load_config
from mammokit.errors import InvalidInputError
from mammokit.ids import default_salt

CONFIGS = Path(__file__).parent / "configs"
DEMO_CONFIG = CONFIGS / "train_demo.yaml"
DEMO_PREPROCESS = CONFIGS / "preprocess_demo.yaml"
SIZE_SCALE = 0.3
DIFFICULTY = 0.3  # fine structure x3, contrast x1.8 against the generator default (see docs/architecture.md)


def check_existing_synth(synth_dir: Path, **wanted: object) -> None:
    """Refuse to reuse synthetic data made with other settings (an older demo, other --exams): say what differs."""
    manifest_path = synth_dir / "synth.json"
    made = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    wanted = {**wanted, "size_scale": SIZE_SCALE}
    differs = [f"{k} {made.get(k)!r} (wanted {v!r})" for k, v in wanted.items() if made.get(k) != v]
    if differs:
        raise InvalidInputError(f"{synth_dir} was generated with other settings: {', '.join(differs)}; "
                                "delete its folder or choose another --out")


def prepare_store(root: str | Path, *, exams: int, seed: int, vendors: str | None = None, site: str = "site-A",
                  workers: int = 2, difficulty: float = DIFFICULTY) -> Path:
    """synth → index → preprocess into `root/store` (each step skipped when its output exists)."""
    from mammokit.datasets.index import build_index, write_index
    from mammokit.preprocess.config import PreprocessConfig
    from mammokit.preprocess.pipeline import run_pipeline
    from mammokit.synth import generate

    root = Path(root)
    if (root / "synth" / "labels.csv").is_file():
        check_existing_synth(root / "synth", exams=exams, seed=seed, site=site, difficulty=difficulty)
    else:
        generate(root / "synth", exams=exams, seed=seed, size_scale=SIZE_SCALE, vendors=vendors, site=site,
                 workers=workers, difficulty=difficulty)
    if not (root / "images.parquet").is_file():
        write_index(build_index(root / "synth", adapter="synth"), root / "images.parquet")
    cfg = load_config(PreprocessConfig, DEMO_PREPROCESS)
    run_pipeline(root / "images.parquet", root / "store", cfg, workers=workers, progress=False)
    return root / "store"


DEMO_ID_SALT = "mammokit-v1-public-salt"
"""The demo's identifier salt. Its patients are synthetic, and the patient-level split follows the order of the
patient hashes, so a salt of its own (not the installation's random one) keeps the demo's split, and so its numbers,
the same on every machine. `MAMMOKIT_ID_SALT`, when set, still wins."""


def run_demo(out: str | Path, *, exams: int = 400, test_exams: int = 300, external_exams: int = 100, seed: int = 0,
             echo: Callable[[str], None] = print, overrides: list[str] | None = None) -> dict:
    """Run every step; returns the paths of the run, metrics and report. `overrides` ("key=value") change the
    training config (configs/train_demo.yaml) after the demo's own settings.

    The held-out test set is large on purpose: with 300 exams the AUC's 95% CI is about ±0.04 wide and a perfectly
    calibrated model would measure an ECE of about 0.04 (with 60 exams: ±0.1 and 0.1), so the numbers mean something.
    """
    with default_salt(DEMO_ID_SALT):
        return _run_demo(out, exams=exams, test_exams=test_exams, external_exams=external_exams, seed=seed, echo=echo,
                         overrides=overrides or [])


def _run_demo(out: str | Path, *, exams: int, test_exams: int, external_exams: int, seed: int,
              echo: Callable[[str], None], overrides: list[str]) -> dict:
    from mammokit.evaluation.evaluate import calibrate, evaluate
    from mammokit.preprocess.show import write_show
    from mammokit.training.config import TrainConfig
    from mammokit.training.run import train

    out = Path(out)
    t0 = time.perf_counter()

    def step(msg: str) -> None:
        echo(f"[{time.perf_counter() - t0:6.0f} s] {msg}")

    step(f"synth → index → preprocess: {exams} training exams (seed {seed})")
    train_store = prepare_store(out / "train", exams=exams, seed=seed)
    step(f"held-out test set: {test_exams} exams from another seed; external site: {external_exams} exams, "
         "other vendors")
    test_store = prepare_store(out / "test", exams=test_exams, seed=seed + 1000)
    external_store = prepare_store(out / "external", exams=external_exams, seed=seed + 2000, vendors="external",
                                   site="site-B")
    import pandas as pd

    first = pd.read_parquet(train_store / "preprocessed.parquet").query("view_group == 'MLO'").iloc[0]
    picture = write_show(train_store, first["image_id"], out / "show.png")
    step(f"show: {picture}")
    cfg = load_config(TrainConfig, DEMO_CONFIG, [f"data.store={train_store}", f"runs_dir={out / 'runs'}",
                                                 f"seed={seed}", *overrides])
    step(f"train {cfg.model.name}: stages {[s.name for s in cfg.stages]}")
    run = train(cfg)
    step(f"trained: {run}")
    fitted = calibrate(run, train_store, split="val")
    step("calibrated on the validation split: " + "; ".join(
        f"{level} {c.chosen.describe()}" + ("" if c.chosen.method == "temperature" else
                                            f" (temperature alone: T = {c.temperature.params['T']:.3f})")
        + (f" [{c.note}]" if c.note else "") for level, c in fitted.items()))
    metrics = evaluate(run, [test_store, external_store], out=run / "eval", split="all", n_boot=2000)
    summary = {"exam": {"roc_auc": metrics["exam"]["roc_auc"], "roc_auc_ci": metrics["exam"]["roc_auc_ci"]},
               "breast": {"roc_auc": metrics["breast"]["roc_auc"], "roc_auc_ci": metrics["breast"]["roc_auc_ci"]},
               "test_store": str(test_store), "external": metrics["sites"][1:], "seconds": time.perf_counter() - t0}
    (run / "metrics.json").write_text(json.dumps({**json.loads((run / "eval" / "metrics.json").read_text()),
                                                  "demo": summary}, indent=1))
    ex, br = metrics["exam"], metrics["breast"]
    step(f"test exam AUC {ex['roc_auc']:.3f} [{ex['auc_ci_low']:.3f}, {ex['auc_ci_high']:.3f}], "
         f"breast AUC {br['roc_auc']:.3f} [{br['auc_ci_low']:.3f}, {br['auc_ci_high']:.3f}]")
    speed = metrics["speed_exams_per_s"]
    step("evaluation speed (exams/s): " + ", ".join(f"{k} {v:.2f}" for k, v in speed.items() if v))
    cal = ex["calibration"]
    step(f"exam-level ECE before / after temperature / after {cal['method'].split()[0]}: "
         f"{cal['ece_uniform_before']:.3f} / {cal['ece_uniform_temperature']:.3f} / "
         f"{cal['ece_uniform_after']:.3f} (a perfectly calibrated model would measure "
         f"{cal['ece_uniform_floor_after']:.3f} on {ex['n']} exams); FROC mean sensitivity: "
         f"{(metrics['froc'] or {}).get('mean_sensitivity', float('nan')):.3f}")
    for site in metrics["sites"][1:]:
        step(f"external {site['site']}: exam AUC {site['auc']:.3f} (drop {site['auc_drop']:+.3f}), ECE with the "
             f"model's calibration {site['ece_model_calibration']:.3f}")
    step(f"report: {metrics['report']}")
    return {"run": run, "metrics": run / "metrics.json", "report": metrics["report"], "show": picture}
