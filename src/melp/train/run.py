"""``pretrain(cfg)``: build model, data, trainer and callbacks from a :class:`PretrainConfig` and run.

Output folder layout (``cfg.out``)::

    config.yaml                    resolved config
    checkpoints/best-stepNNNNNN.ckpt  the trainer.save_top_k best by val/mean_auroc (full training state)
    checkpoints/last.ckpt          last step (at validation, every ckpt_every_n_steps, and at the end)
    logs/csv/metrics.csv           CSV log (+ hparams.yaml);  logs/tb/  TensorBoard log
    best_model/                    model.save_pretrained() of the best checkpoint (what eval commands load)
    summary.json                   best score, steps, wall time, beat-level history (val/beat_*)

Only rank 0 writes files, prints and logs (other ranks log warnings and errors only).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from melp.train.checkpoint import SafeCheckpointIO, UnsafeCheckpointError, load_checkpoint
from melp.train.config import ConfigError, PretrainConfig, save_config
from melp.train.datamodule import (
    IndexedDataset,
    PretrainCollate,
    ResumableSampler,
    StreamBatchSampler,
    ValSet,
    batches_per_epoch,
    make_loader,
)
from melp.train.module import MELPLightning, NonFiniteLossError
from melp.train.step import exclude_unused_parameters

__all__ = ["pretrain", "build_model", "NonFiniteLossError", "UnsafeCheckpointError"]

log = logging.getLogger("melp.train")


def build_model(cfg: PretrainConfig):
    """The library model named by ``cfg.model``: ``create_model``, or with ``init`` a saved folder, either
    a full model (as saved) or an encoder-only one (e.g. ``melp convert`` output) whose ECG side warm-starts
    a model with the text side of ``name`` / ``text`` / ``overrides``. ``data.normalize`` is written into
    the model config (the saved model states the normalisation it was trained with)."""
    import melp
    from melp.models.config import NORMALIZE_MODES
    from melp.models.registry import with_text_tower

    if cfg.data.normalize not in NORMALIZE_MODES:
        raise ValueError(f"data.normalize must be one of {list(NORMALIZE_MODES)}, got {cfg.data.normalize!r}")
    m = cfg.model
    if m.init:
        model = melp.load_model(m.init)
        if not model.has_text:
            model = with_text_tower(model, m.name, text_model=m.text, **m.overrides)
        elif m.overrides or m.text:
            raise ValueError(
                "model.init (a saved full model) cannot be combined with model.overrides / model.text"
            )
    else:
        model = melp.create_model(m.name, text_model=m.text, **m.overrides)
    if model.config["ecg"]["normalize"] != cfg.data.normalize:
        log.info(
            "model config: ecg.normalize %s -> %s (data.normalize)",
            model.config["ecg"]["normalize"],
            cfg.data.normalize,
        )
    model.config["ecg"]["normalize"] = cfg.data.normalize
    model.train()  # pretrained text towers load in eval mode; the paper keeps dropout on
    for prefix in m.freeze:  # e.g. "text." freezes the whole text tower, embeddings included
        hit = [p for n, p in model.named_parameters() if n.startswith(prefix)]
        if not hit:
            raise ValueError(f"model.freeze: no parameter name starts with {prefix!r}")
        for p in hit:
            p.requires_grad_(False)
        for name, mod in model.named_modules():  # a fully frozen part gives deterministic features
            if (
                name
                and (name + ".").startswith(prefix)
                and all(not p.requires_grad for p in mod.parameters())
            ):
                mod.eval()
    if m.cache_text:
        model.cache_text_features()  # raises unless the text tower is fully frozen
    return model


class _DropLightningTips(logging.Filter):
    """Drop Lightning's advertising lines ("💡 Tip: ... litlogger ...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.getMessage())


