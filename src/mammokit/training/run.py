"""`mammokit train`: curriculum stages with Lightning, resumable, then a released model; ensembles of seeds/folds.

runs/NAME/
    config.yaml            the resolved configuration
    splits.csv             exam → split (patient-level)
    stages/<i>-<name>/     Lightning checkpoints (last.ckpt, best) and done.json once the stage finished
    logs/                  CSV and TensorBoard logs per stage
    metrics.csv            every logged value of every stage, one table
    model/                 the released model (model.safetensors + config.json)
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
import yaml
from lightning.pytorch.callbacks import Checkpoint, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from mammokit.config import dump_config
from mammokit.data.dataset import slot_exclusions
from mammokit.data.splits import patient_kfold
from mammokit.errors import InvalidInputError
from mammokit.io import atomic_write, atomic_write_text, remove_temp_files
from mammokit.models import EnsembleModel
from mammokit.release.model import architecture, is_weight_source, load_released, save_released
from mammokit.release.store_table import load_store_table
from mammokit.reuse import OVERWRITE_HINT, config_changes, summarize
from mammokit.training.config import StageConfig, TrainConfig
from mammokit.training.datamodule import MammoDataModule, official_splits, with_splits
from mammokit.training.module import MammoModule, check_prefixes

log = logging.getLogger(__name__)


class ResumeAwareModule(MammoModule):
    """Tells the data module where in its epoch a resumed checkpoint stopped.

    Lightning restores its batch counter but restarts a plain DataLoader from the top, so the data module must skip
    the batches already trained on. It also needs the epoch up front: Lightning creates the first iterator (which,
    with worker processes, already draws from the sampler) before it calls `set_epoch` on the sampler.
    """

    datamodule_ref: MammoDataModule | None = None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        loops = checkpoint.get("loops", {}).get("fit_loop", {})
        progress = loops.get("epoch_loop.batch_progress", {}).get("current", {})
        done = int(progress.get("processed", 0))
        epoch = int(loops.get("epoch_progress", {}).get("current", {}).get("processed", 0))
        dm = self.datamodule_ref
        if dm is None:
            return
        dm.resume_epoch = epoch
        per_epoch = math.ceil(len(dm.train_sampler()) / dm.cfg.batch_size)  # the loader's length (no drop_last)
        dm.resume_skip_batches = done if 0 < done < per_epoch else 0


class ResumeCheckpoint(Checkpoint):
    """Keeps `last.ckpt` current: after every validation (end of epoch) and every `every_n_steps` optimiser steps.

    A `Checkpoint`, so Lightning runs it after the other callbacks (the saved state holds the updated best score).

    Lightning's ModelCheckpoint refreshes its "last" file at the end of an epoch only when the monitored score
    improved, so a resume could restart epochs back. Mid-epoch saves skip an epoch's last batch: a checkpoint taken
    between that batch and the validation would make Lightning reuse the finished epoch's loader iterator.
    """

    def __init__(self, path: Path, every_n_steps: int | None = None) -> None:
        self.path, self.every_n_steps = Path(path), every_n_steps
        self._saved_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path)
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n, step = self.every_n_steps, trainer.global_step
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if n and step % n == 0 and step != self._saved_step and not last:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._save(trainer)


def _stage_dir(run_dir: Path, index: int, stage: StageConfig) -> Path:
    return run_dir / "stages" / f"{index}-{stage.name}"


def _steps_per_epoch(dm: MammoDataModule, world: int = 1) -> int:
    """Batches per epoch on each rank, as the train loader yields them (the sampler drops the rank remainder)."""
    n = len(dm.train_set)
    if dm.max_steps_per_epoch:
        n = min(n, dm.max_steps_per_epoch * dm.cfg.batch_size * world)
    return max(1, math.ceil((n // world) / dm.cfg.batch_size))


def _stage_module(cfg: TrainConfig, stage: StageConfig, total_steps: int, *, fresh: bool) -> ResumeAwareModule:
    """The stage's module; only a `fresh` one (weights from nowhere else) runs the pretrained-weight loader."""
    loss_kwargs = {**cfg.loss.kwargs, **stage.loss}
    return ResumeAwareModule(
        model_name=cfg.model.name, model_kwargs=cfg.model.kwargs if fresh else architecture(cfg.model.kwargs),
        loss_kwargs=loss_kwargs, lr=stage.lr or cfg.optim.lr, backbone_lr=stage.backbone_lr or cfg.optim.backbone_lr,
        weight_decay=cfg.optim.weight_decay, warmup_fraction=cfg.optim.warmup_fraction, total_steps=total_steps,
        trainable=stage.train, frozen=stage.freeze, seed=cfg.seed, box_saliency=cfg.loss.box_saliency,
        mixup=cfg.data.mixup, cutmix=cfg.data.cutmix,
    )


