"""Speed and memory of mammokit's models on CPU (2 threads, fp32, random weights: compute is what matters).

Each configuration runs in a fresh subprocess so its peak RSS (``resource.getrusage``, measured above the
RSS after ``import torch``) is its own. Prints a table and the ratios the issue asks for:

- one 4-view exam at 1024x640 per view: ``multiview_gmic`` (ResNet-18 global + ResNet-18 local, K=6 crops of 256)
  against ``global_only`` with ResNet-18 on the same four views (goal: <= 1.6x);
- one 2944x1920 view: the ``gmic`` full preset (GMIC-shaped narrow global net, ResNet-18 local, K=6 x 256;
  also with gradient checkpointing) against a plain timm resnet18, compared with public GMIC's ratio (ANCHORS.md:
  0.96 s / 4.76 s forward, 2.19 s / 15.5 s train step);
- parameter counts of every registered model at both presets.

Times are the minimum over repeats and rounds (the CPU may be shared). Usage:
``.venv/bin/python bench/models.py [--repeats 3] [--rounds 2] [--skip-full]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "mv_gmic_r18_1024": dict(kind="mammokit", name="multiview_gmic", batch=1,
                             kw=dict(global_backbone="resnet18", local_backbone="resnet18", image_size=[1024, 640],
                                     patch_size=256, num_patches=6)),
    "global_only_r18_1024_x4": dict(kind="mammokit", name="global_only", batch=4,
                                    kw=dict(global_backbone="resnet18", image_size=[1024, 640])),
    "gmic_full": dict(kind="mammokit", name="gmic", batch=1, kw=dict(preset="full")),
    "gmic_full_grad_ckpt": dict(kind="mammokit", name="gmic", batch=1, kw=dict(preset="full", grad_checkpointing=True)),
    "timm_resnet18_full": dict(kind="timm", name="resnet18", batch=1, size=[2944, 1920]),
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(key: str, repeats: int) -> dict:
    """Measure one configuration in this (fresh) process."""
    import torch

    torch.set_num_threads(2)
    base = _rss_mb()
    cfg = CONFIGS[key]
    if cfg["kind"] == "timm":
        import timm

        model = timm.create_model(cfg["name"], in_chans=1, num_classes=1)
        batch = torch.randn(cfg["batch"], 1, *cfg["size"], generator=torch.Generator().manual_seed(0))

        def run(m):
            return m(batch).sum()
    else:
        from mammokit.models import create_model

        model = create_model(cfg["name"], **cfg["kw"])
        batch = model.example_input(cfg["batch"])

        def run(m):
            out = m(batch)
            return out.exam_logit.sum() + sum(v.sum() for k, v in out.aux_view_logits.items() if k != "fusion")
    params = sum(p.numel() for p in model.parameters())
    model.eval()
    fwd = []
    with torch.no_grad():
        run(model)  # warm-up (oneDNN primitive creation)
        for _ in range(repeats):
            t = time.perf_counter()
            run(model)
            fwd.append(time.perf_counter() - t)
    model.train()
    run(model).backward()  # warm-up: backward primitives and first-touch of the activation memory
    train = []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        t = time.perf_counter()
        run(model).backward()
        train.append(time.perf_counter() - t)
    return dict(config=key, params_m=params / 1e6, forward_s=min(fwd), train_step_s=min(train),
                forward_median_s=statistics.median(fwd), train_median_s=statistics.median(train),
                peak_mb_above_torch=_rss_mb() - base)


def measure(key: str, repeats: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", key, "--repeats", str(repeats)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"config {key} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def param_table() -> list[tuple[str, str, float]]:
    from mammokit.models import create_model, list_models

    rows = []
    for name in list_models():
        for preset in ("cpu", "full"):
            model = create_model(name, preset=preset)
            rows.append((name, preset, sum(p.numel() for p in model.parameters()) / 1e6))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds over all configurations")
    parser.add_argument("--skip-full", action="store_true", help="skip the 2944x1920 configurations")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.repeats)))
        return
    keys = [k for k in CONFIGS if not (args.skip_full and ("full" in k))]
    results: dict[str, dict] = {}
    print(f"{'config':28s} {'params M':>9s} {'forward s':>10s} {'train s':>8s} {'peak MB':>8s}   (round)")
    for i in range(args.rounds):  # interleaved rounds: a noisy neighbour hurts every configuration alike
        for key in keys:
            r = measure(key, args.repeats)
            print(f"{key:28s} {r['params_m']:9.2f} {r['forward_s']:10.3f} {r['train_step_s']:8.3f} "
                  f"{r['peak_mb_above_torch']:8.0f}   ({i})", flush=True)
            best = results.setdefault(key, r)
            for field in ("forward_s", "train_step_s", "peak_mb_above_torch"):
                best[field] = min(best[field], r[field])
    print("\nbest over rounds (min time, min peak):")
    for key, r in results.items():
        print(f"{key:28s} {r['params_m']:9.2f} {r['forward_s']:10.3f} {r['train_step_s']:8.3f} "
              f"{r['peak_mb_above_torch']:8.0f}")
    if "mv_gmic_r18_1024" in results:
        a, b = results["mv_gmic_r18_1024"], results["global_only_r18_1024_x4"]
        print(f"\n4-view exam 1024x640: multiview_gmic / global_only (ResNet-18): forward "
              f"{a['forward_s'] / b['forward_s']:.2f}x, train step {a['train_step_s'] / b['train_step_s']:.2f}x "
              f"(goal <= 1.6x)")
    if "gmic_full" in results:
        g, r = results["gmic_full"], results["timm_resnet18_full"]
        print(f"2944x1920 view: gmic full / timm resnet18: forward {g['forward_s'] / r['forward_s']:.3f}x "
              f"(public GMIC {0.96 / 4.76:.3f}x), train step {g['train_step_s'] / r['train_step_s']:.3f}x "
              f"(public GMIC {2.19 / 15.5:.3f}x); GMIC-equivalent time: forward "
              f"{g['forward_s'] / r['forward_s'] * 4.76:.2f} s vs 0.96 s, train "
              f"{g['train_step_s'] / r['train_step_s'] * 15.5:.2f} s vs 2.19 s")
    print("\nparameters (M) of registered models:")
    for name, preset, m in param_table():
        print(f"  {name:18s} {preset:5s} {m:7.2f}")


if __name__ == "__main__":
    main()
