"""`melp demo`: the whole pipeline on PTB-XL (by default the repo's shipped ``data/ptbxl-mini``).

A pipeline, not an evaluation: it runs every part of the package in order. Stages (each prints its
progress and time):

1. prepare the store (100 Hz x 10 s) from the PTB-XL root;
2. cardiology LM stage: masked-LM adaptation of MiniLM on the training reports;
3. pretrain ``melp-tiny`` on the training folds (1-8 without the selection and test folds: 1-7 by
   default), choosing the checkpoint by zero-shot AUROC on the held-out selection fold (8);
4. evaluate on the test fold (default 9), which no earlier stage looks at: zero-shot (super-class,
   sub-class, form, rhythm), linear probe with 1 / 10 / 100 % of the training records, the same
   probe on a randomly initialised encoder of the same architecture, ECG <-> report retrieval,
   patient identification, the beat level (:func:`melp.eval.beats.beat_diagnostics`: sentence->beat
   attention, beat-vector similarity, QRS alignment), a few generated reports beside the true ones;
5. figures (ROC curves, probe curve, beat attention) and ``OUT/summary.json``; a results table.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("melp.demo")

__all__ = ["DemoConfig", "default_root", "run_demo", "add_commands", "check_root", "prepare_stage", "text_stage",
           "pretrain_stage"]  # fmt: skip

PTBXL_TASKS = ["super_class", "sub_class", "form", "rhythm"]


def default_root() -> Path:
    """The repo's shipped PTB-XL mini (``<repo>/data/ptbxl-mini``), located from the package source."""
    import melp

    return Path(melp.__file__).resolve().parents[2] / "data" / "ptbxl-mini"


@dataclass
class DemoConfig:
    """Settings of one demo run (``fast`` = a smoke test with tiny sizes and a few steps)."""

    out: str | Path = "melp-demo"
    root: str | Path | None = None
    test_fold: int = 9  # evaluated once, at the end; no earlier stage reads it
    select_fold: int = 8  # checkpoint selection (zero-shot on this fold)
    fast: bool = False
    workers: int = 2
    per_fold: int = 0  # > 0: use only this many records per fold (subset root); fast mode sets 6
    mlm_steps: int = 40  # the LM head spans the whole vocabulary: ~1 s per step of 16 reports on 2 cores
    mlm_batch: int = 16
    mlm_heldout: int = 100  # held-out reports for the perplexity before/after
    pretrain_epochs: int = 0  # 0 = the named config's value
    model: str = "melp-tiny"
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    n_generate: int = 6
    n_boot: int = 1000
    pretrain_overrides: list[str] = field(default_factory=list)

    def resolved(self) -> DemoConfig:
        if not self.fast:
            return self
        return DemoConfig(
            **{
                **asdict(self),
                "per_fold": self.per_fold or 6,
                "mlm_steps": 2,
                "mlm_heldout": 8,
                "pretrain_epochs": 1,
                "model": "melp-test",
                "n_generate": 2,
                "n_boot": 50,
                "pretrain_overrides": ["trainer.max_steps=2", "data.batch_size=8", *self.pretrain_overrides],
            }
        )


class _Stage:
    """Context manager printing ``[k/n] name ...`` and the elapsed time."""

    def __init__(self, k: int, n: int, name: str, times: dict[str, float]) -> None:
        self.k, self.n, self.name, self.times = k, n, name, times

    def __enter__(self) -> _Stage:
        print(f"[{self.k}/{self.n}] {self.name} ...", flush=True)
        self.t0 = time.time()
        return self

    def __exit__(self, *exc: Any) -> None:
        dt = time.time() - self.t0
        self.times[self.name] = round(dt, 1)
        if exc[0] is None:
            print(f"[{self.k}/{self.n}] {self.name} done in {dt:.1f} s", flush=True)


def check_root(cfg: DemoConfig) -> Path:
    """The PTB-XL root of ``cfg`` (default: the shipped mini); FileNotFoundError with a hint if absent."""
    root = Path(cfg.root) if cfg.root else default_root()
    if not (root / "ptbxl_database.csv").exists():
        hint = "" if cfg.root else " (the repo's data/ptbxl-mini was not found next to the package source)"
        raise FileNotFoundError(
            f"no PTB-XL at {root}{hint}; pass --root FOLDER containing ptbxl_database.csv and records100/"
        )
    return root


