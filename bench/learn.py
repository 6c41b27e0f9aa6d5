"""Does the model learn? Train the demo's global-local model and the global-only baseline on the same synthetic data
and budget, evaluate both on a held-out synthetic test set generated with another seed, print both AUCs and times.

    python bench/learn.py --out /tmp/learn --exams 400 --test-exams 200

Prints, per model, the per-epoch curves (mean training loss, validation loss and AUCs) and then the held-out AUCs and
training seconds. Both models get the demo's schedule (same epochs, about the same seconds: the global-only model
takes single views, four times as many items per epoch at about a quarter of the cost each).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from mammokit.config import load_config
from mammokit.demo import DEMO_CONFIG, prepare_store
from mammokit.evaluation.evaluate import evaluate
from mammokit.evaluation.metrics import paired_auc_difference
from mammokit.training.config import TrainConfig
from mammokit.training.run import train


def epoch_curves(run: Path) -> pd.DataFrame:
    """Per stage and epoch: mean training loss over the logged steps, validation loss and AUCs."""
    log = pd.read_csv(run / "metrics.csv")
    train = log.dropna(subset=["train/loss"]).groupby(["stage", "epoch"])["train/loss"].mean().rename("train_loss")
    val = log.dropna(subset=["val/loss"]).set_index(["stage", "epoch"])[["val/loss", "val/exam_auc", "val/breast_auc"]]
    return pd.concat([train, val], axis=1).reset_index().round(3)


def compare(run_a: Path, run_b: Path) -> dict:
    """Paired patient-level bootstrap of AUC(a) - AUC(b) on the held-out cases both runs were evaluated on."""
    out = {}
    for level, keys in (("exam", ["exam_id"]), ("breast", ["exam_id", "laterality"])):
        a, b = (pd.read_parquet(r / "eval" / "predictions.parquet") for r in (run_a, run_b))
        a, b = a[a["level"] == level], b[b["level"] == level]
        both = a.merge(b[[*keys, "logit"]], on=keys, suffixes=("_a", "_b")).dropna(subset=["label"])
        if len(both) != len(a):
            raise ValueError(f"{run_a} and {run_b} were not evaluated on the same {level} rows")
        out[level] = {k: round(v, 4) for k, v in paired_auc_difference(
            both["label"].astype(int), both["logit_a"], both["logit_b"], both["patient_id"], n_boot=2000).items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/mammokit-learn"))
    ap.add_argument("--exams", type=int, default=400)
    ap.add_argument("--test-exams", type=int, default=200)
    ap.add_argument("--models", default="multiview_gmic,global_only")
    ap.add_argument("--difficulty", type=float, default=None, help="synthetic lesion difficulty (default: demo's)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="training config override")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("RUN_A", "RUN_B"),
                    help="only compare two evaluated runs (paired bootstrap of the AUC difference)")
    args = ap.parse_args()
    if args.compare:
        print(json.dumps(compare(*args.compare), indent=1))
        return
    t0 = time.perf_counter()
    extra = {"difficulty": args.difficulty} if args.difficulty is not None else {}
    train_store = prepare_store(args.out / "train", exams=args.exams, seed=0, **extra)
    test_store = prepare_store(args.out / "test", exams=args.test_exams, seed=1000, **extra)
    print(f"data ready in {time.perf_counter() - t0:.0f} s", flush=True)
    results = {}
    for name in args.models.split(","):
        overrides = [f"data.store={train_store}", f"runs_dir={args.out / 'runs'}", f"name={name}",
                     f"model.name={name}", *args.overrides]
        if name == "global_only":  # single-view baseline: items are views; exams roll up by max over breasts
            overrides += ["data.level=view", "model.kwargs.num_patches=0", "stages.0.freeze=[]"]
        elif name.endswith("global"):  # no local network: the demo's stage-1 freeze list would match nothing
            overrides += ["model.kwargs.num_patches=0", "stages.0.freeze=[]"]
        cfg = load_config(TrainConfig, DEMO_CONFIG, overrides)
        t1 = time.perf_counter()
        run = train(cfg)
        train_s = time.perf_counter() - t1
        print(epoch_curves(run).to_string(index=False), flush=True)
        m = evaluate(run, [test_store], out=run / "eval", split="all", n_boot=500, mc_passes=0, tta_passes=0,
                     gallery=0, report=False)
        results[name] = {"name": cfg.name, "exam_auc": m["exam"]["roc_auc"], "exam_ci": m["exam"]["roc_auc_ci"],
                         "breast_auc": m["breast"]["roc_auc"], "train_seconds": round(train_s)}
        print(name, json.dumps(results[name]), flush=True)
    runs = [args.out / "runs" / r["name"] for r in results.values()]
    if len(runs) == 2:
        results["difference"] = compare(*runs)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