def check_stages(model: torch.nn.Module, stages: list[StageConfig]) -> None:
    """Check every stage's `train:` / `freeze:` prefixes before the first stage starts (a typo in a late stage would
    otherwise stop the run hours in)."""
    for i, stage in enumerate(stages):
        try:
            check_prefixes(model, stage.train, stage.freeze)
        except ValueError as err:
            raise InvalidInputError(f"stages[{i}] ({stage.name}): {err}") from None


def resolve_precision(precision: str, accelerator: str) -> str:
    """"auto" → bf16-mixed where the GPU supports bf16, 16-mixed on older GPUs, 32-true on CPU."""
    if precision != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def hardware(accelerator: str) -> str:
    """What the trainer will run on, for the log and the model card: the GPU's name, or "cpu"."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu"


def _strategy(strategy: str, devices: int | str, num_nodes: int) -> str:
    """DDP strategies with unused-parameter detection: curriculum stages and the multi-view model leave some
    trainable parameters without a gradient in a step (e.g. the per-view fusion head when its loss weight is 0),
    which plain DDP refuses."""
    multi = num_nodes > 1 or str(devices) not in ("1", "auto")
    if strategy in ("ddp", "ddp_spawn", "ddp_fork") or (strategy == "auto" and multi):
        return f"{'ddp' if strategy == 'auto' else strategy}_find_unused_parameters_true"
    return strategy


def _trainer(cfg: TrainConfig, stage_dir: Path, run_dir: Path, name: str, epochs: int,
             extra_callbacks: list[Any] | None = None) -> L.Trainer:
    t = cfg.trainer
    # best.ckpt is chosen after each validation; last.ckpt (what a resume starts from) is written by ResumeCheckpoint
    ckpt = ModelCheckpoint(dirpath=stage_dir / "checkpoints", filename="best", monitor=t.monitor, mode=t.monitor_mode,
                           save_last=False, save_top_k=1, enable_version_counter=False)
    callbacks: list[Any] = [ckpt, ResumeCheckpoint(stage_dir / "checkpoints" / "last.ckpt", t.checkpoint_every_n_steps),
                            LearningRateMonitor(logging_interval="step")]
    callbacks += list(extra_callbacks or [])
    if cfg.optim.ema_decay:
        from lightning.pytorch.callbacks import EMAWeightAveraging

        callbacks.append(EMAWeightAveraging(decay=cfg.optim.ema_decay))
    # a resumed stage logs to a new CSV folder (Lightning's CSV logger would empty the old one); TensorBoard appends
    attempt = len(list((run_dir / "logs" / "csv").glob(f"{name}+resume*"))) + 1
    resuming = (stage_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "logs" / "csv" / name).is_dir()
    loggers = [CSVLogger(run_dir / "logs", name="csv", version=f"{name}+resume{attempt}" if resuming else name),
               TensorBoardLogger(run_dir / "logs", name="tensorboard", version=name)]
    return L.Trainer(
        max_epochs=epochs, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=_strategy(t.strategy, t.devices, t.num_nodes),
        precision=resolve_precision(t.precision, t.accelerator), callbacks=callbacks, logger=loggers,
        log_every_n_steps=t.log_every_n_steps,
        gradient_clip_val=cfg.optim.grad_clip, accumulate_grad_batches=cfg.optim.accumulate,
        deterministic=t.deterministic, use_distributed_sampler=False, enable_progress_bar=t.progress_bar,
        enable_model_summary=False, num_sanity_val_steps=0, max_steps=t.max_steps,
    )


def train_stages(cfg: TrainConfig, run_dir: Path, table: pd.DataFrame,
                 callbacks: list[Any] | None = None) -> tuple[MammoModule, dict[str, Any]]:
    """Run every curriculum stage in order (skipping finished ones, resuming a killed one); returns the module.

    `callbacks` are extra Lightning callbacks added to every stage's trainer (e.g. to record or stop a run).
    """
    module: MammoModule | None = None
    history: dict[str, Any] = {}
    for i, stage in enumerate(cfg.stages):
        stage_dir = _stage_dir(run_dir, i, stage)
        done_file = stage_dir / "done.json"
        final = stage_dir / "final_model.pt"
        finished = done_file.is_file() and final.is_file()
        dm = MammoDataModule(cfg.data, table, seed=cfg.seed, epochs=stage.epochs,
                             max_steps_per_epoch=cfg.trainer.max_steps_per_epoch)
        trainer = None if finished else _trainer(cfg, stage_dir, run_dir, f"{i}-{stage.name}", stage.epochs, callbacks)
        # optimiser steps of this stage on each rank (DDP splits every epoch between the ranks)
        world = trainer.world_size if trainer is not None else 1
        total = math.ceil(_steps_per_epoch(dm, world) * stage.epochs / max(1, cfg.optim.accumulate))
        previous = module
        last = stage_dir / "checkpoints" / "last.ckpt"
        module = _stage_module(cfg, stage, total, fresh=previous is None and not finished and not last.is_file())
        if previous is None:
            check_stages(module.model, cfg.stages)
        module.datamodule_ref = dm
        if previous is not None:
            module.model.load_state_dict(previous.model.state_dict())
        if trainer is None:
            module.model.load_state_dict(torch.load(final, map_location="cpu", weights_only=True))
            history[stage.name] = json.loads(done_file.read_text())
            log.info("stage %s already done; skipped", stage.name)
            continue
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.is_file() else None, weights_only=True)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
        if best and Path(best).is_file():
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
        info = {"stage": stage.name, "seconds": round(time.perf_counter() - t0, 1), "best_checkpoint": best,
                "best_score": float(score) if score is not None and torch.isfinite(score) else None,
                "monitor": cfg.trainer.monitor, "epochs": stage.epochs}
        if trainer.global_rank == 0:
            weights = module.model.state_dict()
            atomic_write(final, lambda tmp, w=weights: torch.save(w, tmp))
            atomic_write_text(done_file, json.dumps(info, indent=1))
        history[stage.name] = info
    assert module is not None
    return module, history


def _log_order(path: Path) -> tuple[int, str, int]:
    """Sort key of a CSV log folder `<i>-<stage>[+resume<k>]`: stage index, then attempt."""
    stage, _, attempt = path.parent.name.partition("+resume")
    index = stage.split("-", 1)[0]
    return (int(index) if index.isdigit() else 0, stage, int(attempt or 0))


def collect_metrics(run_dir: Path) -> pd.DataFrame:
    """All stages' CSV logs in one table (stage column added); also written to runs/NAME/metrics.csv.

    A resumed stage's attempts are joined; rows of an earlier attempt from steps its successor redid are dropped.
    """
    frames: list[pd.DataFrame] = []
    for path in sorted((run_dir / "logs" / "csv").glob("*/metrics.csv"), key=_log_order):
        df = pd.read_csv(path)
        stage = path.parent.name.partition("+resume")[0]
        df.insert(0, "stage", stage)
        if frames and len(frames[-1]) and frames[-1]["stage"].iloc[0] == stage and "step" in df and len(df):
            frames[-1] = frames[-1][frames[-1]["step"] < df["step"].min()]
        frames.append(df)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    atomic_write(run_dir / "metrics.csv", lambda tmp: table.to_csv(tmp, index=False))
    return table


def release_config(cfg: TrainConfig, table: pd.DataFrame, history: dict[str, Any], model_spec: dict) -> dict:
    """The released model's config.json: architecture, input, preprocessing, and a short model card."""
    store = Path(cfg.data.store)
    pre = json.loads((store / "preprocess_config.json").read_text()) if (store / "preprocess_config.json").is_file() \
        else {}
    view_stats = json.loads((store / "view_stats.json").read_text()) if (store / "view_stats.json").is_file() else {}
    train = table[table["split"] == cfg.data.train_split]
    return {
        "model": model_spec,
        "input": {"level": cfg.data.level, "input_size": list(cfg.data.input_size), "full_scale": cfg.data.full_scale,
                  "normalization": cfg.data.normalization, "view_stats": view_stats},
        "preprocess": pre,
        "training": {
            "run": cfg.name, "seed": cfg.seed, "store": str(store), "exams": int(train["exam_id"].nunique()),
            "images": len(train), "sites": sorted(map(str, train.get("site", pd.Series(dtype=str)).dropna().unique())),
            "vendors": sorted(map(str, train.get("manufacturer", pd.Series(dtype=str)).dropna().unique())),
            "spacing_mm": float(train["spacing_mm"].median()) if "spacing_mm" in train else None,
            "images_left_out": slot_exclusions(train) if {"laterality", "view"} <= set(train.columns) else {},
            "split_source": "official" if cfg.data.split_source != "random" and official_splits(table) is not None
            else "random",
            "stages": history,
            "initial_weights": {k: v for k, v in cfg.model.kwargs.items() if is_weight_source(k) and v},
            "hardware": hardware(cfg.trainer.accelerator),
            "precision": resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator),
        },
    }


