"""`melp zeroshot | probe | finetune | predict | retrieve | generate | identify | embed | benchmark`.

Thin wrappers: parse, load the model and store, call the library functions, print a summary.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from melp.cli_args import (
    HelpFormatter,
    device,
    int_at_least,
    lead_list,
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
    p.add_argument("--batch-size", type=int_at_least(1), default=128, help="records per forward pass")
    p.add_argument(
        "--device", type=device, default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)"
    )
    p.add_argument(
        "--normalize",
        default=None,
        choices=["minmax", "zscore"],
        help="per-record normalisation (default: the model's own, config ecg.normalize)",
    )


def _leads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--leads",
        type=lead_list,
        default=None,
        help="use only these leads, e.g. I,II,V2 (the others are masked as random lead masking does in "
        "training); default: all 12",
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


def _save_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--save",
        default=None,
        metavar="DIR",
        help="keep the classifier of the largest fraction (encoder, head, class names, per-class "
        "thresholds at max F1 on the validation portion) for `melp predict --model DIR`",
    )


def _fold_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task", nargs="+", required=True, help="task name(s) in the store (e.g. super_class icbeb)"
    )
    p.add_argument(
        "--fractions",
        type=unit_fraction,
        nargs="+",
        default=None,
        help="label fractions in (0, 1], e.g. 0.01 0.1 1",
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
    p.add_argument("--n-boot", type=int_at_least(0), default=1000, help="bootstrap resamples (0 = off)")
    p.add_argument(
        "--seed", type=int, default=42, help="seed of the label draws, the validation split and the head"
    )


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    import melp
    from melp.data.store import ECGStore
    from melp.eval.features import pick_device

    store = ECGStore(args.data)
    model = melp.load_model(args.model).to(pick_device(args.device)).eval()
    own = model.config["ecg"]["normalize"]
    if args.normalize is None:
        args.normalize = own
    elif args.normalize != own:
        log.warning("--normalize %s differs from the model's own %s normalisation", args.normalize, own)
    return model, store


def _text_missing(model: Any, args: argparse.Namespace) -> bool:
    """Log one line and return True when ``model`` has no text tower (encoder-only)."""
    if model.has_text:
        return False
    log.error(
        "melp %s needs a text tower, but %s is encoder-only (embed, probe, finetune, predict and identify "
        "work); give it one by pretraining with model.init=%s (docs/model.md)",
        args.command,
        args.model,
        args.model,
    )
    return True


def _rows(args: argparse.Namespace, store: Any):
    from melp.eval.splits import portion_rows

    return portion_rows(store, split=args.split, folds=args.folds)


def _zeroshot(args: argparse.Namespace) -> int:
    from melp.eval.zeroshot import run_zeroshot

    model, store = _load(args)
    if _text_missing(model, args):
        return 2
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
            leads=args.leads,
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


def _save_dir(args: argparse.Namespace, task: str) -> str | None:
    """``--save DIR`` for one task (``DIR/<task>`` when several tasks are evaluated)."""
    if not args.save:
        return None
    return args.save if len(args.task) == 1 else str(Path(args.save) / task)


def _probe(args: argparse.Namespace) -> int:
    from melp.eval.probe import HeadConfig, run_probe

    model, store = _load(args)
    if args.random_init:
        model = _random_twin(model, args.seed)
    cfg = HeadConfig(
        lr=args.lr, weight_decay=args.weight_decay, epochs=args.epochs, patience=args.patience, seed=args.seed
    )
    splits = _splits(args, store)
    for task in args.task:
        res = run_probe(
            model, store, task, splits, tuple(args.fractions or (0.01, 0.1, 1.0)), out=args.out, config=cfg,
            n_boot=args.n_boot, batch_size=args.batch_size, normalize=args.normalize, leads=args.leads,
            name="probe_random" if args.random_init else "probe", save=_save_dir(args, task),
        )  # fmt: skip
        for frac, r in res["fractions"].items():
            print(
                f"probe {res['task']} {float(frac) * 100:g}% (n={r['n_train']}): test macro AUROC "
                f"{r['macro_auroc']:.4f} (best epoch {r['best_epoch']})"
            )
        _print_saved(_save_dir(args, task), res)
    return 0


def _print_saved(save: str | None, res: dict) -> None:
    if save:
        frac = max(float(f) for f in res["fractions"])
        print(f"saved the {frac * 100:g}% classifier to {save} (use: melp predict --model {save} ...)")


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
    splits = _splits(args, store)
    for task in args.task:
        res = run_finetune(
            model, store, task, splits, tuple(args.fractions or (1.0,)), out=args.out, config=cfg,
            n_boot=args.n_boot, name="finetune_random" if args.random_init else "finetune",
            save=_save_dir(args, task),
        )  # fmt: skip
        for frac, r in res["fractions"].items():
            print(
                f"{res['method']} {res['task']} {float(frac) * 100:g}%: test macro AUROC {r['macro_auroc']:.4f}"
            )
        _print_saved(_save_dir(args, task), res)
    return 0


def _predict(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from melp.eval.classifier import load_classifier, predict_record, predict_store
    from melp.eval.features import pick_device

    clf = load_classifier(args.model, device=str(pick_device(args.device)))
    if args.data:
        from melp.data.store import ECGStore

        store = ECGStore(args.data)
        rows = _rows(args, store) if (args.split or args.folds) else np.arange(len(store))
        frame = predict_store(clf, store, rows, batch_size=args.batch_size, leads=args.leads)
    else:
        frame = predict_record(
            clf, args.record, leads=args.npy_leads, rate=args.npy_rate, use_leads=args.leads
        )
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False, float_format="%.5f")
    with pd.option_context("display.width", 120):
        if len(frame) == 1:
            print(f"{frame['id'][0]} ({clf.info.get('task')}, {clf.info.get('method')}):")
            for k, c in enumerate(clf.classes):
                thr = clf.thresholds[k]
                pred = frame[f"pred_{c}"][0]
                mark = "n/a (no threshold)" if pd.isna(pred) else ("POSITIVE" if pred else "-")
                thr_s = "  -  " if thr is None else f"{thr:.3f}"
                print(f"  {c:<12} p={frame[f'p_{c}'][0]:.3f}  threshold {thr_s}  {mark}")
        else:
            print(f"{len(frame)} records scored ({clf.info.get('task')}); predicted positives per class:")
            for c in clf.classes:
                print(
                    f"  {c:<12} {int(frame[f'pred_{c}'].fillna(0).sum()):>6}  mean p={frame[f'p_{c}'].mean():.3f}"
                )
    if args.out:
        print(f"wrote {len(frame)} rows to {args.out}")
    return 0


def _retrieve(args: argparse.Namespace) -> int:
    from melp.eval.retrieval import run_retrieval

    model, store = _load(args)
    if _text_missing(model, args):
        return 2
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
    from melp.models.generation import MAX_LENGTH

    model, store = _load(args)
    if _text_missing(model, args):
        return 2
    rows = _rows(args, store)
    if args.limit:
        rows = rows[: args.limit]
    res = run_generation(
        model,
        store,
        rows,
        out=args.out,
        strategy=args.strategy,
        max_length=args.max_length or MAX_LENGTH,
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
    emb = embed_store(
        model, store, rows, batch_size=args.batch_size, normalize=args.normalize, leads=args.leads
    )
    path = save_embeddings(emb, args.out)
    print(
        f"wrote {len(emb['id'])} embeddings (rhythm {emb['rhythm'].shape[1:]}, beats {emb['beats'].shape[1:]}, "
        f"probe {emb['probe'].shape[1:]}) to {path}"
    )
    return 0


_FMT = HelpFormatter

# command -> (one-line help, description: what it does and what it writes)
_COMMANDS = {
    "zeroshot": ("zero-shot classification with class prompts",
                 "Cosine scores of the ECG latents against prompt-ensemble class embeddings. Writes, per task, "
                 "OUT/zeroshot_<task>.json (macro AUROC, max-F1, accuracy, bootstrap CIs), _per_class.csv, "
                 "_scores.csv and _roc.png."),
    "probe": ("linear probe on the frozen encoder (1/10/100%% labels)",
              "A linear head on the frozen probe embedding, early-stopped on the validation AUROC. Writes, per "
              "task and fraction, OUT/probe_<task>_<pct>pct.json/.csv/_roc.png and OUT/probe_<task>.json."),
    "finetune": ("full fine-tuning (encoder unfrozen) with a linear head",
                 "Writes, per task and fraction, OUT/finetune_<task>_<pct>pct.json/.csv/_roc.png and "
                 "OUT/finetune_<task>.json."),
    "predict": ("score a store or one raw record with a classifier saved by probe/finetune --save",
                "Per-class probabilities and decisions (thresholds at max F1 on the validation portion of the "
                "saving run). A single record may have any lead order and rate: it goes through the model's own "
                "preprocessing (reorder, resample, crop/pad, normalise). Writes --out (CSV) when given."),
    "retrieve": ("ECG<->report retrieval: recall@1/5/10, median rank",
                 "Identical reports are merged into one candidate. Writes OUT/retrieval.json."),
    "generate": ("generate reports; BLEU-4 and ROUGE-L against the true reports",
                 "Writes OUT/generation.csv (id, report, generated) and OUT/generation.json."),
    "identify": ("patient identification with rhythm embeddings (top-1/5 recall)",
                 "One record per patient in the gallery, the others are probes. Writes "
                 "OUT/patient_identification.json."),
    "embed": ("export rhythm/beat/probe embeddings to .parquet or .npy",
              "Writes --out (a .parquet or .npy file, chosen by the suffix; never pickled)."),
    "benchmark": ("the paper's evaluation suite (zero-shot on six sets, probes at 1/10/100 %%) in one command",
                  "Zero-shot on PTB-XL super/sub/form/rhythm, CPSC 2018 and Chapman (published test splits) and "
                  "linear probes at 1/10/100 %% of the labels (1 %% and 10 %% over --draws label draws). Test "
                  "sets are checked against the published sizes. Writes OUT/results.json, results.csv, "
                  "results.md (the paper's layout with published numbers beside ours), benchmark.png and every "
                  "evaluation's own files under OUT/zeroshot and OUT/probe."),
}  # fmt: skip


def _parser(sub: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    help_, description = _COMMANDS[name]
    return sub.add_parser(name, help=help_, description=description, formatter_class=_FMT)


def _add_zeroshot(p: argparse.ArgumentParser) -> None:
    _common(p)
    _portion(p)
    _leads_option(p)
    p.add_argument("--task", nargs="+", required=True, help="task name(s) in the store")
    p.add_argument("--prompts", default=None, help="prompt JSON {code: [phrasing, ...]} (default: shipped)")
    p.add_argument(
        "--n-boot",
        type=int_at_least(0),
        default=1000,
        help="bootstrap resamples for 95%% intervals (0 = off)",
    )
    p.add_argument("--seed", type=int, default=42, help="bootstrap seed")
    p.set_defaults(func=_zeroshot)


def _add_probe(p: argparse.ArgumentParser) -> None:
    _common(p)
    _fold_options(p)
    _leads_option(p)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="head learning rate")
    p.add_argument("--weight-decay", type=nonneg_float, default=1e-4, help="AdamW weight decay")
    p.add_argument("--epochs", type=int_at_least(1), default=100, help="at most this many epochs")
    p.add_argument("--patience", type=int_at_least(1), default=5, help="epochs without a better val AUROC")
    p.add_argument("--random-init", action="store_true", help="baseline: same architecture, random weights")
    _save_option(p)
    p.set_defaults(func=_probe)


def _add_finetune(p: argparse.ArgumentParser) -> None:
    _common(p)
    _fold_options(p)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="head learning rate")
    p.add_argument("--lr-encoder", type=positive_float, default=1e-4, help="encoder learning rate")
    p.add_argument("--weight-decay", type=nonneg_float, default=1e-4, help="AdamW weight decay")
    p.add_argument("--epochs", type=int_at_least(1), default=20, help="at most this many epochs")
    p.add_argument("--patience", type=int_at_least(1), default=3, help="epochs without a better val AUROC")
    p.add_argument("--random-init", action="store_true",
                   help="baseline: train the same architecture from random weights (fully supervised)")  # fmt: skip
    _save_option(p)
    p.set_defaults(func=_finetune, batch_size=64)


def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="classifier folder (melp probe/finetune --save DIR)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="store folder written by `melp prepare`")
    src.add_argument("--record", help="one WFDB record (path, with or without .hea) or a .npy (L, T) file")
    p.add_argument(
        "--npy-leads", nargs="+", default=None, help=".npy without sidecar: its lead names in row order"
    )
    p.add_argument(
        "--npy-rate", type=positive_float, default=None, help=".npy without sidecar: its sampling rate in Hz"
    )
    _leads_option(p)
    p.add_argument(
        "--out", type=output_file(".csv"), default=None, help="CSV file for id, p_<class>..., pred_<class>..."
    )
    p.add_argument("--batch-size", type=int_at_least(1), default=128, help="records per forward pass")
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, ... (default: cuda if available)")
    _portion(p)
    p.set_defaults(func=_predict)


def _add_plain(func):
    def add(p: argparse.ArgumentParser) -> None:
        _common(p)
        _portion(p)
        p.set_defaults(func=func)

    return add


def _add_generate(p: argparse.ArgumentParser) -> None:
    _common(p)
    _portion(p)
    p.add_argument(
        "--strategy", default="beam", choices=["beam", "greedy", "top_k", "top_p"], help="decoding"
    )
    p.add_argument("--max-length", type=int_at_least(3), default=None,
                   help="generated tokens at most (default: melp.models.generation.MAX_LENGTH = 64)")  # fmt: skip
    p.add_argument("--limit", type=int_at_least(1), default=None, help="only the first N records")
    p.set_defaults(func=_generate, batch_size=32)


def _add_embed(p: argparse.ArgumentParser) -> None:
    _common(p, out_type=output_file(".parquet", ".npy"))
    _portion(p)
    _leads_option(p)
    p.set_defaults(func=_embed)


def _add_benchmark(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="saved model folder or hub id")
    p.add_argument("--ptbxl", default=None, help="PTB-XL store (fold 10 = test; PTB-XL mini: fold 9)")
    p.add_argument("--cpsc", default=None, help="CPSC 2018 store (melp prepare cpsc)")
    p.add_argument("--chapman", default=None, help="Chapman / CSN store (melp prepare chapman)")
    p.add_argument("--out", required=True, type=output_folder, help="output folder")
    p.add_argument(
        "--draws", type=int_at_least(1), default=3, help="label draws of the 1 %% and 10 %% probes"
    )
    p.add_argument(
        "--fractions", type=unit_fraction, nargs="+", default=[0.01, 0.1, 1.0], help="probe label fractions"
    )
    p.add_argument("--no-probe", action="store_true", help="zero-shot only")
    p.add_argument("--n-boot", type=int_at_least(0), default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--seed", type=int, default=42, help="seed of the first label draw and the bootstrap")
    p.add_argument(
        "--icbeb-window",
        type=positive_float,
        default=5.0,
        help="seconds of each CPSC record kept (the paper: 5)",
    )
    _leads_option(p)
    p.add_argument("--batch-size", type=int_at_least(1), default=128, help="records per forward pass")
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument(
        "--figure-format", nargs="+", choices=["png", "pdf", "svg"], default=["png"], help="figure files"
    )
    p.set_defaults(func=_benchmark)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the evaluation sub-commands on the ``melp`` parser."""
    builders = {
        "zeroshot": _add_zeroshot, "probe": _add_probe, "finetune": _add_finetune, "predict": _add_predict,
        "retrieve": _add_plain(_retrieve), "generate": _add_generate, "identify": _add_plain(_identify),
        "embed": _add_embed, "benchmark": _add_benchmark,
    }  # fmt: skip
    for name, add in builders.items():
        add(_parser(sub, name))


def _benchmark(args: argparse.Namespace) -> int:
    import melp
    from melp.data.store import ECGStore
    from melp.eval.benchmark import BenchmarkConfig, run_benchmark
    from melp.eval.features import pick_device

    paths = {"ptbxl": args.ptbxl, "cpsc": args.cpsc, "chapman": args.chapman}
    if not any(paths.values()):
        raise ValueError("give at least one store: --ptbxl, --cpsc or --chapman")
    stores = {k: ECGStore(v) if v else None for k, v in paths.items()}  # every store is checked before work
    model = melp.load_model(args.model).to(pick_device(args.device)).eval()
    cfg = BenchmarkConfig(fractions=tuple(args.fractions), draws=args.draws, probe=not args.no_probe,
                          n_boot=args.n_boot, seed=args.seed, icbeb_window_s=args.icbeb_window,
                          leads=tuple(args.leads) if args.leads else None, batch_size=args.batch_size,
                          figure_formats=tuple(args.figure_format))  # fmt: skip
    res = run_benchmark(model, stores, args.out, cfg)
    print((Path(args.out) / "results.md").read_text())
    return 0 if res["sets"] else 1
