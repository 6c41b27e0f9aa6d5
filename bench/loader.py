"""Is the data loader the bottleneck of training? Exams/s of the exam loader against the demo model's step time.

Builds a synthetic store twice (synth → index → preprocess): at the demo's settings (`preprocess_demo.yaml`,
size_scale 0.3, 0.3 mm) and at 0.1 mm, where a breast is ~2000 px long. Then measures, with the training loader
exactly as `MammoDataModule` builds it (balanced sampler, augmentation on, `collate`):

- exams/s with 2 DataLoader workers (and with 0, i.e. the per-exam cost in one process) at the demo's data section
  (`train_demo.yaml`: 256x160 global input, full view ×2 = 512x320) and at a 2048-long-side full view
  (1024x640 global input, ×2);
- the demo model's training step (forward + backward + AdamW) on a batch from that loader, with 2 torch threads;
- the two together in one loop: 2 workers feeding 2 training threads on the same cores, and loading inline
  (0 workers) between steps.

Usage: ``.venv/bin/python bench/loader.py [--exams 16] [--batches 12] [--out /tmp/mammokit-loader-bench]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader

from mammokit.config import load_config
from mammokit.data.augment import build_augment, loader_worker_kwargs
from mammokit.data.dataset import ExamDataset, collate
from mammokit.data.sampler import BalancedCaseSampler
from mammokit.demo import DEMO_CONFIG, DEMO_PREPROCESS, SIZE_SCALE
from mammokit.preprocess.config import PreprocessConfig
from mammokit.training.config import TrainConfig
from mammokit.training.module import MammoModule

CASES = {  # name: (preprocess spacing override, global input size, full_scale)
    "demo (256x160, full 512x320)": (None, (256, 160), 2),
    "2048 full view (1024x640, full 2048x1280)": (0.1, (1024, 640), 2),
}


def build_store(root: Path, exams: int, spacing_mm: float | None, *, size_scale: float = SIZE_SCALE,
                preprocess: Path = DEMO_PREPROCESS, workers: int = 2) -> Path:
    """A synthetic store at the demo's preprocessing settings (optionally another output spacing), or at those of the
    `preprocess` config, from DICOMs at `size_scale` of the full detector size."""
    from mammokit.datasets.index import build_index, write_index
    from mammokit.preprocess.pipeline import run_pipeline
    from mammokit.synth import generate

    generate(root / "raw", exams=exams, seed=0, size_scale=size_scale, masks=False, prevalence=0.5, workers=workers)
    write_index(build_index(root / "raw", adapter="synth"), root / "images.parquet")
    cfg = load_config(PreprocessConfig, preprocess)
    if spacing_mm is not None:
        cfg = cfg.model_copy(update={"spacing_mm": spacing_mm, "global_long_side": 1024})
    run_pipeline(root / "images.parquet", root / "store", cfg, workers=workers, progress=False)
    return root / "store"


def make_loader(store: Path, size: tuple[int, int], full_scale: int, batch: int, workers: int,
                epoch: int, *, augment: Mapping[str, Any] | None = None, ratio: float = 0.5,
                samples: int | None = None) -> DataLoader:
    """The training loader of `MammoDataModule` (augmentation on: `augment`, default the demo's), over every exam of the
    store; `samples` exams per epoch (default 4 per exam), positive fraction `ratio`."""
    table = pd.read_parquet(store / "preprocessed.parquet")
    ds = ExamDataset(table, store, input_size=size, full_scale=full_scale, augment=build_augment(dict(augment or {})),
                     seed=0)
    sampler = BalancedCaseSampler(ds.item_groups(), ds.item_labels(), ratio_start=ratio,
                                  num_samples=samples or len(ds) * 4, seed=0, with_epoch=True)
    sampler.set_epoch(epoch)
    return DataLoader(ds, sampler=sampler, batch_size=batch, collate_fn=collate, **loader_worker_kwargs(workers))


def loader_rate(loader: DataLoader, batches: int) -> float:
    """Exams/s over `batches` batches, after one warm-up batch (worker start-up excluded)."""
    it = iter(loader)
    next(it)
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        n += len(next(it)["exam_id"])
    return n / (time.perf_counter() - t0)


def demo_module(size: tuple[int, int], full_scale: int) -> tuple[MammoModule, torch.optim.Optimizer]:
    """The demo config's model and loss at the given input size, with its AdamW."""
    cfg = load_config(TrainConfig, DEMO_CONFIG)
    kwargs = {**cfg.model.kwargs, "image_size": list(size), "full_size": [size[0] * full_scale, size[1] * full_scale]}
    module = MammoModule(cfg.model.name, kwargs, cfg.loss.kwargs, lr=cfg.optim.lr)
    return module, module.configure_optimizers()["optimizer"]


def step_time(module: MammoModule, opt: torch.optim.Optimizer, batch: dict, repeats: int) -> float:
    """Median seconds of one training step (forward, loss, backward, optimiser) on `batch`."""
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        loss, _, _ = module._step(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step allocates
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def combined_rate(loader: DataLoader, module: MammoModule, opt: torch.optim.Optimizer, batches: int) -> float:
    """Exams/s of loader + training step together, as in a real epoch."""
    it = iter(loader)
    next(it)
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(it)
        loss, _, _ = module._step(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(batch["exam_id"])
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exams", type=int, default=16)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per measurement")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--out", type=Path, default=None, help="store folder (default: a temporary one, removed)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    batch_size = load_config(TrainConfig, DEMO_CONFIG).data.batch_size
    root = args.out or Path(tempfile.mkdtemp(prefix="mammokit-loader-bench-"))
    results = []
    try:
        stores: dict[float | None, Path] = {}
        for name, (spacing, size, scale) in CASES.items():
            if spacing not in stores:
                folder = root / f"store-{spacing or 'demo'}"
                t0 = time.perf_counter()
                stores[spacing] = (folder / "store") if (folder / "store/preprocessed.parquet").is_file() \
                    else build_store(folder, args.exams, spacing)
                print(f"store {folder.name}: {time.perf_counter() - t0:.1f} s", flush=True)
            store = stores[spacing]
            shape = pd.read_parquet(store / "preprocessed.parquet")[["height", "width"]].median()
            rate0 = loader_rate(make_loader(store, size, scale, batch_size, 0, 0), max(2, args.batches // 3))
            rate2 = loader_rate(make_loader(store, size, scale, batch_size, 2, 1), args.batches)
            module, opt = demo_module(size, scale)
            batch = next(iter(make_loader(store, size, scale, batch_size, 0, 2)))
            step = step_time(module, opt, batch, args.steps)
            n_together = max(2, args.batches // 3)
            both = combined_rate(make_loader(store, size, scale, batch_size, 2, 3), module, opt, n_together)
            inline = combined_rate(make_loader(store, size, scale, batch_size, 0, 4), module, opt, n_together)
            row = {"case": name, "stored_median_hw": [int(shape["height"]), int(shape["width"])],
                   "batch": batch_size, "exams_per_s_0_workers": round(rate0, 2),
                   "exams_per_s_2_workers": round(rate2, 2), "train_step_s": round(step, 3),
                   "exams_per_s_model_only": round(batch_size / step, 2),
                   "exams_per_s_loader_plus_model": round(both, 2), "exams_per_s_inline_loading": round(inline, 2),
                   "bottleneck": "loader" if rate2 < batch_size / step else "model"}
            results.append(row)
            print(json.dumps(row), flush=True)
    finally:
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)
    print("\n| case | stored image | loader exams/s (0 / 2 workers) | train step (batch 4) | model exams/s "
          "| together exams/s (2 / 0 workers) | bottleneck |\n|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['case']} | {r['stored_median_hw'][0]}x{r['stored_median_hw'][1]} | "
              f"{r['exams_per_s_0_workers']} / {r['exams_per_s_2_workers']} | {r['train_step_s']} s | "
              f"{r['exams_per_s_model_only']} | {r['exams_per_s_loader_plus_model']} / "
              f"{r['exams_per_s_inline_loading']} | {r['bottleneck']} |")


if __name__ == "__main__":
    main()
