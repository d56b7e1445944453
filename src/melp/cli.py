"""`melp <command>`: a thin dispatcher. Each area registers its own sub-commands.

Every area module exposes ``add_commands(subparsers)``; the sub-command's parser sets
``func`` (a callable taking the parsed namespace and returning an exit code or None).
Imports are lazy so ``melp --help`` is fast and one broken area does not hide the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# what a user's mistake raises (missing files, bad stores, options, tasks, model folders): printed
# as one line by `main`; anything else is a bug and keeps its traceback
USER_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    ValueError,
    KeyError,
)

# (module, short description) in help order
_AREAS = [
    ("melp.data.cli", "data: prepare stores from raw datasets"),
    ("melp.models.cli", "models: convert released weights, download, push to the Hub"),
    ("melp.train.cli", "training: cardiology LM stage and MELP pretraining"),
    ("melp.eval.cli", "evaluation: zero-shot, probe, fine-tune, retrieval, generation, embed"),
    ("melp.pipeline", "pipeline: `melp demo`, every stage on the shipped data"),
]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``melp zeroshot: error: argument --n-boot: ...``), like
    every other user error; the full usage stays in ``--help``. Sub-command parsers inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="melp", description="MELP: multi-scale ECG-language pretraining and evaluation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, _ in _AREAS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:  # an optional extra is missing
            logging.getLogger("melp").debug("skipping %s: %s", module_name, err)
            continue
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print(f"melp {args.command}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:  # a user mistake (bad path, store, option, task): one line, no traceback
        if args.verbose:
            raise
        print(
            f"melp {args.command}: error: {_one_line(err)} (run with -v for the traceback)", file=sys.stderr
        )
        return 1
    return int(code or 0)


def _one_line(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(text.split()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
