"""`melp prepare SOURCE --root RAW --out STORE` and `melp verify STORE`.

Every numeric flag is range-checked by argparse and every ``-o KEY=VALUE`` key is checked against
the source's declared options before any file is read; ``melp prepare SOURCE --help`` lists them.
"""

from __future__ import annotations

import argparse
import logging

from melp.cli_args import RawHelpFormatter, int_at_least, nonneg_float, positive_float

log = logging.getLogger(__name__)


def _parse_option(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"-o expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    if not key.strip():
        raise argparse.ArgumentTypeError(f"-o expects KEY=VALUE, got {text!r}")
    return key.strip().replace("-", "_"), value  # typed by the reader's declared options


# store-level switches also accepted as -o KEY=VALUE (older docs used them that way)
_STORE_OPTIONS = ("allow_flat_leads", "allow_missing_leads")


def add_commands(subparsers) -> None:
    """Register ``prepare`` (one sub-command per source) and ``verify`` on the ``melp`` parser."""
    from melp.data.readers import available_readers

    readers = available_readers()
    p = subparsers.add_parser(
        "prepare",
        help="prepare a store (signals + manifest) from a raw dataset",
        description="Read every record of a raw dataset once, resample/crop it and write a store: "
        "signals.npy (float16 memory map), manifest.parquet, rejects.parquet, meta.json. "
        "Resumable (rerun after an interruption) and idempotent. `melp prepare SOURCE --help` lists "
        "the options of one source.",
        epilog="sources:\n" + "\n".join(f"  {n:<10} {c.description}" for n, c in readers.items()),
        formatter_class=RawHelpFormatter,
    )
    sources = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    for name, cls in readers.items():
        q = sources.add_parser(
            name,
            help=cls.description.replace("%", "%%"),
            description=f"Prepare a store from {cls.description}.",
            epilog=f"source options (-o KEY=VALUE):\n{cls.options_help()}",
            formatter_class=RawHelpFormatter,
        )
        _prepare_arguments(q)
        q.set_defaults(func=_run_prepare)

    v = subparsers.add_parser(
        "verify",
        help="check every checksum of a store (signals, manifest, rejects)",
        description="Recompute the SHA-256 of every chunk of signals.npy and of the tables, and compare "
        "with meta.json; names the records of any damaged chunk. Exit code 0 = intact, 1 = damaged.",
    )
    v.add_argument("store", metavar="STORE", help="store folder written by `melp prepare`")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.set_defaults(func=_run_verify)


def _prepare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, help="folder of the raw dataset, as downloaded")
    p.add_argument("--out", required=True, help="output store folder")
    p.add_argument(
        "--rate", type=positive_float, default=100, help="target sampling rate in Hz (default 100)"
    )
    p.add_argument("--seconds", type=positive_float, default=10, help="target length in seconds (default 10)")
    p.add_argument("--workers", type=int_at_least(0), default=0, help="worker processes (0 = in-process)")
    p.add_argument("--overwrite", action="store_true", help="replace a store prepared with other settings")
    p.add_argument(
        "--allow-missing-leads",
        action="store_true",
        help="zero-fill absent leads instead of rejecting records with fewer than 12 leads",
    )
    p.add_argument(
        "--allow-flat-leads",
        action="store_true",
        help="keep records with a constant (disconnected) lead; it acts like a masked lead. "
        "Default: reject them (a fully flat record is always rejected)",
    )
    p.add_argument(
        "--min-seconds",
        type=nonneg_float,
        default=1.0,
        help="reject records with less signal than this, in seconds (default 1; 0 keeps every length)",
    )
    p.add_argument(
        "--chunk-size", type=int_at_least(1), default=256, help="records per resumable chunk (default 256)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--option",
        "-o",
        action="append",
        type=_parse_option,
        default=[],
        metavar="KEY=VALUE",
        help="source option (repeatable); the list is below",
    )


def _run_prepare(args: argparse.Namespace) -> int:
    """Errors (bad options, stores in the way, missing tables) propagate to ``melp.cli.main``, which
    prints them as one line like every other command's."""
    from melp.data.readers import get_reader
    from melp.data.readers.base import Option
    from melp.data.store import prepare

    flags = {"allow_missing_leads": args.allow_missing_leads, "allow_flat_leads": args.allow_flat_leads}
    keys = [k for k, _ in args.option]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"option(s) {', '.join(twice)} given twice with -o; give each once")
    extra = dict(args.option)
    for key in _STORE_OPTIONS:  # typed like every option: "ture" is an error, not false
        if key in extra:
            value = Option(bool, False, "").coerce(key, extra.pop(key), "prepare")
            flags[key] = flags[key] or value
    get_reader(args.source).check_options(extra)  # before any file is read
    counts = prepare(
        args.source,
        args.root,
        args.out,
        rate=args.rate,
        seconds=args.seconds,
        workers=args.workers,
        chunk_size=args.chunk_size,
        overwrite=args.overwrite,
        min_seconds=args.min_seconds,
        progress=not args.no_progress,
        **flags,
        **extra,
    )
    print(
        f"{args.out}: kept {counts['kept']}, rejected {counts['rejected']}, missing files {counts['missing']}"
    )
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    from melp.data.store import verify_store

    res = verify_store(args.store, progress=not args.no_progress)  # StoreError: one line (melp.cli)
    if res["ok"]:
        print(f"{args.store}: intact ({', '.join(res['files'])} match meta.json)")
        return 0
    damaged = [name for name, ok in res["files"].items() if not ok]
    print(f"{args.store}: DAMAGED: {', '.join(damaged)} do not match meta.json")
    if res["bad_records"]:
        shown = ", ".join(res["bad_records"][:10])
        more = f" (+{len(res['bad_records']) - 10} more)" if len(res["bad_records"]) > 10 else ""
        print(f"  damaged records (chunks {res['bad_chunks']}): {shown}{more}")
    print("  rebuild it with `melp prepare ... --overwrite`")
    return 1
