"""Does the model learn? Train the demo's global-local model and the global-only baseline on the same synthetic data
and budget, evaluate both on a held-out synthetic test set generated with another seed, print both AUCs and times.

    python bench/learn.py --out /tmp/learn --exams 160 --test-exams 60
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mammokit.config import load_config
from mammokit.demo import DEMO_CONFIG, prepare_store
from mammokit.evaluation.evaluate import evaluate
from mammokit.training.config import TrainConfig
from mammokit.training.run import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/mammokit-learn"))
    ap.add_argument("--exams", type=int, default=160)
    ap.add_argument("--test-exams", type=int, default=60)
    ap.add_argument("--models", default="multiview_gmic,global_only")
    ap.add_argument("--difficulty", type=float, default=None, help="synthetic lesion difficulty (default: demo's)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="training config override")
    args = ap.parse_args()
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
            overrides += ["data.level=view", "model.kwargs.num_patches=0"]
        elif name.endswith("global"):
            overrides += ["model.kwargs.num_patches=0"]
        cfg = load_config(TrainConfig, DEMO_CONFIG, overrides)
        t1 = time.perf_counter()
        run = train(cfg)
        train_s = time.perf_counter() - t1
        m = evaluate(run, [test_store], out=run / "eval", split="all", n_boot=500, mc_passes=0, tta_passes=0,
                     gallery=0, report=False)
        results[name] = {"exam_auc": m["exam"]["roc_auc"], "exam_ci": m["exam"]["roc_auc_ci"],
                         "breast_auc": m["breast"]["roc_auc"], "train_seconds": round(train_s)}
        print(name, json.dumps(results[name]), flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