# keys that name the run folder itself, or change how a run is watched and not what it computes: a resume may differ
RESUME_FREE_KEYS = ("name", "runs_dir", "trainer.progress_bar", "data.num_workers")


def prepare_run_folder(cfg: TrainConfig, run_dir: Path, *, overwrite: bool = False) -> None:
    """Make `run_dir` ready for `cfg`: a run of the same config is resumed; one of another config is refused (its
    finished stages would be reused under the new settings), or with `overwrite` removed whole. Temporary files of
    killed writes are removed. Under DDP only rank 0 changes the folder."""
    saved = run_dir / "config.yaml"
    rank0 = rank_zero_only.rank == 0
    if saved.is_file() and overwrite and rank0:
        log.warning("%s: replacing the existing run (overwrite)", run_dir)
        shutil.rmtree(run_dir)
    elif saved.is_file() and not overwrite:
        changes = config_changes(yaml.safe_load(saved.read_text()) or {}, cfg.model_dump(mode="json"),
                                 ignore=RESUME_FREE_KEYS)
        if changes:
            raise InvalidInputError(f"{run_dir} holds a run of another config ({summarize(changes)}); "
                                    f"{OVERWRITE_HINT}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank0:
        remove_temp_files(run_dir)


def train(cfg: TrainConfig, table: pd.DataFrame | None = None, *, callbacks: list[Any] | None = None,
          overwrite: bool = False) -> Path:
    """Train one model as configured; returns the run folder (with the released model in `model/`).

    `table` (rows of preprocessed.parquet with a `split` column) replaces the store's table, e.g. for one fold;
    `callbacks` are extra Lightning callbacks for every stage. An existing run folder is resumed when it holds a
    run of the same config, refused when another, and replaced whole with `overwrite` (`prepare_run_folder`).
    """
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.runs_dir) / cfg.name
    prepare_run_folder(cfg, run_dir, overwrite=overwrite)
    dump_config(cfg, run_dir / "config.yaml")
    table = split_table(cfg, table)
    splits = table[["exam_id", "patient_id", "split"]].drop_duplicates("exam_id")
    atomic_write(run_dir / "splits.csv", lambda tmp: splits.to_csv(tmp, index=False))
    log.info("training %s on %s, precision %s", cfg.name, hardware(cfg.trainer.accelerator),
             resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator))
    module, history = train_stages(cfg, run_dir, table, callbacks)
    if rank_zero_only.rank == 0:  # under DDP every rank runs this function; one writes the results
        collect_metrics(run_dir)
        spec = {"name": cfg.model.name, "kwargs": architecture(cfg.model.kwargs)}  # the weights are in the release
        save_released(run_dir / "model", module.model, release_config(cfg, table, history, spec))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # the other ranks return once the released model exists (ensembles read it)
    return run_dir


