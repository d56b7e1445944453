"""The library training step, written so that it never waits for the device.

A host-device synchronisation (``.item()``, ``float(tensor)``, ``bool(tensor)``, a boolean-mask
index, ``nonzero``) stalls the host until the device has finished all queued work, so the next
kernels are not queued in time and the accelerator idles. One step here is forward, the three
losses, backward, the optimizer and the logit-scale clamp, and none of them reads a device value:

* the non-finite check and the logged values accumulate on the device (:class:`StepMonitor`) and
  are read once per logging interval (:meth:`StepMonitor.read`, one transfer for everything);
* sparse caption logits use host-computed gather indices (``caption_index`` from the collate);
* the optimizer is the fused AdamW (no per-parameter ``.item()`` of the step counter);
* dropout randomness is re-seeded from ``(seed, rank, batch)`` (:func:`seed_step`), a host-only
  operation, so the RNG state never has to be saved or gathered for an exact resume.

``benchmarks/bench_step_syncs.py`` counts the syncs with the torch profiler;
``tests/test_step.py`` pins the count at 0.

:func:`exclude_unused_parameters` removes from training the parameters that a zero loss weight
leaves without gradient (e.g. the caption decoder with ``loss.caption=0``), so DDP never meets an
unused parameter and needs no ``find_unused_parameters`` graph walk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

log = logging.getLogger("melp.train")

TERMS = ("clip", "caption", "beat", "total")
_NO_STEP = 2**62  # "no bad step yet" (reduced with min across ranks)


def step_seed(seed: int, rank: int, batch: int) -> int:
    """The torch seed of training batch ``batch`` (0-based, counted per rank) on ``rank``."""
    return int(np.random.SeedSequence([seed, rank, batch]).generate_state(1)[0])


def seed_step(seed: int, rank: int, batch: int) -> None:
    """Seed torch (CPU and every CUDA device) for one training batch: host-side only, no sync.

    Every rank draws different dropout masks, and a resumed run (same batch counter) draws the
    same ones as the uninterrupted run, without any RNG state in the checkpoint."""
    torch.manual_seed(step_seed(seed, rank, batch))


def model_inputs(batch: dict) -> dict:
    """The model's keyword inputs from a collated training batch (:class:`PretrainCollate`)."""
    inputs = {"ecg": batch["ecg"], "input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if "length" in batch:  # valid samples per record (padding mask)
        inputs["lengths"] = batch["length"]
    if "caption_index" in batch:
        inputs["caption_index"] = batch["caption_index"]
    return inputs


def forward_and_loss(model: nn.Module, loss_fn: nn.Module, **inputs) -> tuple[dict, dict]:
    """``(outputs, losses)`` of one batch: ``model(**inputs)`` then ``loss_fn(**outputs)``."""
    out = model(**inputs)
    return out, loss_fn(**out)


def compile_forward(model: nn.Module, loss_fn: nn.Module, backend: str = "inductor") -> Callable:
    """:func:`forward_and_loss` for ``model`` and ``loss_fn`` compiled as one ``torch.compile`` unit.

    The encoder, poolers, text tower, decoder and the three losses trace without a graph break
    (``tests/test_compile.py``); only the cross-rank gather of the CLIP term (DDP) is left to
    eager mode. Variable report lengths (``text.padding="longest"``) and caption counts
    (``decoder.sparse_logits``) are dynamic dimensions after the first recompile."""
    fn = torch.compile(forward_and_loss, backend=backend)

    def run(**inputs):
        return fn(model, loss_fn, **inputs)

    return run


@dataclass
class StepReport:
    """What :meth:`StepMonitor.read` returns: means over the steps since the last read, all ranks."""

    losses: dict[str, float]  # weighted terms and total, mean over batches and ranks
    extras: dict[str, float] = field(default_factory=dict)  # e.g. logit scale, embedding spread
    bad_terms: list[str] = field(default_factory=list)  # terms that were non-finite at least once
    first_bad_step: int | None = None  # first optimizer step with a non-finite loss (any rank)
    batches: int = 0  # batches summed (all ranks)


class StepMonitor:
    """Device-side accumulators for the logged values and the non-finite check.

    :meth:`update` only queues device ops; :meth:`read` moves everything to the host in one
    transfer (after one all-gather when ``gather`` is given) and resets the sums.

    Args:
        extras: names of extra scalars passed to :meth:`update` (summed and averaged like the losses).
    """

    def __init__(self, extras: tuple[str, ...] = ()) -> None:
        self.extras = tuple(extras)
        self._sums: torch.Tensor | None = None  # (T + E,) float32 (MPS has no float64)
        self._count: torch.Tensor | None = None  # () float32
        self._bad: torch.Tensor | None = None  # (T,) bool, sticky until read
        self._first_bad: torch.Tensor | None = None  # () int64

    def _init(self, device: torch.device) -> None:
        n = len(TERMS) + len(self.extras)
        self._sums = torch.zeros(n, dtype=torch.float32, device=device)
        self._count = torch.zeros((), dtype=torch.float32, device=device)
        self._bad = torch.zeros(len(TERMS), dtype=torch.bool, device=device)
        self._first_bad = torch.full((), _NO_STEP, dtype=torch.long, device=device)

    @torch.no_grad()
    def update(
        self, losses: dict[str, torch.Tensor], step: int, extras: dict[str, torch.Tensor] | None = None
    ):
        """Add one batch: ``losses`` holds the scalar terms of :data:`TERMS`; ``step`` is the
        optimizer step the batch belongs to (a Python int)."""
        vals = torch.stack([losses[k].detach().to(torch.float32) for k in TERMS])  # (T,)
        if self.extras:
            ext = torch.stack([extras[k].detach().to(torch.float32) for k in self.extras])  # (E,)
            vals = torch.cat([vals, ext])  # (T + E,)
        if self._sums is None or self._sums.device != vals.device:
            self._init(vals.device)
        finite = torch.isfinite(vals[: len(TERMS)])  # (T,)
        self._sums += vals
        self._count += 1
        self._bad |= ~finite
        hit = (~finite.all()) & (self._first_bad == _NO_STEP)
        self._first_bad = torch.where(hit, torch.full_like(self._first_bad, step), self._first_bad)

    @property
    def pending(self) -> bool:
        """Whether anything was added since the last :meth:`read` (host-side, no sync)."""
        return self._sums is not None

    @torch.no_grad()
    def read(
        self,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
        device: torch.device | str | None = None,
        reset: bool = True,
    ) -> StepReport:
        """Means since the last read and the non-finite flags, over all ranks: one host transfer.

        Args:
            gather: ``(K,) -> (G, K)`` all-gather over ranks (e.g. ``LightningModule.all_gather``);
                None = this process only. Every rank must call :meth:`read` at the same point.
            device: where to build the empty record when nothing was added (the gather's device).
            reset: start new sums (False: only look, e.g. for the non-finite check at a checkpoint).
        """
        nt, ne = len(TERMS), len(self.extras)
        if self._sums is None:  # nothing since the last read; still take part in the gather
            packed = torch.zeros(nt + ne + 1 + nt + 1, dtype=torch.float32, device=device)
            packed[-1] = _NO_STEP
        else:
            packed = torch.cat(
                [
                    self._sums,
                    self._count[None],
                    self._bad.to(torch.float32),
                    self._first_bad[None].to(torch.float32),
                ]
            )  # (T + E + 1 + T + 1,)
        rows = packed[None] if gather is None else gather(packed).reshape(-1, packed.shape[0])  # (G, K)
        host = rows.cpu().numpy()  # the one device -> host transfer
        if reset:
            self._sums = self._count = self._bad = self._first_bad = None
        sums, count = host[:, : nt + ne].sum(0), host[:, nt + ne].sum()
        bad = host[:, nt + ne + 1 : nt + ne + 1 + nt].max(0) > 0
        first = int(host[:, -1].min())
        mean = sums / max(count, 1.0)
        return StepReport(
            losses={k: float(mean[i]) for i, k in enumerate(TERMS)},
            extras={k: float(mean[nt + i]) for i, k in enumerate(self.extras)},
            bad_terms=[k for k, b in zip(TERMS, bad) if b],
            first_bad_step=None if first >= _NO_STEP else first,
            batches=int(count),
        )


def train_step(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict,
    monitor: StepMonitor,
    step: int,
    *,
    scheduler=None,
    forward: Callable | None = None,
) -> dict[str, torch.Tensor]:
    """One optimizer step on one batch: forward, losses, backward, optimizer (and scheduler),
    logit-scale clamp, monitor update. No host-device sync (see the module docstring).

    Args:
        batch: a collated batch (:class:`melp.train.datamodule.PretrainCollate`), on the device.
        step: the optimizer step index (for the non-finite report).
        forward: ``(**inputs) -> (outputs, losses)``, e.g. :func:`compile_forward`; default eager.

    Returns the loss terms (device tensors; reading them is up to the caller).
    """
    inputs = model_inputs(batch)
    _, losses = forward(**inputs) if forward is not None else forward_and_loss(model, loss_fn, **inputs)
    losses["total"].backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    model.clamp_logit_scale()
    monitor.update(losses, step)
    return losses


def unused_parameters(model: nn.Module, loss_fn: nn.Module, batch: dict) -> list[str]:
    """Names of trainable parameters that get no gradient from ``loss_fn(**model(**batch))["total"]``.

    Runs one forward on ``batch`` in eval mode (dropout does not change which parameters are
    used; batch-norm statistics stay untouched), with the global RNG and every module's mode
    restored afterwards and without gathering across ranks."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        return []
    modes = {m: m.training for m in model.modules()}
    gather = getattr(loss_fn, "gather", None)
    try:
        if gather is not None:
            loss_fn.gather = False
        model.eval()
        with torch.random.fork_rng(devices=[]):
            _, losses = forward_and_loss(model, loss_fn, **model_inputs(batch))
        total = losses["total"]
        if not total.requires_grad:
            return [n for n, _ in named]
        grads = torch.autograd.grad(total, [p for _, p in named], allow_unused=True)
    finally:
        for m, mode in modes.items():
            m.train(mode)
        if gather is not None:
            loss_fn.gather = gather
    return [n for (n, _), g in zip(named, grads) if g is None]


def exclude_unused_parameters(model: nn.Module, loss_fn: nn.Module, batch: dict) -> list[str]:
    """Freeze (``requires_grad=False``) the parameters :func:`unused_parameters` finds and log
    them grouped by module; returns their names. Frozen parameters are left out of the optimizer
    and of DDP's gradient reduction and keep their initial values in the checkpoints."""
    names = unused_parameters(model, loss_fn, batch)
    if not names:
        return []
    params = dict(model.named_parameters())
    for n in names:
        params[n].requires_grad_(False)
    groups = sorted({".".join(n.split(".")[:2]) if n.count(".") > 1 else n.split(".")[0] for n in names})
    log.info(
        "%d parameter tensors receive no gradient with these loss weights and are not trained: %s",
        len(names),
        ", ".join(groups),
    )
    return names
