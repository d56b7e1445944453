"""Zero-shot class prompts: a data file mapping class codes to report-like phrasings.

The shipped file (``resources/prompts.json``) is ``{code: [phrasing, ...]}`` with several
lower-case phrasings per class, written in the register of machine-statement reports
("sinus rhythm. left ventricular hypertrophy."), because the text tower is trained on such
reports. One flat dictionary serves every task: a code means the same finding in every
dataset that uses it (e.g. ``AFIB`` in PTB-XL, CPSC 2018, Chapman and CODE-15; Chapman's
``AF`` is atrial flutter).

Users may pass their own JSON of the same shape (``--prompts FILE`` on the CLI); a value may
be a single string or a list of strings.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

__all__ = ["load_prompts", "prompts_for"]


def _default_path() -> Path:
    return Path(str(resources.files("melp.eval") / "resources" / "prompts.json"))


def load_prompts(path: str | Path | None = None) -> dict[str, list[str]]:
    """Load a prompt file ``{class code: [phrasing, ...]}``.

    Args:
        path: a JSON file; ``None`` loads the shipped prompts.
    Returns:
        dict mapping each class code to a non-empty list of phrasings (a single string in the
        file becomes a one-element list). Phrasings are stripped; case is kept as written.
    Raises:
        FileNotFoundError / ValueError naming the file and the offending key.
    """
    file = Path(path) if path is not None else _default_path()
    if not file.is_file():
        raise FileNotFoundError(f"prompt file {file} does not exist; pass a JSON {{code: [phrasing, ...]}}")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"prompt file {file} is not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"prompt file {file}: top level must be an object {{code: [phrasing, ...]}}")
    out: dict[str, list[str]] = {}
    for code, value in raw.items():
        phrases = [value] if isinstance(value, str) else value
        if not isinstance(phrases, list) or not phrases or not all(isinstance(p, str) for p in phrases):
            raise ValueError(
                f"prompt file {file}: class {code!r} must map to a string or a non-empty list of strings"
            )
        cleaned = [p.strip() for p in phrases]
        if any(not p for p in cleaned):
            raise ValueError(f"prompt file {file}: class {code!r} has an empty phrasing")
        out[str(code)] = cleaned
    return out


def prompts_for(
    classes: list[str], prompts: dict[str, list[str]] | None = None, task: str | None = None
) -> list[list[str]]:
    """The phrasings of each class, in ``classes`` order.

    A key ``"<task>:<code>"`` (e.g. ``"dx:AF"``) overrides ``"<code>"`` for that task, so that a
    prompt file can serve datasets whose codes clash (Chapman's AF is flutter, the Challenge's AF
    fibrillation). Raises KeyError naming every class that has no prompt.
    """
    table = load_prompts() if prompts is None else prompts
    if task is not None:
        scoped = {c: table[f"{task}:{c}"] for c in classes if f"{task}:{c}" in table}
        table = {**table, **scoped}
    missing = [c for c in classes if c not in table]
    if missing:
        raise KeyError(
            f"no zero-shot prompt for class(es) {missing}; add them to a prompt JSON "
            "({code: [phrasing, ...]}) and pass it with prompts=/--prompts"
        )
    return [list(table[c]) for c in classes]
