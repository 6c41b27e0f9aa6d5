"""The LightningModule: one model from the registry, `MammoLoss`, AdamW + warmup/cosine, AUC validation."""

from __future__ import annotations

import difflib
import math
from typing import Any

import lightning as L
import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from mammokit.errors import InvalidInputError
from mammokit.models import ModelOutput, create_model
from mammokit.release.device import model_inputs
from mammokit.training.datamodule import unique_items
from mammokit.training.lesion_supervision import box_saliency_loss
from mammokit.training.losses import MammoLoss
from mammokit.training.mixing import mix_training_batch
from mammokit.training.optim import build_optimizer

MIX_STREAM = 1  # the batch-mix generator's own seed word, so it never shares a stream with the dropout seed


def loss_targets(batch: dict[str, Any], outputs: ModelOutput) -> dict[str, torch.Tensor]:
    """Targets for `MammoLoss`: breast/exam labels, and per-view labels (each view's breast) for the aux heads."""
    labels = batch["breast_labels"]
    view_labels = labels.gather(1, batch["laterality"].long())  # (B, V)
    return {"breast_labels": labels,
            # the model's breast mask says which breast columns are real (a single view fills one)
            "breast_mask": batch["breast_mask"] & outputs.breast_mask,
            "exam_label": batch["exam_label"], "exam_mask": ~torch.isnan(batch["exam_label"]),
            "view_labels": view_labels, "view_mask": batch["view_mask"] & ~torch.isnan(view_labels)}