def split_table(cfg: TrainConfig, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The store's table (or `table`) with the run's `split` column, as `data` configures it (`with_splits`)."""
    table = load_store_table(cfg.data.store) if table is None else table
    return with_splits(table, seed=cfg.seed, val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction,
                       source=cfg.data.split_source)


def fold_tables(cfg: TrainConfig, folds: int, table: pd.DataFrame | None = None) -> list[pd.DataFrame]:
    """The store's table (or `table`) once per patient-level fold, with that fold as `val` and the rest as `train`;
    the test patients (an official test split, else `data.test_fraction` of the patients) stay `test`, in no fold."""
    table = split_table(cfg, table)
    held_out = table["split"] == "test"
    pool = table[~held_out]
    exam_label = pool.groupby("exam_id")["cancer"].transform(lambda s: float((s == 1).any())).fillna(0)
    work = pool.assign(_y=exam_label.astype(int))
    site = "site" if "site" in work.columns and work["site"].notna().all() else None
    out = []
    for _, val_idx in patient_kfold(work, folds, patient_col="patient_id", label_col="_y", site_col=site,
                                    seed=cfg.seed):
        split = pd.Series(cfg.data.train_split, index=table.index).where(~held_out, "test")
        split[pool.index[val_idx]] = cfg.data.val_split
        out.append(table.assign(split=split.values))
    return out


def train_ensemble(cfg: TrainConfig, *, seeds: list[int] | None = None, folds: int | None = None,
                   overwrite: bool = False) -> Path:
    """Train members over seeds or patient-level folds; release their logit average as one model in NAME/model.

    Every member sees the same test patients: seed members share one split (made with `cfg.seed`), fold members
    hold the same test patients out of every fold. NAME/splits.csv records them (every other exam as `train`: some
    member trained or validated on it), so `evaluate --split test` scores the ensemble on unseen exams only. Each
    member's folder is resumed, refused or (with `overwrite`) replaced as `train` does."""
    base = Path(cfg.runs_dir) / cfg.name
    if folds:
        tables = fold_tables(cfg, folds)
        jobs = [(cfg.model_copy(deep=True, update={"name": f"{cfg.name}/fold-{k}"}), t) for k, t in enumerate(tables)]
    else:
        shared = split_table(cfg)
        tables = [shared]
        jobs = [(cfg.model_copy(deep=True, update={"name": f"{cfg.name}/seed-{s}", "seed": s}), shared)
                for s in (seeds or [cfg.seed])]
    seen = tables[0].assign(split=tables[0]["split"].where(tables[0]["split"] == "test", cfg.data.train_split))
    base.mkdir(parents=True, exist_ok=True)
    atomic_write(base / "splits.csv", lambda tmp: seen[["exam_id", "patient_id", "split"]].drop_duplicates(
        "exam_id").to_csv(tmp, index=False))
    run_dirs = [train(member, table, overwrite=overwrite) for member, table in jobs]
    loaded = [load_released(d / "model") for d in run_dirs]
    ensemble = EnsembleModel([m for m, _ in loaded])
    config = {k: v for k, v in loaded[0][1].items() if k not in ("format", "temperature", "mammokit_version")}
    config["model"] = {"name": "ensemble", "members": [c["model"] for _, c in loaded]}
    config["members"] = [str(d) for d in run_dirs]
    save_released(base / "model", ensemble, config)
    return base
