"""The benchmark tasks of the paper (spec appendix C) and the short names stores use for them.

Class lists live with the reader that produces them (:mod:`melp.data.ptbxl_labels`, the CPSC,
Chapman and CODE-15 readers); this module only gathers them under their benchmark names.
"""

from __future__ import annotations

from melp.data import ptbxl_labels
from melp.data.readers.chapman import CHAPMAN_CLASSES
from melp.data.readers.code15 import CODE_CLASSES
from melp.data.readers.cpsc import ICBEB_CLASSES

__all__ = ["BENCHMARK_TASKS", "TASK_ALIASES", "canonical_task", "resolve_task"]

BENCHMARK_TASKS: dict[str, list[str]] = {
    **{f"ptbxl_{t}": list(c) for t, c in ptbxl_labels.TASKS.items()},
    "icbeb": list(ICBEB_CLASSES),
    "chapman": list(CHAPMAN_CLASSES),
    "code15": list(CODE_CLASSES),
}
"""Benchmark task -> class codes in the benchmark's order (the six of the paper, plus CODE-15)."""

TASK_ALIASES: dict[str, str] = {
    "super_class": "ptbxl_super_class",
    "superclass": "ptbxl_super_class",
    "super": "ptbxl_super_class",
    "sub_class": "ptbxl_sub_class",
    "subclass": "ptbxl_sub_class",
    "sub": "ptbxl_sub_class",
    "form": "ptbxl_form",
    "rhythm": "ptbxl_rhythm",
    "cpsc2018": "icbeb",
    "cpsc": "icbeb",
    "code": "code15",
    "code-15": "code15",
}
"""Other names of the benchmark tasks (the stores' own task names among them)."""


def canonical_task(name: str) -> str:
    """Benchmark name of a task name or alias (``super_class`` -> ``ptbxl_super_class``)."""
    return TASK_ALIASES.get(name, name)


def resolve_task(store, task: str) -> str:
    """The store's own name of ``task`` (accepts benchmark names such as ``ptbxl_super_class``).

    Raises KeyError listing the store's tasks."""
    tasks = store.tasks
    if task in tasks:
        return task
    for name in tasks:
        if canonical_task(name) == canonical_task(task):
            return name
    raise KeyError(
        f"store {store.path} has no task {task!r}; its tasks are {', '.join(sorted(tasks)) or 'none'}"
    )