class MammoModule(L.LightningModule):
    """Training wrapper; hyper-parameters are saved so checkpoints rebuild the same model.

    Args:
        model_name / model_kwargs: registry name and overrides (`mammokit.models.create_model`).
        loss_kwargs: `MammoLoss` settings.
        lr, backbone_lr, weight_decay, warmup_fraction: optimiser and schedule.
        total_steps: optimiser steps of the current stage (for the cosine schedule).
        trainable: parameter-name prefixes to train ("all" = everything); frozen: prefixes to freeze.
        seed: model initialisation seed.
        box_saliency: weight of the lesion-box saliency loss (`training.lesion_supervision`; 0 = labels only).
        mixup / cutmix: Beta(α, α) parameters of MixUp / CutMix on training batches (`training.mixing`; 0 = off).
    """

    def __init__(
        self,
        model_name: str,
        model_kwargs: dict[str, Any] | None = None,
        loss_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-3,
        backbone_lr: float | None = None,
        weight_decay: float = 1e-4,
        warmup_fraction: float = 0.1,
        total_steps: int = 1000,
        trainable: list[str] | None = None,
        frozen: list[str] | None = None,
        seed: int = 0,
        box_saliency: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(model_name, seed=seed, **(model_kwargs or {}))
        self.loss_fn = MammoLoss(loss_kwargs or {})
        self.set_trainable(trainable or ["all"], frozen or [])
        self._val: list[dict[str, np.ndarray]] = []
        self.val_outputs: dict[str, np.ndarray] = {}

    def set_trainable(self, trainable: list[str], frozen: list[str]) -> None:
        """Train parameters whose name starts with a `trainable` prefix ("all" = all), minus `frozen` prefixes."""
        check_prefixes(self.model, trainable, frozen)
        for name, p in self.model.named_parameters():
            on = "all" in trainable or any(name.startswith(t) for t in trainable)
            p.requires_grad_(on and not any(name.startswith(f) for f in frozen))

    def forward(self, batch: dict[str, Any]) -> ModelOutput:
        return self.model(model_inputs(batch))

    def _step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor], ModelOutput]:
        outputs = self(batch)
        loss, parts = self.loss_fn(outputs, loss_targets(batch, outputs))
        weight = self.hparams.get("box_saliency", 0.0)
        if weight > 0 and "lesion_boxes" in batch:
            box_loss = box_saliency_loss(outputs.saliency, batch["lesion_boxes"], tuple(batch["images"].shape[-2:]),
                                         batch["view_mask"])
            parts["box_saliency"] = box_loss.detach()
            loss = loss + weight * box_loss
        return loss, parts, outputs

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Seed torch's global RNG (dropout, stochastic layers) from (seed, epoch, batch, rank).

        The model's random stream is then a function of where training is, not of what else drew from the global RNG
        before (each DataLoader iterator draws one number from it, so worker settings would shift every later
        dropout mask), and a mid-epoch resume replays the same masks.
        """
        state = np.random.SeedSequence([int(self.hparams.seed), self.current_epoch, batch_idx, self.global_rank])
        torch.manual_seed(int(state.generate_state(1, np.uint64)[0]))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        batch = self._mix(batch, batch_idx)
        loss, parts, _ = self._step(batch)
        bs = len(batch["exam_id"])
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for k, v in parts.items():
            if k != "total":
                self.log(f"train/{k}", v, batch_size=bs)
        return loss

    def _mix(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """MixUp / CutMix of a training batch, drawn from (seed, epoch, batch, rank) like the dropout masks."""
        hp = self.hparams
        rng = np.random.default_rng([int(hp.seed), self.current_epoch, batch_idx, self.global_rank, MIX_STREAM])
        mixed, _ = mix_training_batch(batch, mixup_alpha=hp.get("mixup", 0.0), cutmix_alpha=hp.get("cutmix", 0.0),
                                      rng=rng)
        return mixed

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, _, outputs = self._step(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["exam_id"]), sync_dist=True)
        mask = outputs.breast_mask & batch["breast_mask"]
        self._val.append({
            "exam_logit": outputs.exam_logit.detach().float().cpu().numpy(),
            "exam_label": batch["exam_label"].cpu().numpy(),
            "breast_logits": outputs.breast_logits.detach().float().cpu().numpy(),
            "breast_labels": batch["breast_labels"].cpu().numpy(),
            "breast_known": mask.cpu().numpy(),
            "index": np.asarray(batch["index"]),
        })

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        cat = {k: np.concatenate([v[k] for v in self._val]) for k in self._val[0]}
        self._val.clear()
        cat = unique_items({k: self._gather(v) for k, v in cat.items()})  # DDP pads ranks with repeated items
        self.val_outputs = cat  # what the validation AUCs below are computed from, one row per item
        ok = ~np.isnan(cat["exam_label"])
        exam_auc = _safe_auc(cat["exam_label"][ok], cat["exam_logit"][ok])
        known = cat["breast_known"].astype(bool) & ~np.isnan(cat["breast_labels"])
        breast_auc = _safe_auc(cat["breast_labels"][known], cat["breast_logits"][known])
        # every rank computed the same AUC from the gathered arrays: log it on all of them, so checkpoint callbacks
        # that monitor it pick the same best checkpoint on every rank (the sync is an average of equal values)
        self.log("val/exam_auc", exam_auc, prog_bar=True, sync_dist=True)
        self.log("val/breast_auc", breast_auc, prog_bar=True, sync_dist=True)

    def _gather(self, array: np.ndarray) -> np.ndarray:
        """Concatenate a per-rank array over DDP ranks (identity on one process)."""
        if self.trainer is None or self.trainer.world_size <= 1:
            return array
        gathered = self.all_gather(torch.as_tensor(array))
        return gathered.reshape(-1, *array.shape[1:]).cpu().numpy()

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        warmup = math.ceil(hp.warmup_fraction * hp.total_steps)
        opt, sched = build_optimizer(self.model, lr=hp.lr, weight_decay=hp.weight_decay, backbone_lr=hp.backbone_lr,
                                     total_steps=hp.total_steps, warmup_steps=warmup)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def parameter_prefixes(names: list[str], depth: int) -> list[str]:
    """The distinct first `depth` dotted parts of parameter names, in model order."""
    return list(dict.fromkeys(".".join(n.split(".")[:depth]) for n in names))


def check_prefixes(model: torch.nn.Module, trainable: list[str], frozen: list[str]) -> None:
    """Raise when a `train` or `freeze` prefix matches no parameter name: a typo would otherwise train or freeze
    nothing, silently. The error names the prefix, the closest real prefixes and the model's top-level parts."""
    names = [n for n, _ in model.named_parameters()]
    for key, prefixes in (("train", [t for t in trainable if t != "all"]), ("freeze", frozen)):
        for prefix in prefixes:
            if any(n.startswith(prefix) for n in names):
                continue
            close = difflib.get_close_matches(prefix, parameter_prefixes(names, prefix.count(".") + 1), n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            parts = parameter_prefixes(names, 2)
            shown = ", ".join(parts[:12]) + (", ..." if len(parts) > 12 else "")
            raise InvalidInputError(f"{key} prefix {prefix!r} matches no parameter of the model{hint}. Parameter "
                                    f"names start with: {shown}")


def _safe_auc(y: np.ndarray, s: np.ndarray) -> float:
    """AUC, or NaN when only one class is present (an early validation batch)."""
    if len(y) == 0 or len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, s))
