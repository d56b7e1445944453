"""``pretrain(cfg)``: build model, data, trainer and callbacks from a :class:`PretrainConfig` and run.

Output folder layout (``cfg.out``)::

    config.yaml                resolved config
    checkpoints/best.ckpt      best by val/mean_auroc (Lightning checkpoint, full training state)
    checkpoints/last.ckpt      last step (written at validation, every ckpt_every_n_steps, and at the end)
    logs/csv/metrics.csv       CSV log;  logs/tb/  TensorBoard log
    best_model/                model.save_pretrained() of the best checkpoint (what eval commands load)
    summary.json               best score, steps, wall time
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from melp.train.config import PretrainConfig, save_config
from melp.train.datamodule import IndexedDataset, ResumableSampler, ValSet, make_loader
from melp.train.module import MELPLightning, NonFiniteLossError

__all__ = ["pretrain", "build_model", "NonFiniteLossError"]

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


def _quiet_lightning(frozen: bool) -> None:
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
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # where rank_zero_info logs
    if not any(isinstance(f, _DropLightningTips) for f in tips.filters):
        tips.addFilter(_DropLightningTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    if frozen:
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


class _Data(L.LightningDataModule):
    """Builds the loaders inside ``fit`` (after DDP launch, when rank and world size are known)."""

    def __init__(self, cfg: PretrainConfig, train_ds: IndexedDataset, val_sets: list[ValSet]) -> None:
        super().__init__()
        self.cfg, self.train_ds, self.val_sets = cfg, train_ds, val_sets

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
        )
        per_epoch = len(sampler) // d.batch_size if d.drop_last else math.ceil(len(sampler) / d.batch_size)
        epoch, batches = divmod(t.lightning_module.batches_seen, per_epoch)  # 0 unless resuming
        sampler.start(epoch, batches * d.batch_size)
        return make_loader(self.train_ds, sampler, d.batch_size, d.num_workers, d.pin_memory, d.drop_last)

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


class _SaveLast(Callback):
    """Write ``last.ckpt`` every ``every`` optimizer steps (0 = never) and when training ends
    normally (also after ``stop_at_step``); never after a failure, so the last good one stays."""

    def __init__(self, path: Path, every: int) -> None:
        self.path, self.every, self._saved_at = path, every, -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every and step % self.every == 0 and step != self._saved_at:
            trainer.save_checkpoint(str(self.path))
            self._saved_at = step

    def on_train_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(str(self.path))


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


def pretrain(cfg: PretrainConfig, resume: str | None = None) -> dict:
    """Run MELP pretraining as configured; returns a summary dict (also written to summary.json).

    Raises:
        NonFiniteLossError: a loss term became NaN/Inf (all ranks stop; last good checkpoint kept).
    """
    from melp.data.datasets import DownstreamDataset, PretrainDataset, check_input, select_rows
    from melp.data.store import ECGStore
    from melp.data.tasks import resolve_task
    from melp.losses import MELPLoss

    t0 = time.time()
    _quiet_lightning(frozen=bool(cfg.model.freeze))
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    torch.set_float32_matmul_precision(cfg.trainer.matmul_precision)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(cfg)

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
    train_ds = IndexedDataset(
        PretrainDataset(
            store,
            rows,
            lead_mask_p=cfg.data.lead_mask_p,
            normalize=cfg.data.normalize,
            max_shift=round(cfg.data.max_shift_s * store.rate),
            noise_std=cfg.data.noise_std,
        ),
        seed=cfg.seed,
    )
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

    tc = cfg.trainer
    strategy = tc.strategy
    if strategy == "auto" and tc.devices * tc.num_nodes > 1:
        strategy = "ddp"
    world = tc.devices * tc.num_nodes
    batches_per_epoch = len(train_ds) // world if cfg.data.drop_last else math.ceil(len(train_ds) / world)
    batches_per_epoch = (
        batches_per_epoch // cfg.data.batch_size
        if cfg.data.drop_last
        else math.ceil(batches_per_epoch / cfg.data.batch_size)
    )
    if batches_per_epoch == 0:
        raise ValueError(
            f"data: {len(train_ds)} training records give no full batch of {cfg.data.batch_size} on {world} "
            "device(s); lower data.batch_size or set data.drop_last=false"
        )
    steps_per_epoch = math.ceil(batches_per_epoch / tc.accumulate_grad_batches)
    total_steps = tc.max_steps if tc.max_steps > 0 else tc.max_epochs * steps_per_epoch
    lightning_steps = tc.stop_at_step if tc.stop_at_step > 0 else total_steps

    module = MELPLightning(
        cfg,
        model,
        MELPLoss(
            cfg.loss.clip,
            cfg.loss.caption,
            cfg.loss.beat,
            soft_duplicates=cfg.loss.soft_duplicates,
            diversity=cfg.loss.diversity,
        ),  # fmt: skip
        val_sets,
        total_steps,
    )
    callbacks: list[Callback] = [LearningRateMonitor(logging_interval="step")]
    ckpt = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val/mean_auroc" if val_sets else None,
        mode="max",
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks += [ckpt, _SaveLast(ckpt_dir / "last.ckpt", tc.ckpt_every_n_steps)]
    val_kw: dict = {"limit_val_batches": 0} if not val_sets else {}
    if val_sets and cfg.val.every_n_steps > 0:
        val_kw = {"val_check_interval": cfg.val.every_n_steps, "check_val_every_n_epoch": None}
    trainer = L.Trainer(
        default_root_dir=str(out),
        accelerator=tc.accelerator,
        devices=tc.devices,
        num_nodes=tc.num_nodes,
        strategy=strategy,
        precision=tc.precision,
        max_steps=lightning_steps,  # always by steps: the sampler, not Lightning, counts data epochs
        max_epochs=-1,
        accumulate_grad_batches=tc.accumulate_grad_batches,
        gradient_clip_val=cfg.optim.grad_clip or None,
        log_every_n_steps=tc.log_every_n_steps,
        deterministic=tc.deterministic,
        callbacks=callbacks,
        logger=[
            CSVLogger(str(out), name="logs", version="csv"),
            TensorBoardLogger(str(out), name="logs", version="tb", default_hp_metric=False),
        ],
        enable_progress_bar=tc.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # ResumableSampler shards itself
        **val_kw,
    )
    resume_ckpt = _resume_path(resume, ckpt_dir)
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        if resume_ckpt is not None:
            _set_aside_csv_log(out / "logs" / "csv")
    log.info(
        "pretraining %s on %d records (%d val sets): %d steps (%d per epoch), warmup %d",
        model.config.get("name"),
        len(train_ds),
        len(val_sets),
        total_steps,
        steps_per_epoch,
        module.warmup_steps,
    )
    trainer.fit(
        module,
        datamodule=_Data(cfg, train_ds, val_sets),
        ckpt_path=resume_ckpt,
        weights_only=False,  # our own checkpoints: they hold the numpy/python RNG states
    )

    summary = {
        "best_score": None if module.best_score == -math.inf else module.best_score,
        "best_checkpoint": ckpt.best_model_path or str(ckpt_dir / "last.ckpt"),
        "best_model": str(out / "best_model"),
        "global_step": trainer.global_step,
        "total_steps": total_steps,
        "seconds": time.time() - t0,
    }
    if trainer.is_global_zero:
        _merge_csv_logs(out / "logs" / "csv")
        final_state = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
        state = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
        module.model.save_pretrained(out / "best_model")
        module.model.load_state_dict(final_state)  # leave the returned module at its last weights
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    summary["module"] = module
    return summary
