"""Count host-device synchronisations of a piece of code with the torch profiler.

Used by ``benchmarks/bench_step_syncs.py`` and ``tests/test_step.py``. A sync is a profiler event
``aten::_local_scalar_dense`` (what ``.item()``, ``float(t)``, ``bool(t)`` dispatch to) or
``aten::nonzero`` (a data-dependent shape, e.g. boolean-mask indexing). Counting events is
deterministic, unlike timing.

One CPU-only case is counted apart: the CPU kernel of the fused Adam/AdamW reads each parameter's
step counter with ``item()`` inside ``aten::_fused_adamw_``. Those are host reads of host memory;
the CUDA kernel reads the counters on the device and makes no ``item()`` call.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field

SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero")
CPU_OPTIMIZER_KERNELS = ("aten::_fused_adamw_", "aten::_fused_adam_")


@dataclass
class SyncCount:
    """Profiler counts of one call."""

    syncs: int  # host-device syncs (see the module docstring)
    by_op: dict[str, int] = field(default_factory=dict)  # syncs per op name, plus aten::item calls
    cpu_optimizer_reads: int = 0  # item() inside the CPU fused-optimizer kernel (not syncs)
    ops: int = 0  # all aten:: events
    where: list[str] = field(default_factory=list)  # the parent op of each sync (for debugging)


def _ancestors(event) -> list[str]:
    out, parent = [], event.cpu_parent
    while parent is not None:
        out.append(parent.name)
        parent = parent.cpu_parent
    return out


def classify(events) -> SyncCount:
    """:class:`SyncCount` of a profiler's ``events()``."""
    by_op: collections.Counter = collections.Counter()
    cpu_reads = ops = 0
    where = []
    for e in events:
        if not e.name.startswith("aten::"):
            continue
        ops += 1
        if e.name not in (*SYNC_OPS, "aten::item"):
            continue
        parents = _ancestors(e)
        if e.device_type.name == "CPU" and any(p in CPU_OPTIMIZER_KERNELS for p in parents):
            cpu_reads += e.name == "aten::_local_scalar_dense"
            continue
        by_op[e.name] += 1
        if e.name in SYNC_OPS:
            where.append(next((p for p in parents if p != "aten::item"), "<top level>"))
    return SyncCount(
        syncs=sum(by_op[k] for k in SYNC_OPS),
        by_op={k: by_op[k] for k in ("aten::item", *SYNC_OPS)},
        cpu_optimizer_reads=cpu_reads,
        ops=ops,
        where=where,
    )


def count_syncs(fn: Callable[[], object]) -> SyncCount:
    """Run ``fn()`` once under the CPU profiler and classify its events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return classify(prof.events())