def _quiet_lightning(frozen: bool, rank: int = 0) -> None:
    """One copy of each Lightning message, no tips, no warnings that are expected here.

    Lightning installs its own console handler; when the root logger has one too (the ``melp`` CLI
    configures it), every Lightning line would print twice, so Lightning's lines go through the
    root handler only. Filtered warnings: Lightning's internal ``LeafSpec`` deprecation (torch >= 2.9)
    and, with frozen parts (``model.freeze``), the notice that modules start in eval mode (they
    are frozen on purpose)."""
    import warnings

    if logging.getLogger().handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            lg = logging.getLogger(name)
            lg.handlers.clear()
            lg.propagate = True
    if rank != 0:  # rank 0 speaks for the run; the others only report problems
        for name in ("melp", "lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # where rank_zero_info logs
    if not any(isinstance(f, _DropLightningTips) for f in tips.filters):
        tips.addFilter(_DropLightningTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # validation metrics are computed from predictions gathered over all ranks, so every rank
    # logs the same value and Lightning's advice to average them across devices does not apply
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('val/")
    if frozen:
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


class _Data(L.LightningDataModule):
    """Builds the loaders inside ``fit`` (after DDP launch, when rank and world size are known)."""

    def __init__(
        self, cfg: PretrainConfig, train_ds: IndexedDataset, val_sets: list[ValSet], collate: PretrainCollate
    ) -> None:
        super().__init__()
        self.cfg, self.train_ds, self.val_sets, self.collate = cfg, train_ds, val_sets, collate
        self.total_batches = 0  # per rank, for the whole run: set by pretrain() from the schedule

    def train_dataloader(self):
        t, d = self.trainer, self.cfg.data
        sampler = ResumableSampler(
            len(self.train_ds),
            seed=self.cfg.seed,
            shuffle=True,
            rank=t.global_rank,
            world_size=t.world_size,
            drop_last=d.drop_last,
            encode_epoch=True,
            batch_size=d.batch_size,
        )
        module = t.lightning_module
        epoch, offset = module.start_segment()  # (0, 0) unless resuming
        sampler.start(epoch, offset)
        # one Lightning epoch is the whole run (see StreamBatchSampler): batches_seen of them are done
        stream = StreamBatchSampler(
            sampler, self.total_batches, done=min(module.batches_seen, self.total_batches)
        )
        return make_loader(
            self.train_ds, stream, d.batch_size, d.num_workers, d.pin_memory, d.drop_last, self.collate
        )

    def val_dataloader(self):
        t = self.trainer
        loaders = []
        for vs in self.val_sets:
            sampler = ResumableSampler(
                len(vs.dataset), shuffle=False, rank=t.global_rank, world_size=t.world_size
            )
            loaders.append(
                make_loader(
                    vs.dataset,
                    sampler,
                    self.cfg.val.batch_size,
                    self.cfg.data.num_workers,
                    self.cfg.data.pin_memory,
                    drop_last=False,
                )
            )
        return loaders


class _EpochBar(TQDMProgressBar):
    """Lightning's bar, captioned with the data epoch and the number of epochs of the schedule
    (the trainer itself runs by steps, so its own caption knows no epoch count)."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._caption(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._caption(pl_module)  # one Lightning epoch spans the run: the data epoch moves inside it

    def _caption(self, pl_module) -> None:
        epoch, _ = pl_module.current_position()
        epoch = min(epoch, self.epochs - 1)  # after the last batch the position is the next epoch
        self.train_progress_bar.set_description(f"Epoch {epoch}/{self.epochs - 1}")

    def get_metrics(self, trainer, pl_module) -> dict:
        return {**super().get_metrics(trainer, pl_module), **pl_module.last_train_metrics}


class _SaveLast(Callback):
    """Write ``last.ckpt`` every ``every`` optimizer steps (0 = never) and when training ends
    normally (also after ``stop_at_step``); never after a failure, so the last good one stays."""

    # ``weights_only=False`` below is Lightning's *save* flag (write the optimizer, scheduler and loop
    # state too, which exact resume needs); it unpickles nothing. Reading is always
    # ``melp.train.checkpoint.load_checkpoint`` (torch.load with weights_only=True).

    def __init__(self, path: Path, every: int) -> None:
        self.path, self.every, self._saved_at = path, every, -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every and step % self.every == 0 and step != self._saved_at:
            trainer.save_checkpoint(str(self.path), weights_only=False)
            self._saved_at = step

    def on_train_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(str(self.path), weights_only=False)


def _set_aside_csv_log(csv_dir: Path) -> None:
    """Before a resumed run: move ``metrics.csv`` to ``metrics.part-K.csv`` (Lightning's CSV logger
    deletes an existing ``metrics.csv`` when it starts)."""
    current = csv_dir / "metrics.csv"
    if not current.is_file():
        return
    k = 0
    while (csv_dir / f"metrics.part-{k}.csv").exists():
        k += 1
    current.replace(csv_dir / f"metrics.part-{k}.csv")


def _merge_csv_logs(csv_dir: Path) -> None:
    """After a resumed run: one ``metrics.csv`` again, from the set-aside parts (oldest first) and the
    new file. Rows of a part at or after the step where the next part starts are dropped: those
    steps were redone after the resume. The parts are removed only once the merged file is written."""
    import pandas as pd

    parts = sorted(csv_dir.glob("metrics.part-*.csv"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    current = csv_dir / "metrics.csv"
    if not parts or not current.is_file():
        return
    frames = [pd.read_csv(p) for p in [*parts, current]]
    kept = []
    for frame, nxt in zip(frames, frames[1:] + [None]):
        if nxt is not None and "step" in frame and "step" in nxt and nxt["step"].notna().any():
            frame = frame[frame["step"] < nxt["step"].min()]
        kept.append(frame)
    merged = pd.concat(kept, ignore_index=True)
    tmp = csv_dir / "metrics.csv.tmp"
    merged.to_csv(tmp, index=False)
    tmp.replace(current)
    for p in parts:
        p.unlink()


def _resume_path(resume: str | None, ckpt_dir: Path) -> str | None:
    if resume is None:
        return None
    if resume == "auto":
        last = ckpt_dir / "last.ckpt"
        if last.is_file():
            return str(last)
        log.info("--resume auto: no %s yet, starting from scratch", last)
        return None
    if not Path(resume).is_file():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint (use a .ckpt path or 'auto')")
    return resume


_LOGGER_EXTRAS = {"wandb": "wandb", "mlflow": "mlflow"}


def _loggers(cfg: PretrainConfig, out: Path) -> list:
    """The Lightning loggers named by ``trainer.loggers`` (csv, tensorboard, wandb, mlflow)."""
    import importlib.util

    from lightning.pytorch import loggers as pl_loggers

    made = []
    for name in cfg.trainer.loggers:
        if name in _LOGGER_EXTRAS and importlib.util.find_spec(_LOGGER_EXTRAS[name]) is None:
            raise ConfigError(
                f"trainer.loggers: '{name}' needs the {_LOGGER_EXTRAS[name]} package: pip install 'melp[{name}]'"
            )
        if name == "csv":
            made.append(pl_loggers.CSVLogger(str(out), name="logs", version="csv"))
        elif name == "tensorboard":
            made.append(
                pl_loggers.TensorBoardLogger(str(out), name="logs", version="tb", default_hp_metric=False)
            )
        elif name == "wandb":
            made.append(
                pl_loggers.WandbLogger(
                    project=cfg.trainer.experiment, save_dir=str(out / "logs"), name=out.name
                )
            )
        elif name == "mlflow":
            made.append(
                pl_loggers.MLFlowLogger(
                    experiment_name=cfg.trainer.experiment,
                    run_name=out.name,
                    tracking_uri=os.environ.get("MLFLOW_TRACKING_URI")
                    or (out / "logs" / "mlruns").resolve().as_uri(),
                )
            )
        else:
            raise ConfigError(
                f"trainer.loggers: unknown logger {name!r} (choose from csv, tensorboard, wandb, mlflow)"
            )
    return made


def _check_strategy(strategy: str, accelerator: str) -> None:
    """Refuse, before any work, a strategy that cannot run here (with what to do instead)."""
    import importlib.util

    if strategy.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"trainer.strategy={strategy}: needs the deepspeed package: pip install deepspeed")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if strategy.startswith("fsdp") and on_cpu:
        raise ConfigError(
            f'trainer.strategy={strategy}: Lightning runs FSDP on CUDA GPUs only ("The strategy `fsdp` '
            'requires a GPU accelerator"); on CPU use trainer.strategy=ddp'
        )


def _probe_batch(train_ds: IndexedDataset, collate: PretrainCollate) -> dict:
    """Two training items (or one), collated: the input of the unused-parameter probe."""
    return collate([train_ds[i] for i in range(min(2, len(train_ds)))])


def _training_data(cfg: PretrainConfig, model) -> tuple[IndexedDataset, list[ValSet]]:
    """The pretraining pairs and the zero-shot validation sets, through the one data path."""
    from melp.data.datasets import DownstreamDataset, PretrainDataset, check_input, select_rows
    from melp.data.store import ECGStore
    from melp.data.tasks import resolve_task

    if not cfg.data.store:
        raise ValueError(
            "data.store is empty: set it to a store folder (melp prepare ...), e.g. --set data.store=DIR"
        )
    store = ECGStore(cfg.data.store)
    check_input(store, model.config["ecg"], "data.store")
    rows = select_rows(store, cfg.data.split, cfg.data.folds, cfg.data.limit, "data")
    reports = store.manifest["report"].fillna("").astype(str).to_numpy()
    rows = rows[np.char.str_len(reports[rows].astype(str)) > 0]  # records without a report cannot pair
    if cfg.model.caption_vocab_from_reports:  # deterministic: a resumed run rebuilds the same layer
        n_vocab = len(model.restrict_caption_vocab(list(reports[rows])))
        log.info("caption decoder restricted to the %d tokens of the training reports", n_vocab)
    pairs = PretrainDataset(store, rows, lead_mask_p=cfg.data.lead_mask_p, normalize=cfg.data.normalize,
                            max_shift=round(cfg.data.max_shift_s * store.rate), noise_std=cfg.data.noise_std)  # fmt: skip
    val_sets = []
    for k, v in enumerate(cfg.val.sets):
        vstore = store if (not v.store or v.store == cfg.data.store) else ECGStore(v.store)
        check_input(vstore, model.config["ecg"], f"val.sets.{k}.store")
        vrows = select_rows(vstore, v.split, v.folds, v.limit, f"val.sets.{k}")
        task = resolve_task(vstore, v.task)
        ds = DownstreamDataset(vstore, task, vrows, normalize=cfg.data.normalize)
        if len(ds) == 0:
            raise ValueError(
                f"val.sets.{k}: no record of {vstore.path} in these rows is labelled for task {task!r}"
            )
        val_sets.append(ValSet(v.name or task, list(ds.classes), IndexedDataset(ds, seed=cfg.seed), task))
    return IndexedDataset(pairs, seed=cfg.seed), val_sets


def _callbacks(cfg: PretrainConfig, ckpt_dir: Path, has_val: bool, extra: list[Callback] | None):
    """LR monitor, top-k + last checkpoints, early stopping, the epoch bar; returns (list, ckpt, bar)."""
    tc = cfg.trainer
    ckpt = ModelCheckpoint(dirpath=ckpt_dir, filename="best-step{step:06d}", monitor="val/mean_auroc" if has_val else None,
                           mode="max", save_top_k=tc.save_top_k if has_val else 0, save_last=True,
                           auto_insert_metric_name=False, enable_version_counter=False)  # fmt: skip
    callbacks = [LearningRateMonitor(logging_interval="step"), *(extra or []), ckpt,
                 _SaveLast(ckpt_dir / "last.ckpt", tc.ckpt_every_n_steps)]  # fmt: skip
    if has_val and tc.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(monitor="val/mean_auroc", mode="max", patience=tc.early_stopping_patience,
                                       check_on_train_epoch_end=False))  # fmt: skip
    bar = _EpochBar(1)
    if tc.progress_bar:
        callbacks.append(bar)
    return callbacks, ckpt, bar


def _trainer(cfg: PretrainConfig, out: Path, callbacks: list[Callback], loggers, has_val: bool) -> L.Trainer:
    tc = cfg.trainer
    val_kw: dict = {"limit_val_batches": 0} if not has_val else {}
    if has_val and cfg.val.every_n_steps > 0:
        val_kw = {"val_check_interval": cfg.val.every_n_steps, "check_val_every_n_epoch": None}
    return L.Trainer(
        default_root_dir=str(out), accelerator=tc.accelerator, devices=tc.devices, num_nodes=tc.num_nodes,
        strategy=tc.strategy, precision=tc.precision,
        max_steps=1,  # set by _schedule, once Lightning has resolved the device count
        max_epochs=-1,  # always by steps: the sampler, not Lightning, counts data epochs
        accumulate_grad_batches=tc.accumulate_grad_batches, gradient_clip_val=cfg.optim.grad_clip or None,
        log_every_n_steps=tc.log_every_n_steps, deterministic=tc.deterministic, callbacks=callbacks,
        logger=loggers or False, enable_progress_bar=tc.progress_bar, enable_model_summary=False,
        num_sanity_val_steps=0, use_distributed_sampler=False,  # ResumableSampler shards itself
        plugins=[SafeCheckpointIO()] if _takes_checkpoint_io(tc.strategy) else None, **val_kw,
    )  # fmt: skip


def _schedule(cfg: PretrainConfig, trainer: L.Trainer, n_train: int, bar) -> tuple[int, int, int]:
    """(world size, steps per epoch, total steps); sets the trainer's step budget and the bar."""
    tc = cfg.trainer
    world = trainer.num_devices * trainer.num_nodes
    per_epoch = batches_per_epoch(n_train, cfg.data.batch_size, world, cfg.data.drop_last)
    if per_epoch == 0:
        raise ValueError(
            f"data: {n_train} training records give no full batch of {cfg.data.batch_size} on {world} "
            "device(s); lower data.batch_size or set data.drop_last=false"
        )
    steps_per_epoch = math.ceil(per_epoch / tc.accumulate_grad_batches)
    total_steps = tc.max_steps if tc.max_steps > 0 else tc.max_epochs * steps_per_epoch
    trainer.fit_loop.epoch_loop.max_steps = tc.stop_at_step if tc.stop_at_step > 0 else total_steps
    bar.epochs = math.ceil(total_steps / steps_per_epoch)
    return world, steps_per_epoch, total_steps


def _export(module, out: Path, best_path: str, summary: dict) -> None:
    """Rank 0: one CSV log, the best checkpoint's weights as ``best_model/``, ``summary.json``."""
    _merge_csv_logs(out / "logs" / "csv")
    final_state = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
    module.load_state_dict(load_checkpoint(best_path)["state_dict"])
    module.model.save_pretrained(out / "best_model")
    module.model.load_state_dict(final_state)  # leave the returned module at its last weights
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


def pretrain(cfg: PretrainConfig, resume: str | None = None, callbacks: list[Callback] | None = None) -> dict:
    """Run MELP pretraining as configured; returns a summary dict (also written to summary.json).

    Args:
        cfg: the run config.
        resume: a checkpoint path, ``"auto"`` (``OUT/checkpoints/last.ckpt`` if present) or None.
        callbacks: extra Lightning callbacks (added after melp's own).

    The summary has ``rank`` (this process's global rank; only rank 0 exports and writes).

    Raises:
        NonFiniteLossError: a loss term became NaN/Inf (all ranks stop; last good checkpoint kept).
        UnsafeCheckpointError: ``resume`` names a file that would need code to unpickle.
        ConfigError: a logger or strategy whose package is missing, or an impossible setting.
    """
    from melp.losses import MELPLoss

    t0 = time.time()
    _quiet_lightning(frozen=bool(cfg.model.freeze), rank=int(rank_zero_only.rank))
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    tc = cfg.trainer
    if not (cfg.loss.clip or cfg.loss.caption or cfg.loss.beat):
        raise ConfigError("loss: every weight is 0 (loss.clip, loss.caption, loss.beat); nothing to train")
    _check_strategy(tc.strategy, tc.accelerator)
    loggers = _loggers(cfg, out)
    resume_ckpt = _resume_path(resume, ckpt_dir)
    if resume_ckpt is not None:  # refuse an unsafe file before any work (and before Lightning sees it)
        load_checkpoint(resume_ckpt)
    torch.set_float32_matmul_precision(tc.matmul_precision)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(cfg)
    train_ds, val_sets = _training_data(cfg, model)
    loss_fn = MELPLoss(cfg.loss.clip, cfg.loss.caption, cfg.loss.beat, soft_duplicates=cfg.loss.soft_duplicates,
                       diversity=cfg.loss.diversity)  # fmt: skip
    collate = PretrainCollate.for_model(model)
    if cfg.data.num_workers > 0:  # the tokenizer runs in the loader workers (forked)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # parameters a zero loss weight leaves without gradient are not trained (DDP needs no
    # find_unused_parameters; the optimizer does not decay them)
    exclude_unused_parameters(model, loss_fn, _probe_batch(train_ds, collate))
    cbs, ckpt, bar = _callbacks(cfg, ckpt_dir, bool(val_sets), callbacks)
    trainer = _trainer(cfg, out, cbs, loggers, bool(val_sets))
    world, steps_per_epoch, total_steps = _schedule(cfg, trainer, len(train_ds), bar)
    hparams = {"world_size": world, "global_batch": cfg.data.batch_size * world * tc.accumulate_grad_batches,
               "steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "n_train": len(train_ds),
               "model_name": model.config.get("name")}  # fmt: skip
    module = MELPLightning(cfg, model, loss_fn, val_sets, total_steps, n_train=len(train_ds), hparams=hparams)
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        if resume_ckpt is not None:
            _set_aside_csv_log(out / "logs" / "csv")
    log.info("pretraining %s on %d records (%d val sets) on %d device(s): %d steps (%d per epoch), warmup %d",
             model.config.get("name"), len(train_ds), len(val_sets), world, total_steps, steps_per_epoch,
             module.warmup_steps)  # fmt: skip
    data = _Data(cfg, train_ds, val_sets, collate)
    data.total_batches = total_steps * tc.accumulate_grad_batches
    trainer.fit(module, datamodule=data, ckpt_path=resume_ckpt,
                weights_only=True)  # no pickle: melp checkpoints hold only tensors and plain data  # fmt: skip
    best_path = ckpt.best_model_path if val_sets and ckpt.best_model_path else str(ckpt_dir / "last.ckpt")
    summary = {
        "best_score": None if module.best_score == -math.inf else module.best_score, "best_checkpoint": best_path,
        "best_model": str(out / "best_model"), "global_step": trainer.global_step, "total_steps": total_steps,
        "seconds": time.time() - t0, "rank": trainer.global_rank, "beat_history": module.beat_history,
    }  # fmt: skip
    if trainer.is_global_zero:
        _export(module, out, best_path, summary)
    summary["module"] = module
    return summary


def _takes_checkpoint_io(strategy: str) -> bool:
    """DeepSpeed and FSDP write sharded checkpoints with their own IO; every other strategy uses ours."""
    return not (strategy.startswith("deepspeed") or strategy.startswith("fsdp"))
