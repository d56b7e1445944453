"""AdamW parameter groups and the per-step learning-rate schedule (warmup + cosine)."""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(
    model: nn.Module, weight_decay: float, text_lr_mult: float = 1.0, text_prefix: str | None = None
) -> list[dict]:
    """Split trainable parameters into decay / no-decay groups.

    No decay for the names in ``model.no_weight_decay()`` (biases, norms, query tokens, logit scale)
    when the model provides it, else for every parameter with fewer than 2 dimensions.
    With ``text_prefix`` and ``text_lr_mult != 1``, parameters whose name starts with the prefix get
    a separate group whose ``lr_mult`` is ``text_lr_mult`` (applied by :func:`warmup_cosine`).
    Frozen parameters (``requires_grad=False``) are left out.
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else None
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = (name in skip) if skip is not None else p.ndim < 2
        is_text = bool(text_prefix) and text_lr_mult != 1.0 and name.startswith(text_prefix)
        groups.setdefault((no_decay, is_text), []).append(p)
    out = []
    for (no_decay, is_text), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_mult": text_lr_mult if is_text else 1.0,
            }
        )
    return out


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based).

    Linear warmup from 1/warmup to 1 over ``warmup_steps`` steps, then cosine decay from 1 to
    ``min_ratio`` at ``total_steps``; constant ``min_ratio`` after that.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR (step it once per optimizer step) applying :func:`lr_factor` times each group's
    ``lr_mult``."""
    mults = [g.get("lr_mult", 1.0) for g in optimizer.param_groups]
    fns = [(lambda s, m=m: m * lr_factor(s, total_steps, warmup_steps, min_ratio)) for m in mults]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fns)


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    text_lr_mult: float = 1.0,
    text_prefix: str | None = None,
    fused: bool | None = True,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`.

    ``fused=True`` (default): the fused kernel when every parameter is a CPU or CUDA float tensor
    (one kernel for all parameters; on CUDA it reads the step counters on the device, while the
    default implementations call ``.item()`` on them every step). ``None``: torch's default."""
    groups = param_groups(model, weight_decay, text_lr_mult, text_prefix)
    params = [p for g in groups for p in g["params"]]
    ok = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=True if fused and ok else None)
