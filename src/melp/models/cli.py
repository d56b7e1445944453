"""`melp convert | download | push`: released weights in, melp model folders out, Hub in and out.

Thin wrappers over :mod:`melp.models.convert`, :func:`melp.hub_ids.fetch_snapshot` and
:mod:`melp.models.hub`; user mistakes print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("melp.models")


def _convert(args: argparse.Namespace) -> int:
    import torch

    from melp.models.convert import ECG_FM_LEADS, UnsafeCheckpoint, convert_ecg_fm, convert_melp_encoder

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    try:
        if args.family == "melp-encoder":
            report = convert_melp_encoder(
                args.src,
                args.out,
                config=args.config,
                sample_rate=args.sample_rate or 500,
                n_samples=args.n_samples or 5000,
                name=args.name or "melp-encoder",
                dtype=dtype,
            )
        else:
            report = convert_ecg_fm(
                args.src,
                args.out,
                config=args.config,
                sample_rate=args.sample_rate or 500,
                n_samples=args.n_samples or 2500,
                leads=args.leads or ECG_FM_LEADS,
                normalize=args.normalize,
                seed=args.seed,
                name=args.name or "ecg-fm-encoder",
                dtype=dtype,
            )
    except (FileNotFoundError, ValueError, UnsafeCheckpoint) as err:
        log.error("%s", err)
        return 2
    e = report.melp_config["ecg"]
    print(
        f"{args.out}: {len(report.mapped)} tensors converted, {len(report.dropped)} pretraining-only tensors "
        f"dropped, initialised here: {', '.join(report.initialised) or 'none'}; input {e['in_leads']} leads x "
        f"{e['n_samples']} samples at {e['sample_rate']:g} Hz, {e['normalize']} (details: {args.out}/conversion.json)"
    )
    return 0


def _download(args: argparse.Namespace) -> int:
    from melp.hub_ids import fetch_snapshot

    try:
        path = fetch_snapshot(args.repo_id, revision=args.revision, cache_dir=args.cache_dir)
    except FileNotFoundError as err:
        log.error("%s", err)
        return 2
    print(f"{args.repo_id}: {path}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from melp.models.hub import prepare_upload, push_to_hub

    try:
        if args.prepare_only:
            folder = prepare_upload(
                args.model, args.prepare_only, run_dir=args.run, results=args.results, repo_id=args.repo_id
            )
            print(
                f"prepared the upload of {args.model} in {folder} (README.md is the model card); nothing sent"
            )
            return 0
        url = push_to_hub(
            args.model, args.repo_id, run_dir=args.run, results=args.results, private=args.private
        )
    except (FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 2
    print(f"uploaded {args.model} to {args.repo_id}: {url}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``convert``, ``download`` and ``push`` on the ``melp`` parser."""
    p = sub.add_parser(
        "convert",
        help="convert released weights (MELP_Encoder, ECG-FM) into a melp model folder",
        description="Convert a released checkpoint into a melp model folder (safetensors + config.json + "
        "conversion.json). Every checkpoint key is converted or dropped on purpose (listed in "
        "conversion.json); an unknown key is an error. .pt files are read with torch.load(weights_only=True) only.",
    )
    p.add_argument("family", choices=["melp-encoder", "ecg-fm"], help="layout of the checkpoint")
    p.add_argument(
        "src", help=".safetensors file, or a folder like the Hub repository (model.safetensors, config.json)"
    )
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--config", default=None, help="JSON with the released config's fields (if SRC has none)")
    p.add_argument("--sample-rate", type=float, default=None, help="input rate in Hz (default 500)")
    p.add_argument(
        "--n-samples", type=int, default=None, help="input length (default: 5000 melp-encoder, 2500 ecg-fm)"
    )
    p.add_argument("--name", default=None, help="model name stored in config.json")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="weights as written")
    p.add_argument(
        "--leads",
        nargs=12,
        default=None,
        metavar="LEAD",
        help="ecg-fm: the checkpoint's input lead order (default ECG-FM's: I II III aVR aVL aVF V1 ... V6)",
    )
    p.add_argument(
        "--normalize", choices=["minmax", "zscore"], default="zscore", help="ecg-fm: its input normalisation"
    )
    p.add_argument("--seed", type=int, default=0, help="ecg-fm: seed of the freshly initialised poolers")
    p.set_defaults(func=_convert)

    p = sub.add_parser(
        "download",
        help="fetch a Hugging Face hub repository (a melp model or a text tower) into the local cache",
        description="The explicit download step: afterwards create_model / load_model find the repository "
        "offline in the Hugging Face cache.",
    )
    p.add_argument("repo_id", help="owner/name")
    p.add_argument("--revision", default=None)
    p.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: the user's)")
    p.set_defaults(func=_download)

    p = sub.add_parser(
        "push",
        help="upload a model folder with a generated model card to the Hugging Face Hub",
        description="Writes README.md (architecture, training data and steps, metrics, input contract) next "
        "to the model files and uploads the folder. --prepare-only DIR writes that folder and sends nothing.",
    )
    p.add_argument("model", help="model folder (save_pretrained, melp convert, melp pretrain's best_model)")
    p.add_argument("repo_id", help="owner/name of the Hub repository")
    p.add_argument(
        "--run", default=None, help="the melp pretrain output folder (default: parent of best_model)"
    )
    p.add_argument("--results", nargs="+", default=[], help="result JSON files of evaluation commands")
    p.add_argument("--private", action="store_true")
    p.add_argument("--prepare-only", default=None, metavar="DIR", help="write the upload folder only")
    p.set_defaults(func=_push)
