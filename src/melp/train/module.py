"""LightningModule around the library model: loss terms, AdamW + warmup-cosine, zero-shot validation.

The module owns no model code: it calls ``model(**inputs)`` and ``MELPLoss(**outputs)``, logs every
term, clamps the logit scale after each step, stops all ranks on a non-finite loss, and runs
zero-shot validation with predictions gathered across ranks (padding duplicates dropped by record
index) before the AUROC (fix of D19). It also saves/restores the data position and RNG state so a
resumed run continues exactly where the checkpoint was written.
"""

from __future__ import annotations

import logging
import math
import random

import lightning as L
import numpy as np
import torch

from melp.train.config import PretrainConfig
from melp.train.optim import build_optimizer, warmup_cosine

log = logging.getLogger("melp.train")


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN/Inf; the run stops on every rank (last good checkpoint kept)."""


class MELPLightning(L.LightningModule):
    """Training wrapper.

    Args:
        cfg: the resolved run config.
        model: a :class:`melp.models.melp.MELPModel`.
        loss_fn: a :class:`melp.losses.MELPLoss`.
        val_sets: zero-shot validation sets (:class:`melp.train.datamodule.ValSet`), in the order
            of the validation dataloaders.
        total_steps: optimizer steps of the full schedule.
        steps_per_epoch: training batches per epoch on this rank (for the data position).
    """

    def __init__(self, cfg: PretrainConfig, model, loss_fn, val_sets: list, total_steps: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = model
        self.loss_fn = loss_fn
        self.val_sets = val_sets
        self.total_steps = total_steps
        self.warmup_steps = (
            cfg.optim.warmup_steps if cfg.optim.warmup_steps > 0 else int(cfg.optim.warmup_frac * total_steps)
        )
        self.batches_seen = 0  # training batches consumed on this rank since the start (data position)
        self._rng_to_restore = None
        self._val_outputs: dict[int, list] = {}
        self._classifiers: list[torch.Tensor] = []
        self.best_score = -math.inf
        self._prompts = cfg.val.prompts

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        enc = self.model.tokenize(list(batch["report"]))
        out = self.model(
            ecg=batch["ecg"], input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
            lengths=batch.get("length"),
        )  # fmt: skip
        losses = self.loss_fn(**out)
        self.batches_seen += 1
        self._check_finite(losses)
        bs = batch["ecg"].shape[0]
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), prog_bar=True, batch_size=bs, on_step=True)
        self.log("train/logit_scale", out["logit_scale"].detach(), batch_size=bs)
        if (
            self.cfg.trainer.collapse_check
            and self.global_step % max(1, self.cfg.trainer.log_every_n_steps) == 0
        ):
            self._check_collapse(losses, out, bs)
        return losses["total"]

    def _check_finite(self, losses: dict[str, torch.Tensor]) -> None:
        bad_local = not bool(torch.isfinite(losses["total"]).item())
        bad = self.trainer.strategy.reduce_boolean_decision(bad_local, all=False)  # any rank
        if bad:
            terms = [k for k, v in losses.items() if not torch.isfinite(v).all()]
            where = ", ".join(terms) if terms else "another rank"
            raise NonFiniteLossError(
                f"non-finite loss at step {self.global_step} (training batch "
                f"{self.batches_seen}): term(s) {where}. The run stopped on every rank; the last good "
                f"checkpoint in {self.cfg.out}/checkpoints is intact. Lower optim.lr, raise "
                "optim.warmup_frac or set optim.grad_clip, then resume with --resume auto."
            )

    def _check_collapse(self, losses: dict, out: dict, batch_size: int) -> None:
        """Warn when the contrastive loss sits at ln(global batch) or the embeddings lose variance.

        Checked only once a quarter of the schedule (and the warmup) is behind: early on the CLIP
        loss is at chance level in every healthy run."""
        if self.global_step < max(self.warmup_steps, self.total_steps // 4, 1):
            return
        d = out["ecg_latent"].shape[-1]
        ws = self.trainer.world_size
        msgs = []
        w = self.cfg.loss.clip
        if w > 0 and batch_size > 1:
            raw = float(losses["clip"].detach()) / w
            chance = math.log(batch_size * ws)
            if raw > 0.97 * chance:
                msgs.append(f"CLIP loss {raw:.3f} is at chance level ln(batch)={chance:.3f}")
        if batch_size > 1:
            for key in ("ecg_latent", "text_latent"):
                spread = float(out[key].detach().float().std(0).mean()) * math.sqrt(d)
                self.log(f"train/{key}_spread", spread, batch_size=batch_size)
                if spread < 0.05:
                    msgs.append(f"{key} std across the batch is {spread:.4f}/sqrt(D) (near zero)")
        if msgs:
            log.warning("possible collapse at step %d: %s", self.global_step, "; ".join(msgs))

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.model.clamp_logit_scale()

    def configure_optimizers(self):
        o = self.cfg.optim
        text_prefix = "text." if hasattr(self.model, "text") else None
        opt = build_optimizer(
            self.model, o.lr, o.weight_decay, tuple(o.betas), o.eps, o.text_lr_mult, text_prefix
        )
        sched = warmup_cosine(opt, self.total_steps, self.warmup_steps, o.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ resume state
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["melp_state"] = {
            "batches_seen": self.batches_seen,
            "best_score": self.best_score,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("melp_state")
        if state is None:
            raise ValueError(
                "checkpoint has no 'melp_state' (not written by melp pretrain); cannot resume exactly"
            )
        self.best_score = state["best_score"]
        self.batches_seen = state["batches_seen"]
        self._rng_to_restore = state["rng"]

    def on_train_start(self) -> None:
        if self._rng_to_restore is not None:
            rng = self._rng_to_restore
            torch.set_rng_state(rng["torch"])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])
            self._rng_to_restore = None

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        from melp.eval.zeroshot import build_classifier

        self._val_outputs = {k: [] for k in range(len(self.val_sets))}
        self._classifiers = [
            build_classifier(self.model, vs.classes, self._prompts, task=vs.task) for vs in self.val_sets
        ]

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        from melp.eval.zeroshot import zero_shot_logits

        scores = zero_shot_logits(
            self.model, batch["ecg"], self._classifiers[dataloader_idx], lengths=batch.get("length")
        )  # (B, K)
        self._val_outputs[dataloader_idx].append(
            (batch["index"].to(scores.device), scores.float(), batch["labels"].to(scores.device).float())
        )

    def on_validation_epoch_end(self) -> None:
        from melp.eval.metrics import macro_auroc

        values = []
        for k, vs in enumerate(self.val_sets):
            outs = self._val_outputs.get(k) or []
            if not outs:
                continue
            idx = torch.cat([o[0] for o in outs])  # (n,)
            scores = torch.cat([o[1] for o in outs])  # (n, K)
            labels = torch.cat([o[2] for o in outs])  # (n, K)
            if self.trainer.world_size > 1:  # (G, n, ...) -> (G*n, ...)
                idx = self.all_gather(idx).flatten(0, 1)
                scores = self.all_gather(scores).flatten(0, 1)
                labels = self.all_gather(labels).flatten(0, 1)
            idx_np = idx.cpu().numpy()
            _, first = np.unique(idx_np, return_index=True)  # drop sampler padding duplicates
            auc = macro_auroc(labels.cpu().numpy()[first], scores.cpu().numpy()[first])
            self.log(f"val/{vs.name}_auroc", auc, sync_dist=False, rank_zero_only=False)
            values.append(auc)
        if values:
            mean = float(np.nanmean(values))
            self.log("val/mean_auroc", mean, prog_bar=True, sync_dist=False)
            if mean > self.best_score:
                self.best_score = mean
            log.info(
                "step %d: val/mean_auroc %.4f (%s)",
                self.global_step,
                mean,
                ", ".join(f"{vs.name} {v:.4f}" for vs, v in zip(self.val_sets, values)),
            )
        self._val_outputs = {}
