"""GPU speed and memory of mammokit's models: training steps in fp32 and bf16 autocast, inference passes.

Needs a CUDA GPU (exits with a message otherwise). Per configuration it runs, on random inputs in the model's own
input format (``example_input``) and random labels, the training step the `MammoModule` runs (forward, `MammoLoss`
with the per-view auxiliary terms, backward, AdamW) and prints the median step time, items/s and the peak GPU
memory (``torch.cuda.max_memory_allocated``), for fp32 and for bf16 autocast (what ``precision: auto`` picks on a
bf16-capable GPU). Then eval-mode forward passes: plain and with dropout on (one MC-dropout pass), exams/s.

- ``demo``: the demo's four-view GMIC (cpu preset, 320x200 global, 640x400 full views), batch 16;
- ``mv_r18_1024``: four-view GMIC with ResNet-18 global and local nets at 1024x640 per view, K=6 crops of 256,
  batch 8;
- ``gmic_full``: the single-view GMIC full preset at 2944x1920 (GMIC's own input size), batch 4, with and without
  gradient checkpointing;
- ``recipe_effb3_2048``: the GPU recipes' model (configs/recipes/train_*.yaml): four-view GMIC, EfficientNet-B3 global
  network on 2048x1280 views with gradient checkpointing, ResNet-34 on K=6 crops of 256, batch 4 exams (one GPU's
  batch in the recipes).

Before the models, the data loader at the recipes' input (``configs/recipes/train_rsna.yaml``: 2048x1280 per view,
full_scale 0, batch 4 exams, its augmentation and positive ratio), as `bench/loader.py` builds it, on a synthetic
store made at full detector size and preprocessed with the rsna preprocess recipe (0.1 mm): exams/s per worker count
(``--loader-workers``). It is printed beside ``recipe_effb3_2048``'s training exams/s, so one sees which of the two
bounds training. The loader part runs on any machine (a CPU-only one runs it alone and skips the models).

Usage: ``python bench/gpu.py [--steps 10] [--only demo,gmic_full] [--loader-workers 12] [--loader-store DIR]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

CONFIGS = {
    "demo": dict(name="multiview_gmic", batch=16, kw=dict(preset="cpu", image_size=[320, 200], full_size=[640, 400],
                                                          patch_size=64, num_patches=4)),
    "mv_r18_1024": dict(name="multiview_gmic", batch=8,
                        kw=dict(global_backbone="resnet18", local_backbone="resnet18", image_size=[1024, 640],
                                patch_size=256, num_patches=6)),
    "gmic_full": dict(name="gmic", batch=4, kw=dict(preset="full")),
    "gmic_full_grad_ckpt": dict(name="gmic", batch=4, kw=dict(preset="full", grad_checkpointing=True)),
    "recipe_effb3_2048": dict(name="multiview_gmic", batch=4,
                              kw=dict(preset="full", global_backbone="efficientnet_b3", local_backbone="resnet34",
                                      image_size=[2048, 1280], patch_size=256, num_patches=6, top_t=0.02,
                                      grad_checkpointing=True, channels_last=True,
                                      backbone_kwargs={"drop_path_rate": 0.1}, breast_fusion="attention",
                                      exam_pool="max", dropout=0.2)),
}


def _targets(batch: dict, outputs, gen: torch.Generator) -> dict:
    """Random breast / exam labels in the layout `module.loss_targets` builds from a loader batch."""
    from mammokit.training.module import loss_targets

    b = outputs.exam_logit.shape[0]
    device = outputs.exam_logit.device
    breast = (torch.rand(b, 2, generator=gen) < 0.3).float().to(device)
    fake = {"breast_labels": breast, "breast_mask": torch.ones(b, 2, dtype=torch.bool, device=device),
            "exam_label": breast.amax(1), "view_mask": batch["view_mask"], "laterality": batch["laterality"]}
    return loss_targets(fake, outputs)


def _sync_time(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def measure(key: str, precision: str, steps: int, device: torch.device) -> dict:
    """Median training-step and inference times of one configuration at one precision."""
    from mammokit.models import create_model
    from mammokit.training.losses import MammoLoss

    cfg = CONFIGS[key]
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = create_model(cfg["name"], **cfg["kw"]).to(device)
    batch = {k: v.to(device) for k, v in model.example_input(cfg["batch"]).items()}
    cuda = device.type == "cuda"
    loss_fn = MammoLoss({"aux_weights": {"global": 1.0, "local": 1.0, "fusion": 0.0}})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=precision == "bf16"):
            out = model(batch)
            loss, _ = loss_fn(out, _targets(batch, out, gen))
        if not torch.isfinite(loss):
            raise RuntimeError(f"{key} {precision}: loss is {loss.item()}")
        loss.backward()
        opt.step()

    model.train()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        train_step()  # warm-up: cuDNN autotuning, allocator
    train = [_sync_time(train_step, device) for _ in range(steps)]
    peak_train = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")

    def forward() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=precision == "bf16"):
            model(batch)

    model.eval()
    forward()
    plain = [_sync_time(forward, device) for _ in range(steps)]
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.train(True)
    mc = [_sync_time(forward, device) for _ in range(steps)]
    b = cfg["batch"]
    result = dict(config=key, precision=precision, batch=b, train_step_s=statistics.median(train),
                  train_items_per_s=b / statistics.median(train), peak_train_gib=peak_train,
                  forward_items_per_s=b / statistics.median(plain), mc_pass_items_per_s=b / statistics.median(mc))
    return result


LOADER_RECIPE = "rsna"  # its data section: 2048x1280, full_scale 0, batch 4, the GPU recipes' augmentation
LOADER_MODEL = "recipe_effb3_2048"  # the model configuration at the same input


def measure_loader(workers: list[int], batches: int, exams: int, store_dir: Path | None) -> list[dict]:
    """Exams/s of the recipe's training loader (`bench/loader.py`'s, augmentation on) per worker count, on a synthetic
    store built at full detector size with the recipe's preprocessing (kept in `store_dir` when given, else removed)."""
    import pandas as pd

    from loader import build_store, loader_rate, make_loader  # bench/loader.py (this folder is on sys.path)
    from mammokit.config import load_config
    from mammokit.recipes import recipe_path
    from mammokit.training.config import TrainConfig

    data = load_config(TrainConfig, recipe_path(LOADER_RECIPE)).data
    size, batch = (int(data.input_size[0]), int(data.input_size[1])), int(data.batch_size)
    root = store_dir or Path(tempfile.mkdtemp(prefix="mammokit-gpu-bench-"))
    rows = []
    try:
        store = root / "store"
        if not (store / "preprocessed.parquet").is_file():
            t0 = time.perf_counter()
            build_store(root, exams, None, size_scale=1.0, preprocess=recipe_path(LOADER_RECIPE, "preprocess"),
                        workers=max(1, min(exams, os.cpu_count() or 1)))
            print(f"full-size synthetic store ({exams} exams): built in {time.perf_counter() - t0:.0f} s", flush=True)
        shape = pd.read_parquet(store / "preprocessed.parquet")[["height", "width"]].median()
        for epoch, n in enumerate(workers):
            loader = make_loader(store, size, int(data.full_scale), batch, n, epoch, augment=data.augment,
                                 ratio=float(data.positive_ratio), samples=batch * (batches + 1))
            load = os.getloadavg()[0]
            rate = loader_rate(loader, batches)
            rows.append(dict(input=list(size), full_scale=int(data.full_scale), batch=batch, workers=n,
                             stored_median_hw=[int(shape["height"]), int(shape["width"])],
                             exams_per_s=rate, cpus=os.cpu_count(), load_before=round(load, 2)))
            print(f"loader {size[0]}x{size[1]} full_scale {data.full_scale} batch {batch} (recipe:{LOADER_RECIPE} "
                  f"augmentation), stored {int(shape['height'])}x{int(shape['width'])}, {n:2d} workers: "
                  f"{rate:6.2f} exams/s  ({os.cpu_count()} CPUs, load {load:.1f} before)", flush=True)
    finally:
        if store_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def loader_vs_model(loader_rows: list[dict], model_rows: list[dict]) -> None:
    """One line per loader measurement and precision: which of the two bounds training at 2048 px."""
    steps = [r for r in model_rows if r["config"] == LOADER_MODEL]
    for lr in loader_rows:
        if not steps:
            print(f"2048 px: loader {lr['exams_per_s']:.2f} exams/s with {lr['workers']} workers; no training step "
                  f"measured here ({LOADER_MODEL} needs a CUDA GPU)")
        for r in steps:
            model = r["train_items_per_s"]
            bound = "loader" if lr["exams_per_s"] < model else "training step"
            per_worker = lr["exams_per_s"] / max(1, lr["workers"])
            need = (f" (at {per_worker:.2f} exams/s per worker, ~{math.ceil(model / per_worker)} workers keep up)"
                    if lr["workers"] else "")
            print(f"2048 px, {r['precision']}: loader {lr['exams_per_s']:.2f} exams/s ({lr['workers']} workers) vs "
                  f"training step {model:.2f} exams/s -> bound by the {bound}{need}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--only", default=None, help="comma-separated configurations (default: all)")
    parser.add_argument("--device", default="cuda", help="cuda (the point), or cpu for a quick check of the script")
    parser.add_argument("--loader-workers", default=None,
                        help="comma-separated DataLoader worker counts (default: the recipe's, at most the CPUs)")
    parser.add_argument("--loader-batches", type=int, default=10, help="timed loader batches per worker count")
    parser.add_argument("--loader-exams", type=int, default=8, help="exams in the full-size synthetic store")
    parser.add_argument("--loader-store", type=Path, default=None, help="keep (and reuse) the store in this folder")
    parser.add_argument("--skip-loader", action="store_true", help="measure the models only")
    args = parser.parse_args()
    device = torch.device(args.device)
    loader_rows = []
    if not args.skip_loader:
        from mammokit.config import load_config
        from mammokit.recipes import recipe_path
        from mammokit.training.config import TrainConfig

        default = min(load_config(TrainConfig, recipe_path(LOADER_RECIPE)).data.num_workers, os.cpu_count() or 1)
        workers = [int(w) for w in (args.loader_workers or str(default)).split(",")]
        loader_rows = measure_loader(workers, args.loader_batches, args.loader_exams, args.loader_store)
    if device.type == "cuda" and not torch.cuda.is_available():
        if not loader_rows:
            raise SystemExit("bench/gpu.py needs a CUDA GPU for the models (--device cpu only checks the script)")
        loader_vs_model(loader_rows, [])
        print(json.dumps({"loader": loader_rows}))
        print("no CUDA GPU: the model part was skipped (--device cpu only checks the script)")
        return
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}, bf16: {device.type == 'cpu' or torch.cuda.is_bf16_supported()}")
    keys = args.only.split(",") if args.only else list(CONFIGS)
    print(f"{'config':22s} {'prec':5s} {'batch':>5s} {'step s':>8s} {'train items/s':>14s} {'peak GiB':>9s} "
          f"{'fwd items/s':>12s} {'MC pass items/s':>16s}")
    rows = []
    for key in keys:
        for precision in ("fp32", "bf16"):
            try:
                r = measure(key, precision, args.steps, device)
            except torch.OutOfMemoryError:
                print(f"{key:22s} {precision:5s} out of GPU memory", flush=True)
                continue
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()  # the measured model is gone with measure()'s frame
            rows.append(r)
            print(f"{key:22s} {precision:5s} {r['batch']:5d} {r['train_step_s']:8.3f} {r['train_items_per_s']:14.1f} "
                  f"{r['peak_train_gib']:9.2f} {r['forward_items_per_s']:12.1f} {r['mc_pass_items_per_s']:16.1f}",
                  flush=True)
    if loader_rows:
        loader_vs_model(loader_rows, rows)
    print(json.dumps({"models": rows, "loader": loader_rows}) if loader_rows else json.dumps(rows))


if __name__ == "__main__":
    main()
