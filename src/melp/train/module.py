"""LightningModule around the library model: loss terms, AdamW + warmup-cosine, zero-shot validation.

The module owns no model code: a training step is :func:`melp.train.step.forward_and_loss`
(``model(**inputs)`` then ``MELPLoss(**outputs)``, compiled with ``model.compile``), and Lightning
does backward and the optimizer. The step reads no device value: the logged terms and the
non-finite check accumulate on the device (:class:`melp.train.step.StepMonitor`) and are read,
for all ranks at once, every ``trainer.log_every_n_steps`` optimizer steps and before every
checkpoint is written; a non-finite loss then stops all ranks, before the bad weights reach a
checkpoint. Zero-shot validation gathers predictions across ranks (padding duplicates dropped by
record index) before the AUROC (fix of D19). Checkpoints hold the data position (epoch, global
samples consumed) and counters, never a Python object: dropout is seeded per batch from
``(seed, rank, batch)``, so there is no RNG state to save.
"""

from __future__ import annotations

import logging
import math

import lightning as L
import numpy as np
import torch

from melp.losses.gather import all_gather_no_grad
from melp.train.config import PretrainConfig, to_dict
from melp.train.datamodule import advance_position
from melp.train.optim import build_optimizer, warmup_cosine
from melp.train.step import StepMonitor, compile_forward, forward_and_loss, model_inputs, seed_step

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
        n_train: training records (for the data position).
        hparams: extra values saved with the hyper-parameters (derived run facts).
    """

    def __init__(
        self,
        cfg: PretrainConfig,
        model,
        loss_fn,
        val_sets: list,
        total_steps: int,
        n_train: int = 0,
        hparams: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters({**to_dict(cfg), **(hparams or {})})
        self.cfg = cfg
        self.model = model
        self.loss_fn = loss_fn
        self.val_sets = val_sets
        self.total_steps = total_steps
        self.n_train = n_train
        self.warmup_steps = (
            cfg.optim.warmup_steps if cfg.optim.warmup_steps > 0 else int(cfg.optim.warmup_frac * total_steps)
        )
        self.batches_seen = 0  # training batches consumed on this rank since the start (seeds dropout)
        self.data_position = (0, 0)  # (epoch, global samples consumed) where this fit segment starts
        self._segment_batches = 0  # batches consumed since data_position
        self._val_outputs: dict[int, list] = {}
        self._classifiers: list[torch.Tensor] = []
        self.best_score = -math.inf
        self._prompts = cfg.val.prompts
        extras = ("logit_scale",) + (("ecg_spread", "text_spread") if cfg.trainer.collapse_check else ())
        extras += ("diversity",) if cfg.loss.diversity else ()  # the optional beat-diversity term
        self.monitor = StepMonitor(extras)
        self._forward = None  # the compiled forward (model.compile), built at the first step
        self.last_train_metrics: dict[str, float] = {}
        self.beat_history: list[dict] = []  # rank 0: beat diagnostics at each validation

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        seed_step(self.cfg.seed, self.global_rank, self.batches_seen)
        inputs = model_inputs(batch)
        if self.cfg.model.compile and self._forward is None:
            self._forward = compile_forward(self.model, self.loss_fn, self.cfg.model.compile_backend)
        if self._forward is not None:
            out, losses = self._forward(**inputs)
        else:
            out, losses = forward_and_loss(self.model, self.loss_fn, **inputs)
        self.batches_seen += 1
        self._segment_batches += 1
        extras = {"logit_scale": out["logit_scale"]}
        if "diversity" in losses:
            extras["diversity"] = losses["diversity"]
        if self.cfg.trainer.collapse_check:
            d = out["ecg_latent"].shape[-1]
            for key in ("ecg_latent", "text_latent"):  # std across the batch, x sqrt(D) (1 = isotropic)
                extras[key.replace("latent", "spread")] = out[key].detach().float().std(0).mean() * d**0.5
        self.monitor.update(losses, self.global_step, extras)
        return losses["total"]

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.model.clamp_logit_scale()  # l in [0, ln 100] after every optimizer step
        every = self.cfg.trainer.log_every_n_steps
        # inside this hook global_step is still the index of the step just taken (0-based)
        if every > 0 and (self.global_step + 1) % every == 0:
            self._read_and_log(self.global_step)

    def _gather_fn(self):
        """``(n, ...) -> (G, n, ...)`` over all ranks (None in one process)."""
        world = self.trainer.world_size
        if world == 1:
            return None

        def gather(t: torch.Tensor) -> torch.Tensor:
            return all_gather_no_grad(t.contiguous()).reshape(world, *t.shape)

        return gather

    def _read_and_log(self, step: int) -> None:
        """Read the device accumulators (one transfer, all ranks), stop on a non-finite loss,
        log the means and run the collapse check.

        Rows go straight to the loggers (rank 0), at the step just taken, so that they are in
        the loggers' buffers before a checkpoint of this step is written (which flushes them):
        a killed run loses no row that its checkpoint covers."""
        rep = self.monitor.read(self._gather_fn(), self.device)
        self._raise_if_non_finite(rep)
        if rep.batches == 0:
            return
        metrics = {f"train/{k}": v for k, v in {**rep.losses, **rep.extras}.items()}
        self.last_train_metrics = {f"train/{k}": v for k, v in rep.losses.items()}  # progress bar
        if self.trainer.is_global_zero:
            for logger in self.loggers:
                logger.log_metrics({**metrics, "epoch": self.current_epoch}, step=step)
        if self.cfg.trainer.collapse_check:
            self._check_collapse(rep, step)

    def _raise_if_non_finite(self, rep) -> None:
        if rep.first_bad_step is None:
            return
        raise NonFiniteLossError(
            f"non-finite loss at step {rep.first_bad_step}: term(s) {', '.join(rep.bad_terms)}. "
            f"The run stopped on every rank before writing another checkpoint; the last good one in "
            f"{self.cfg.out}/checkpoints is intact. Lower optim.lr, raise optim.warmup_frac or set "
            "optim.grad_clip, then resume with --resume auto."
        )

    def _check_collapse(self, rep, step: int) -> None:
        """Warn when the contrastive loss sits at ln(global batch) or the embeddings lose variance.

        Checked only once a quarter of the schedule (and the warmup) is behind: early on the CLIP
        loss is at chance level in every healthy run. Values are the means since the last log."""
        if step < max(self.warmup_steps, self.total_steps // 4, 1):
            return
        batch = self.cfg.data.batch_size * self.trainer.world_size
        msgs = []
        w = self.cfg.loss.clip
        if w > 0 and batch > 1:
            raw = rep.losses["clip"] / w
            chance = math.log(batch)
            if raw > 0.97 * chance:
                msgs.append(f"CLIP loss {raw:.3f} is at chance level ln(batch)={chance:.3f}")
        for key in ("ecg_spread", "text_spread"):
            if rep.extras[key] < 0.05:
                msgs.append(f"{key} (std across the batch x sqrt(D)) is {rep.extras[key]:.4f} (near zero)")
        if msgs and self.trainer.is_global_zero:
            log.warning("possible collapse at step %d: %s", step, "; ".join(msgs))

    def configure_optimizers(self):
        o = self.cfg.optim
        text_prefix = "text." if hasattr(self.model, "text") else None
        # fp16 with a gradient scaler: Lightning unscales before clipping only for unfused optimizers
        fused = (
            None if "16" in self.cfg.trainer.precision and "bf16" not in self.cfg.trainer.precision else True
        )
        opt = build_optimizer(
            self.model, o.lr, o.weight_decay, tuple(o.betas), o.eps, o.text_lr_mult, text_prefix, fused=fused
        )
        sched = warmup_cosine(opt, self.total_steps, self.warmup_steps, o.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip the global gradient norm (``optim.grad_clip``) with torch directly: Lightning's
        mixed-precision plugin refuses to clip for a fused optimizer, although without a gradient
        scaler (32-bit, bf16) the gradients are already unscaled; with fp16 the optimizer is not
        fused and Lightning unscales first. No host sync (the norm stays on the device)."""
        if gradient_clip_val:
            params = [p for p in self.model.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, float(gradient_clip_val))

    # ------------------------------------------------------------------ data position
    def current_position(self) -> tuple[int, int]:
        """(epoch, global samples consumed in it) after the batches consumed so far."""
        d = self.cfg.data
        return advance_position(
            self.data_position,
            self._segment_batches,
            self.n_train,
            d.batch_size,
            self.trainer.world_size,
            d.drop_last,
        )

    def start_segment(self) -> tuple[int, int]:
        """Called when the training loader is built: the position it starts from."""
        self._segment_batches = 0
        return self.data_position

    # ------------------------------------------------------------------ resume state
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # a non-finite loss since the last read must never reach a checkpoint (all ranks read here)
        if self.monitor.pending or self.trainer.world_size > 1:
            self._raise_if_non_finite(self.monitor.read(self._gather_fn(), self.device, reset=False))
        if self.trainer.is_global_zero:  # the log rows up to this step reach the disk with it
            for logger in self.loggers:
                logger.save()
        epoch, offset = self.current_position()
        checkpoint["melp_state"] = {  # plain ints/floats: loadable with weights_only=True
            "batches_seen": self.batches_seen,
            "best_score": float(self.best_score),
            "data_epoch": epoch,
            "data_offset": offset,
            "world_size": self.trainer.world_size,
            "batch_size": self.cfg.data.batch_size,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("melp_state")
        if state is None or "data_epoch" not in state:
            raise ValueError(
                "checkpoint has no melp_state of this version (not written by this melp pretrain); "
                "cannot resume exactly. Start a new run, or use --set model.init=<exported model folder>"
            )
        self.best_score = state["best_score"]
        self.batches_seen = state["batches_seen"]
        self.data_position = (state["data_epoch"], state["data_offset"])
        self._segment_batches = 0
        world, batch = self.trainer.world_size, self.cfg.data.batch_size
        if (state["world_size"], state["batch_size"]) != (world, batch):
            log.warning(
                "resuming a run of %d x %d (devices x batch) on %d x %d: the sample order continues at "
                "epoch %d, sample %d; dropout masks and the rank-local caption/beat terms differ from "
                "an uninterrupted run%s",
                state["world_size"],
                state["batch_size"],
                world,
                batch,
                *self.data_position,
                ""
                if state["world_size"] * state["batch_size"] == world * batch
                else "; the global batch changed, so the schedule length is recomputed",
            )

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
        values = []
        for k, vs in enumerate(self.val_sets):
            outs = self._val_outputs.get(k) or []
            if not outs:
                continue
            idx = torch.cat([o[0] for o in outs])  # (n,)
            scores = torch.cat([o[1] for o in outs])  # (n, K)
            labels = torch.cat([o[2] for o in outs])  # (n, K)
            auc = gathered_auroc(idx, scores, labels, self._gather_fn())
            self.log(f"val/{vs.name}_auroc", auc, sync_dist=False, rank_zero_only=False)
            values.append(auc)
        if values:
            mean = float(np.nanmean(values))
            self.log("val/mean_auroc", mean, prog_bar=True, sync_dist=False)
            if mean > self.best_score:
                self.best_score = mean
            if self.trainer.is_global_zero:
                log.info(
                    "step %d: val/mean_auroc %.4f (%s)",
                    self.global_step,
                    mean,
                    ", ".join(f"{vs.name} {v:.4f}" for vs, v in zip(self.val_sets, values)),
                )
        self._val_outputs = {}
        if self.cfg.val.beat_records > 0 and self.val_sets and self.trainer.is_global_zero:
            self._log_beat_level()

    def _log_beat_level(self) -> None:
        """Rank 0: the beat-level diagnostics of the first ``val.beat_records`` records of the first
        validation set, logged as ``val/beat_*`` and kept in ``beat_history`` (step, values)."""
        from melp.eval.beats import beat_diagnostics

        ds = self.val_sets[0].dataset.dataset  # the DownstreamDataset behind the IndexedDataset
        try:
            d = beat_diagnostics(
                self.model, ds.store, ds.rows[: self.cfg.val.beat_records], normalize=ds.normalize
            )
        except ValueError as err:  # no report among these records
            log.warning("beat diagnostics skipped: %s", err)
            return
        keys = ("beat_cosine", "attention_entropy", "attention_ratio", "half_mass_frames", "qrs_hit")
        values = {k: d[k] for k in keys if k in d}
        for k, v in values.items():
            name = k if k.startswith("beat_") else f"beat_{k}"
            self.log(f"val/{name}", v, rank_zero_only=True)
        self.beat_history.append({"step": int(self.global_step), **values})
        log.info(
            "step %d: beat level: cosine %.3f, attention entropy %.3f, max/min %.2f, half-mass %.1f of %d "
            "frames, QRS hit %.2f (chance %.2f)",
            self.global_step, d["beat_cosine"], d["attention_entropy"], d["attention_ratio"],
            d["half_mass_frames"], d["frames"], d.get("qrs_hit", float("nan")), d.get("qrs_chance", float("nan")),
        )  # fmt: skip


def gathered_auroc(idx: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, gather=None) -> float:
    """Macro AUROC of this rank's predictions joined with every other rank's (fix of D19).

    Args:
        idx: (n,) record index of each row; scores, labels: (n, K).
        gather: ``(n, ...) -> (G, n, ...)`` all-gather (every rank holds the same n: the validation
            sampler pads the last shard by wrapping); None = one process.
    The rows that padding duplicated are dropped by record index before scoring."""
    from melp.eval.metrics import macro_auroc

    if gather is not None:  # (G, n, ...) -> (G*n, ...)
        idx, scores, labels = (gather(t).flatten(0, 1) for t in (idx, scores, labels))
    _, first = np.unique(idx.cpu().numpy(), return_index=True)  # drop sampler padding duplicates
    return macro_auroc(labels.cpu().numpy()[first], scores.cpu().numpy()[first])
