"""``melp pretrain-text`` (cardiology masked-LM stage) and ``melp pretrain`` (MELP, Lightning)."""

from __future__ import annotations

import argparse
import logging

from melp.cli_args import HelpFormatter, int_at_least, positive_float, unit_fraction

log = logging.getLogger("melp.train")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``pretrain-text`` and ``pretrain`` on the ``melp`` sub-command parser."""
    p = sub.add_parser(
        "pretrain-text",
        help="masked-LM domain adaptation of a BERT-family text encoder on report text",
        description="Masked-LM adaptation on reports; writes an HF folder usable as text.name_or_path "
        "and DIR/mlm_metrics.json with held-out perplexity before/after (fixed seeded masking).",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--data", "--corpus", dest="corpus", required=True,
        help="the reports: a store folder, a CSV (with --column) or a text file (--corpus: the older name)",
    )  # fmt: skip
    p.add_argument("--column", default="report", help="text column of a CSV/store")
    p.add_argument(
        "--text-model", "--init", dest="init", default="minilm",
        help="the text model to start from: 'minilm', an HF folder / hub id, or a BertConfig .json (scratch); "
        "--init: the older name",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="output folder (HF model + tokenizer)")
    p.add_argument("--steps", type=int_at_least(1), default=500, help="optimizer steps")
    p.add_argument("--lr", type=positive_float, default=5e-5, help="learning rate")
    p.add_argument("--batch-size", type=int_at_least(1), default=32, help="reports per step")
    p.add_argument("--mlm-prob", type=unit_fraction, default=0.15, help="share of tokens masked")
    p.add_argument("--train-tokenizer", type=int_at_least(0), default=0, metavar="VOCAB_SIZE",
                   help="train a WordPiece vocabulary of this size first (scratch models; 0 = no)")  # fmt: skip
    p.add_argument(
        "--max-heldout", type=int_at_least(1), default=500, help="held-out reports used for perplexity"
    )
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=_pretrain_text)

    q = sub.add_parser(
        "pretrain",
        help="MELP pretraining (Lightning): CLIP + captioning + beat alignment, zero-shot validation",
        description="Pretrain MELP from a named config (melp-tiny, melp-paper) or a YAML/JSON file.",
    )
    q.add_argument("--config", required=True, help="config name (melp-tiny, melp-paper) or YAML/JSON file")
    q.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config values, e.g. --set optim.lr=1e-4 trainer.max_epochs=3",
    )
    q.add_argument("--out", default=None, help="output folder (the same as --set out=DIR)")
    q.add_argument("--resume", default=None, help="checkpoint path, or 'auto' (OUT/checkpoints/last.ckpt)")
    q.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    q.set_defaults(func=_pretrain)


def _pretrain_text(args: argparse.Namespace) -> int:
    from melp.text.mlm import pretrain_text

    res = pretrain_text(
        args.corpus,
        args.init,
        args.out,
        column=args.column,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        mlm_prob=args.mlm_prob,
        train_tokenizer=args.train_tokenizer,
        seed=args.seed,
        max_heldout=args.max_heldout,
    )
    print(
        f"held-out MLM perplexity {res.perplexity_before:.3f} -> {res.perplexity_after:.3f} "
        f"({res.n_train} train / {res.n_heldout} held-out reports, {res.seconds:.0f} s); saved to {args.out}"
    )
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    import yaml

    from melp.train.config import ConfigError, apply_overrides, load_config, to_dict

    try:
        cfg = apply_overrides(load_config(args.config), args.overrides)
    except ConfigError as err:
        log.error("%s", err)
        return 2
    if args.out is not None:
        cfg.out = args.out
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    from melp.train.run import NonFiniteLossError, UnsafeCheckpointError, pretrain

    try:
        summary = pretrain(cfg, resume=args.resume)
    except NonFiniteLossError as err:
        log.error("%s", err)
        return 3
    except (ConfigError, UnsafeCheckpointError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2
    if summary["rank"] == 0:
        print(f"best val/mean_auroc {summary['best_score']}; best model exported to {summary['best_model']}")
    return 0