def prepare_stage(cfg: DemoConfig, root: Path, out: Path):
    """Stage 1: the store ``OUT/store`` (100 Hz x 10 s; an existing complete one is reused) and the
    training folds (1-8 without the selection and test folds). Returns ``(store, train_folds)``."""
    from melp.data.readers.ptbxl import subset_root
    from melp.data.store import ECGStore, prepare

    if cfg.per_fold:
        root = subset_root(root, out / "subset_root", cfg.per_fold)
    prepare("ptbxl", root, out / "store", rate=100, seconds=10, workers=cfg.workers, progress=not cfg.fast)
    store = ECGStore(out / "store")
    folds = sorted({int(f) for f in store.manifest["fold"].dropna()})
    for name, fold in (("test", cfg.test_fold), ("selection", cfg.select_fold)):
        if fold not in folds:
            raise ValueError(f"{name} fold {fold} not in the data (folds {folds})")
    if cfg.select_fold == cfg.test_fold:
        raise ValueError(f"the selection fold must differ from the test fold ({cfg.test_fold})")
    # the selection fold is held out of training, so that choosing the checkpoint on it measures
    # generalisation; the test fold is read by no stage before the evaluation
    train_folds = [f for f in folds if f not in (cfg.test_fold, cfg.select_fold) and f <= 8]
    print(
        f"    {len(store)} records; train folds {train_folds}, checkpoint selection on fold {cfg.select_fold}, "
        f"test fold {cfg.test_fold}"
    )
    return store, train_folds


def text_stage(cfg: DemoConfig, store, train_folds: list[int], out: Path):
    """Stage 2: masked-LM adaptation of MiniLM on the training folds' reports, into ``OUT/text_lm``.
    Returns ``(folder, MLM result)``."""
    from melp.text.mlm import pretrain_text

    corpus = out / "mlm_corpus.txt"
    reports = store.manifest.loc[store.manifest["fold"].isin(train_folds), "report"].astype(str)
    corpus.write_text("\n".join(t for t in reports if t.strip()) + "\n")
    mlm = pretrain_text(corpus, "minilm", out / "text_lm", steps=cfg.mlm_steps, batch_size=cfg.mlm_batch,
                        max_heldout=cfg.mlm_heldout)  # fmt: skip
    print(f"    held-out perplexity {mlm.perplexity_before:.2f} -> {mlm.perplexity_after:.2f}")
    return out / "text_lm", mlm


def pretrain_stage(
    cfg: DemoConfig,
    store_dir: Path,
    text_dir: Path,
    out: Path,
    train_folds: list[int],
    resume: str | None = None,
) -> Path:
    """Stage 3: pretrain ``cfg.model`` with the melp-tiny recipe (+ ``cfg.pretrain_overrides``) on
    ``train_folds``, validating zero-shot on the selection fold (``resume``: as for
    :func:`melp.train.run.pretrain`). Returns the best model's folder."""
    from melp.models import get_config
    from melp.train.config import ValSetConfig, apply_overrides, load_config
    from melp.train.run import pretrain

    tcfg = load_config("melp-tiny")
    tcfg.out = str(out)
    tcfg.data.store = str(store_dir)
    tcfg.data.folds = list(train_folds)
    tcfg.model.name = cfg.model
    # the MLM-adapted folder replaces a pretrained text tower; a config with its own randomly
    # initialised text tower (melp-test) keeps it
    pretrained_text = get_config(cfg.model)["text"]["from_config"] is None
    tcfg.model.text = str(text_dir) if pretrained_text else None
    tcfg.val.sets = [
        ValSetConfig(store=str(store_dir), task="super_class", folds=[cfg.select_fold], name=f"super_fold{cfg.select_fold}")
    ]  # fmt: skip
    if cfg.pretrain_epochs:
        tcfg.trainer.max_epochs = cfg.pretrain_epochs
    if cfg.fast:
        tcfg.trainer.progress_bar = False
    summary = pretrain(apply_overrides(tcfg, list(cfg.pretrain_overrides)), resume=resume)
    return Path(summary["best_model"])


