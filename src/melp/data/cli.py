"""`melp prepare SOURCE --root RAW --out STORE`: build a store from a raw dataset folder."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def _sources_help() -> str:
    from melp.data.readers import available_readers

    lines = ["sources:"]
    for name, cls in available_readers().items():
        lines.append(f"  {name:<10} {cls.description}")
    return "\n".join(lines)


def _parse_option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    low = value.lower()
    parsed: object = value
    if low in ("true", "false"):
        parsed = low == "true"
    else:
        for cast in (int, float):
            try:
                parsed = cast(value)
                break
            except ValueError:
                pass
    return key.strip().replace("-", "_"), parsed


def add_commands(subparsers) -> None:
    """Register ``prepare`` on the ``melp`` sub-command parser."""
    p = subparsers.add_parser(
        "prepare",
        help="prepare a store (signals + manifest) from a raw dataset",
        description="Read every record of a raw dataset once, resample/crop it and write a store: "
        "signals.npy (float16 memory map), manifest.parquet, rejects.parquet, meta.json. "
        "Resumable (rerun after an interruption) and idempotent.",
        epilog=_sources_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="dataset reader (see the list below)")
    p.add_argument("--root", required=True, help="folder of the raw dataset, as downloaded")
    p.add_argument("--out", required=True, help="output store folder")
    p.add_argument("--rate", type=float, default=100, help="target sampling rate in Hz (default 100)")
    p.add_argument("--seconds", type=float, default=10, help="target length in seconds (default 10)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (0 = in-process)")
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
    p.add_argument("--chunk-size", type=int, default=None, help="records per resumable chunk (default 256)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--option",
        "-o",
        action="append",
        type=_parse_option,
        default=[],
        metavar="KEY=VALUE",
        help="source-specific option, e.g. -o records=500 for ptbxl (repeatable)",
    )
    p.set_defaults(func=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from melp.data.readers import available_readers
    from melp.data.store import StoreError, prepare

    if args.source not in available_readers():
        log.error("unknown source %r; available: %s", args.source, ", ".join(available_readers()))
        return 2
    extra = dict(args.option)
    if args.chunk_size is not None:
        extra["chunk_size"] = args.chunk_size
    try:
        counts = prepare(
            args.source,
            args.root,
            args.out,
            rate=args.rate,
            seconds=args.seconds,
            workers=args.workers,
            overwrite=args.overwrite,
            allow_missing_leads=args.allow_missing_leads,
            allow_flat_leads=args.allow_flat_leads or bool(extra.pop("allow_flat_leads", False)),
            progress=not args.no_progress,
            **extra,
        )
    except (StoreError, FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 1
    print(
        f"{args.out}: kept {counts['kept']}, rejected {counts['rejected']}, missing files {counts['missing']}"
    )
    return 0
