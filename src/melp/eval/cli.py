"""`melp zeroshot | probe | finetune | retrieve | generate | identify | embed | demo`.

Thin wrappers: parse, load the model and store, call the library functions, print a summary.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from melp.cli_args import (
    device,
    int_at_least,
    nonneg_float,
    open_fraction,
    output_file,
    output_folder,
    positive_float,
    unit_fraction,
)

log = logging.getLogger("melp.eval")


def _common(p: argparse.ArgumentParser, out_required: bool = True, out_type=output_folder) -> None:
    p.add_argument("--model", required=True, help="saved model folder (save_pretrained) or hub id")
    p.add_argument("--data", required=True, help="store folder written by `melp prepare`")
    p.add_argument("--out", required=out_required, type=out_type, help="output folder")
    p.add_argument("--batch-size", type=int_at_least(1), default=128)
    p.add_argument(
        "--device", type=device, default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)"
    )
    p.add_argument(
        "--normalize",
        default=None,
        choices=["minmax", "zscore"],
        help="per-record normalisation (default: the one the model was trained with, from its config)",
    )


def _portion(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--split",
        choices=["train", "val", "test"],
        default=None,
        help="evaluate this split (default: test if the store has one, else val)",
    )
    g.add_argument("--folds", type=int, nargs="+", default=None, help="evaluate these folds (e.g. 9)")


def _fold_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="task name in the store (e.g. super_class, icbeb)")
    p.add_argument(
        "--fractions", type=unit_fraction, nargs="+", default=None, help="label fractions, e.g. 0.01 0.1 1"
    )
    p.add_argument("--train-folds", type=int, nargs="+", default=None)
    p.add_argument("--val-folds", type=int, nargs="+", default=None)
    p.add_argument("--test-folds", type=int, nargs="+", default=None)
    p.add_argument(
        "--val-fraction",
        type=open_fraction,
        default=0.1,
        help="without val folds: share of training patients held out for early stopping",
    )
    p.add_argument("--n-boot", type=int_at_least(0), default=1000)
    p.add_argument("--seed", type=int, default=42)


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    import melp
    from melp.data.store import ECGStore
    from melp.eval.features import pick_device

    store = ECGStore(args.data)
    model = melp.load_model(args.model).to(pick_device(args.device)).eval()
    return model, store


def _rows(args: argparse.Namespace, store: Any):
    from melp.eval.splits import portion_rows

    return portion_rows(store, split=args.split, folds=args.folds)


def _zeroshot(args: argparse.Namespace) -> int:
    from melp.eval.zeroshot import run_zeroshot

    model, store = _load(args)
    rows = _rows(args, store)
    _check_zeroshot_tasks(store, args.task, args.prompts)  # every task and prompt before any output
    for task in args.task:
        res = run_zeroshot(
            model,
            store,
            task,
            rows,
            out=args.out,
            prompts=args.prompts,
            n_boot=args.n_boot,
            seed=args.seed,
            batch_size=args.batch_size,
            normalize=args.normalize,
        )
        ci = res.get("ci", {}).get("auroc", {})
        print(
            f"zero-shot {res['task']}: macro AUROC {res['macro_auroc']:.4f} "
            f"[{ci.get('lo', float('nan')):.4f}, {ci.get('hi', float('nan')):.4f}]  "
            f"max-F1 {res['macro_f1']:.4f}  n={res['n']}"
        )
    return 0


def _check_zeroshot_tasks(store: Any, tasks: list[str], prompts: str | None) -> None:
    """KeyError/ValueError (one line) for a task the store lacks or a class without a prompt, raised
    before the first task writes its results (no partial outputs)."""
    from melp.data.tasks import resolve_task
    from melp.eval.prompts import load_prompts, prompts_for

    table = load_prompts(prompts)
    for task in tasks:
        name = resolve_task(store, task)
        prompts_for(store.tasks[name], table, name)


def _splits(args: argparse.Namespace, store: Any):
    from melp.eval.splits import choose_splits

    splits = choose_splits(
        store, args.train_folds, args.val_folds, args.test_folds, args.val_fraction, args.seed
    )
    print(
        f"splits: {splits.description} (train {len(splits.train)}, val {len(splits.val)}, "
        f"test {len(splits.test)})"
    )
    return splits


def _random_twin(model, seed: int):
    """A randomly initialised model of ``model``'s architecture, on its device, in eval mode (the
    ``--random-init`` baselines); the initialisation is drawn from ``seed`` (reproducible) without
    touching the global RNG."""
    import torch

    import melp

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        twin = melp.create_model(dict(model.config))
    return twin.to(next(model.parameters()).device).eval()


def _probe(args: argparse.Namespace) -> int:
    from melp.eval.probe import HeadConfig, run_probe

    model, store = _load(args)
    if args.random_init:
        model = _random_twin(model, args.seed)
    cfg = HeadConfig(
        lr=args.lr, weight_decay=args.weight_decay, epochs=args.epochs, patience=args.patience, seed=args.seed
    )
    res = run_probe(
        model,
        store,
        args.task,
        _splits(args, store),
        tuple(args.fractions or (0.01, 0.1, 1.0)),
        out=args.out,
        config=cfg,
        n_boot=args.n_boot,
        batch_size=args.batch_size,
        normalize=args.normalize,
        name="probe_random" if args.random_init else "probe",
    )
    for frac, r in res["fractions"].items():
        print(
            f"probe {res['task']} {float(frac) * 100:g}% (n={r['n_train']}): test macro AUROC "
            f"{r['macro_auroc']:.4f} (best epoch {r['best_epoch']})"
        )
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from melp.eval.finetune import FinetuneConfig, run_finetune

    model, store = _load(args)
    if args.random_init:  # supervised training from scratch: the ceiling of the architecture
        model = _random_twin(model, args.seed)
    cfg = FinetuneConfig(
        lr_head=args.lr,
        lr_encoder=args.lr_encoder,
        weight_decay=args.weight_decay,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.patience,
        seed=args.seed,
        normalize=args.normalize,
    )
    res = run_finetune(
        model,
        store,
        args.task,
        _splits(args, store),
        tuple(args.fractions or (1.0,)),
        out=args.out,
        config=cfg,
        n_boot=args.n_boot,
        name="finetune_random" if args.random_init else "finetune",
    )
    for frac, r in res["fractions"].items():
        print(
            f"{res['method']} {res['task']} {float(frac) * 100:g}%: test macro AUROC {r['macro_auroc']:.4f}"
        )
    return 0


def _retrieve(args: argparse.Namespace) -> int:
    from melp.eval.retrieval import run_retrieval

    model, store = _load(args)
    res = run_retrieval(
        model, store, _rows(args, store), out=args.out, batch_size=args.batch_size, normalize=args.normalize
    )
    for key in ("ecg_to_report", "report_to_ecg"):
        r = res[key]
        print(
            f"{key}: R@1 {r['R@1']:.3f} R@5 {r['R@5']:.3f} R@10 {r['R@10']:.3f} median rank {r['median_rank']:g}"
        )
    return 0


def _generate(args: argparse.Namespace) -> int:
    from melp.eval.generation import run_generation

    model, store = _load(args)
    rows = _rows(args, store)
    if args.limit:
        rows = rows[: args.limit]
    res = run_generation(
        model,
        store,
        rows,
        out=args.out,
        strategy=args.strategy,
        max_length=args.max_length,
        batch_size=args.batch_size,
        normalize=args.normalize,
    )
    print(
        f"generation ({args.strategy}): BLEU-4 {res['bleu4']:.2f}  ROUGE-L {res['rougeL']:.3f}  n={res['n']}"
    )
    for ex in res["examples"][:3]:
        print(f"  true: {ex['report']}\n  gen:  {ex['generated']}")
    return 0


def _identify(args: argparse.Namespace) -> int:
    from melp.eval.retrieval import patient_identification

    model, store = _load(args)
    import numpy as np

    rows = _rows(args, store) if (args.split or args.folds) else np.arange(len(store))
    res = patient_identification(
        model, store, rows, out=args.out, batch_size=args.batch_size, normalize=args.normalize
    )
    print(
        f"patient identification: top-1 {res['R@1']:.3f} top-5 {res['R@5']:.3f} "
        f"({res['n_probes']} probes, {res['n_gallery']} gallery)"
    )
    return 0


def _embed(args: argparse.Namespace) -> int:
    from melp.eval.embed import check_embeddings_path, embed_store, save_embeddings

    check_embeddings_path(args.out)  # before any work
    model, store = _load(args)
    rows = _rows(args, store) if (args.split or args.folds) else None
    emb = embed_store(model, store, rows, batch_size=args.batch_size, normalize=args.normalize)
    path = save_embeddings(emb, args.out)
    print(
        f"wrote {len(emb['id'])} embeddings (rhythm {emb['rhythm'].shape[1:]}, beats {emb['beats'].shape[1:]}, "
        f"probe {emb['probe'].shape[1:]}) to {path}"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from melp.eval.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        out=args.out, root=args.root, val_fold=args.val_fold, fast=args.fast, workers=args.workers
    )
    run_demo(cfg)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the evaluation sub-commands on the ``melp`` parser."""
    p = sub.add_parser("zeroshot", help="zero-shot classification with class prompts")
    _common(p)
    _portion(p)
    p.add_argument("--task", nargs="+", required=True, help="task name(s) in the store")
    p.add_argument("--prompts", default=None, help="prompt JSON {code: [phrasing, ...]} (default: shipped)")
    p.add_argument(
        "--n-boot",
        type=int_at_least(0),
        default=1000,
        help="bootstrap resamples for 95%% intervals (0 = off)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_zeroshot)

    p = sub.add_parser("probe", help="linear probe on the frozen encoder (1/10/100%% labels)")
    _common(p)
    _fold_options(p)
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--weight-decay", type=nonneg_float, default=1e-4)
    p.add_argument("--epochs", type=int_at_least(1), default=100)
    p.add_argument("--patience", type=int_at_least(1), default=5)
    p.add_argument("--random-init", action="store_true", help="baseline: same architecture, random weights")
    p.set_defaults(func=_probe)

    p = sub.add_parser("finetune", help="full fine-tuning (encoder unfrozen) with a linear head")
    _common(p)
    _fold_options(p)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="head learning rate")
    p.add_argument("--lr-encoder", type=positive_float, default=1e-4)
    p.add_argument("--weight-decay", type=nonneg_float, default=1e-4)
    p.add_argument("--epochs", type=int_at_least(1), default=20)
    p.add_argument("--patience", type=int_at_least(1), default=3)
    p.add_argument(
        "--random-init",
        action="store_true",
        help="baseline: train the same architecture from random weights (fully supervised)",
    )
    p.set_defaults(func=_finetune, batch_size=64)

    p = sub.add_parser("retrieve", help="ECG<->report retrieval: recall@1/5/10, median rank")
    _common(p)
    _portion(p)
    p.set_defaults(func=_retrieve)

    p = sub.add_parser("generate", help="generate reports; BLEU-4 and ROUGE-L against the true reports")
    _common(p)
    _portion(p)
    p.add_argument("--strategy", default="beam", choices=["beam", "greedy", "top_k", "top_p"])
    p.add_argument("--max-length", type=int_at_least(3), default=64)
    p.add_argument("--limit", type=int_at_least(1), default=None, help="only the first N records")
    p.set_defaults(func=_generate, batch_size=32)

    p = sub.add_parser("identify", help="patient identification with rhythm embeddings (top-1/5 recall)")
    _common(p)
    _portion(p)
    p.set_defaults(func=_identify)

    p = sub.add_parser("embed", help="export rhythm/beat/probe embeddings to .parquet or .npy")
    _common(p, out_type=output_file(".parquet", ".npy"))
    _portion(p)
    p.set_defaults(func=_embed)

    p = sub.add_parser("demo", help="the whole pipeline on the shipped PTB-XL mini, offline, on CPU")
    p.add_argument("--out", default="melp-demo", help="output folder (default ./melp-demo)")
    p.add_argument("--root", default=None, help="another PTB-XL root (default: the repo's data/ptbxl-mini)")
    p.add_argument("--val-fold", type=int, default=9, help="fold used for evaluation (default 9)")
    p.add_argument("--fast", action="store_true", help="tiny sizes and few steps (smoke test, ~1 minute)")
    p.add_argument("--workers", type=int_at_least(0), default=2, help="processes for `prepare`")
    p.set_defaults(func=_demo)