def _evaluate_stage(cfg: DemoConfig, model, store, train_folds: list[int], out: Path, bank) -> dict[str, Any]:
    import melp
    from melp.eval.beats import beat_diagnostics
    from melp.eval.generation import run_generation
    from melp.eval.probe import run_probe
    from melp.eval.retrieval import patient_identification, run_retrieval
    from melp.eval.splits import choose_splits
    from melp.eval.zeroshot import run_zeroshot

    rows = store.select(folds=[cfg.test_fold])
    res: dict[str, Any] = {"zeroshot": {}}
    for task in PTBXL_TASKS:
        r = run_zeroshot(model, store, task, rows, out=out / "zeroshot", n_boot=cfg.n_boot, bank=bank)
        res["zeroshot"][task] = {"macro_auroc": r["macro_auroc"], "ci": r.get("ci", {}).get("auroc"),
                                 "n_records": r["n_records"]}  # fmt: skip
        print(f"    zero-shot {task}: {r['macro_auroc']:.3f} ({r['n_records']} records)")
    splits = choose_splits(store, train_folds=train_folds, test_folds=[cfg.test_fold])
    print(f"    probe splits: {splits.description}")
    probe_kw = {"out": out / "probe", "n_boot": cfg.n_boot, "figure": False}
    probe = run_probe(model, store, "super_class", splits, cfg.fractions, bank=bank, **probe_kw)
    random_model = melp.create_model(dict(model.config)).eval()
    probe_random = run_probe(
        random_model, store, "super_class", splits, cfg.fractions, name="probe_random", **probe_kw
    )
    for name, r in (("probe", probe), ("probe_random", probe_random)):
        cis = {f: x.get("ci", {}).get("auroc") for f, x in r["fractions"].items()}
        res[name] = {"macro_auroc": r["macro_auroc"], "ci": cis, "splits": splits.description}
    res["retrieval"] = run_retrieval(model, store, rows, out=out, bank=bank)
    try:
        res["patient_identification"] = patient_identification(
            model, store, np.arange(len(store)), out=out, bank=bank
        )
    except ValueError as err:  # no patient with two records (tiny subsets)
        res["patient_identification"] = None
        print(f"    patient identification skipped: {err}")
    res["beats"] = beat_diagnostics(model, store, rows)
    b = res["beats"]
    print(f"    beat level: median sentence->beat max/min {b['median_record_ratio']:.2f}, beat cosine "
          f"{b['beat_cosine']:.3f}, half-mass {b['half_mass_frames']:.1f} of {b['frames']} frames")  # fmt: skip
    gen = run_generation(model, store, rows[: cfg.n_generate], out=out)
    res["generation"] = {k: gen[k] for k in ("bleu4", "rougeL", "n", "strategy")}
    res["generation"]["examples"] = gen["examples"]
    return res


def _figures_stage(cfg: DemoConfig, model, store, bank, summary: dict, out: Path) -> list[str]:
    from melp.data.datasets import PretrainDataset, batches
    from melp.eval.beats import attention_maps
    from melp.eval.figures import attention_figure, probe_curve_figure

    figs = out / "figures"
    curves = {
        "MELP (pretrained)": summary["probe"]["macro_auroc"],
        "random init": summary["probe_random"]["macro_auroc"],
    }
    probe_curve_figure(
        curves, figs / "probe_fractions.png", title=f"linear probe, super_class, fold {cfg.test_fold}"
    )
    # the test record with the most report sentences (at most 6) makes the clearest example
    rows = store.select(folds=[cfg.test_fold])
    n_sent = store.manifest["report"].iloc[rows].astype(str).str.count(r"\. ").to_numpy()
    row = rows[[int(np.argmax(np.where(n_sent <= 5, n_sent, -1)))]]
    batch = next(batches(PretrainDataset(store, row, normalize=bank.normalize, train=False), 1))
    maps = attention_maps(model, batch["ecg"][0], batch["report"][0], length=int(batch["length"][0]))
    raw, _ = store.signal(int(row[0]))
    attention_figure(
        raw, maps, store.rate, figs / "attention.png", title=f"record {batch['id'][0]}: {batch['report'][0]}"
    )
    for task in PTBXL_TASKS:
        src = out / "zeroshot" / f"zeroshot_{task}_roc.png"
        if src.exists():
            (figs / src.name).write_bytes(src.read_bytes())
    return sorted(str(p.relative_to(out)) for p in figs.glob("*.png"))


def _table(summary: dict[str, Any]) -> str:
    lines = [f"{'evaluation (fold ' + str(summary['test_fold']) + ')':<52} {'value':>8}", "-" * 62]
    for task, r in summary["zeroshot"].items():
        value = "n/a" if r["macro_auroc"] is None else f"{r['macro_auroc']:.3f}"
        lines.append(f"{'zero-shot ' + task + ' macro AUROC':<52} {value:>8}")
    for name in ("probe", "probe_random"):
        for frac, auc in summary[name]["macro_auroc"].items():
            label = "linear probe" if name == "probe" else "probe, random-init encoder"
            lines.append(f"{label + f' {float(frac) * 100:g}% super_class AUROC':<52} {auc:>8.3f}")
    r = summary["retrieval"]
    for key in ("ecg_to_report", "report_to_ecg"):
        lines.append(
            f"{'retrieval ' + key.replace('_', ' ') + ' R@1 / R@10':<52} {r[key]['R@1']:>8.3f} / {r[key]['R@10']:.3f}"
        )
    if summary.get("patient_identification"):
        p = summary["patient_identification"]
        lines.append(f"{'patient identification top-1 / top-5':<52} {p['R@1']:>8.3f} / {p['R@5']:.3f}")
    b = summary.get("beats")
    if b:
        lines.append(
            f"{'beat level: median-record sentence->beat max/min':<52} {b['median_record_ratio']:>8.2f}"
        )
        lines.append(f"{'beat level: mean pairwise cosine of the beat vectors':<52} {b['beat_cosine']:>8.3f}")
        if "qrs_hit" in b:
            lines.append(
                f"{'beat level: queries peaking at a QRS / chance':<52} {b['qrs_hit']:>8.2f} / {b['qrs_chance']:.2f}"
            )
    g = summary["generation"]
    lines.append(f"{'generation BLEU-4 / ROUGE-L':<52} {g['bleu4']:>8.2f} / {g['rougeL']:.3f}")
    return "\n".join(lines)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the demo; returns the summary dict (also written to ``OUT/summary.json``)."""
    import melp
    from melp.eval.features import FeatureBank
    from melp.eval.outputs import write_json

    require_training_extra()
    cfg = cfg.resolved()
    t_start = time.time()
    root = check_root(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    n = 5
    with _Stage(1, n, f"prepare store from {root}", times):
        store, train_folds = prepare_stage(cfg, root, out)
    with _Stage(2, n, "cardiology LM stage (masked LM on training reports)", times):
        text_dir, mlm = text_stage(cfg, store, train_folds, out)
    with _Stage(3, n, f"pretrain {cfg.model} on folds {train_folds}", times):
        best = pretrain_stage(cfg, store.path, text_dir, out / "pretrain", train_folds)
        model = melp.load_model(best).eval()
        print(f"    best model: {best}")
    summary: dict[str, Any] = {
        "test_fold": cfg.test_fold, "select_fold": cfg.select_fold, "root": str(root), "n_records": len(store),
        "train_folds": train_folds, "model": str(best), "config": asdict(cfg),
        "mlm_perplexity": [mlm.perplexity_before, mlm.perplexity_after],
    }  # fmt: skip
    bank = FeatureBank(model, store)  # every record goes through the encoder once
    with _Stage(4, n, f"evaluate on fold {cfg.test_fold}", times):
        summary.update(_evaluate_stage(cfg, model, store, train_folds, out, bank))
    with _Stage(5, n, "figures and summary", times):
        summary["figures"] = _figures_stage(cfg, model, store, bank, summary, out)
        summary["seconds"] = {**times, "total": round(time.time() - t_start, 1)}
        write_json(out / "summary.json", summary)
    print("\n" + _table(summary))
    print("\ngenerated vs true reports:")
    for ex in summary["generation"]["examples"][:4]:
        print(f"  true: {ex['report']}\n  gen:  {ex['generated']}")
    print(f"\nwrote {out / 'summary.json'} and figures in {out / 'figures'} ({time.time() - t_start:.0f} s)")
    return summary


def require_training_extra() -> None:
    """ImportError with the install hint when Lightning (the ``train`` extra) is not installed."""
    if importlib.util.find_spec("lightning") is None:
        raise ImportError(
            "melp demo pretrains a model and needs the training extra: pip install 'melp[train]'"
        )


# ----------------------------------------------------------------------------- CLI


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``demo`` on the ``melp`` parser."""
    from melp.cli_args import HelpFormatter, int_at_least

    p = sub.add_parser(
        "demo",
        help="the whole pipeline on the shipped PTB-XL mini, offline, on CPU",
        description="Prepare a store, adapt the text model (masked LM), pretrain melp-tiny on folds 1-7 "
        "(1-8 without --select-fold, which chooses the checkpoint), evaluate on --test-fold. Writes "
        "OUT/store, OUT/text_lm, OUT/pretrain (checkpoints, best_model), evaluation JSON/CSV, OUT/figures/*.png and OUT/summary.json.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--out", default="melp-demo", help="output folder")
    p.add_argument("--root", default=None, help="another PTB-XL root (default: the repo's data/ptbxl-mini)")
    p.add_argument("--test-fold", type=int, default=9, help="fold evaluated at the end (never read before)")
    p.add_argument(
        "--val-fold", type=int, default=None, help=argparse.SUPPRESS
    )  # deprecated name of --test-fold
    p.add_argument(
        "--select-fold", type=int, default=8, help="fold whose zero-shot AUROC chooses the checkpoint"
    )
    p.add_argument("--fast", action="store_true", help="tiny sizes and few steps (smoke test, ~1 minute)")
    p.add_argument("--workers", type=int_at_least(0), default=2, help="processes for `prepare`")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    try:
        require_training_extra()  # before any work
    except ImportError as err:
        log.error("%s", err)
        return 1
    if args.val_fold is not None:
        log.warning("--val-fold is deprecated (it names the test fold): use --test-fold")
        args.test_fold = args.val_fold
    cfg = DemoConfig(out=args.out, root=args.root, test_fold=args.test_fold, select_fold=args.select_fold,
                     fast=args.fast, workers=args.workers)  # fmt: skip
    run_demo(cfg)
    return 0
