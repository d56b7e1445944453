"""`melp demo`: the whole pipeline on PTB-XL (by default the repo's shipped ``data/ptbxl-mini``).

Stages (each prints its progress and time):
1. prepare the store (100 Hz x 10 s) from the PTB-XL root;
2. cardiology LM stage: masked-LM adaptation of MiniLM on the training reports;
3. pretrain ``melp-tiny`` on the training folds (1-8 without the evaluation fold);
4. evaluate on the evaluation fold (default 9), which no earlier stage looks at:
   zero-shot (super-class, sub-class, form, rhythm), linear probe with 1 / 10 / 100 % of the
   training records, the same probe on a randomly initialised encoder of the same architecture,
   ECG <-> report retrieval, patient identification, a few generated reports beside the true ones,
   ROC and attention figures;
5. print a results table; write ``OUT/summary.json``.

Checkpoint selection during pretraining uses zero-shot validation on the LAST training fold (a
monitor inside the training data); the evaluation fold stays unseen until stage 4.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("melp.demo")

__all__ = ["DemoConfig", "default_root", "subset_root", "run_demo"]

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
    val_fold: int = 9
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


def subset_root(root: Path, dest: Path, per_fold: int) -> Path:
    """A PTB-XL root with only the first ``per_fold`` present records of each fold (links to the
    original files), for quick runs. Returns ``dest``."""
    db = pd.read_csv(root / "ptbxl_database.csv")
    present = np.array([(root / f"{f}.hea").exists() for f in db["filename_lr"].astype(str)])
    sel = db[present].groupby("strat_fold", group_keys=False).head(per_fold)
    dest.mkdir(parents=True, exist_ok=True)
    sel.to_csv(dest / "ptbxl_database.csv", index=False)
    (dest / "scp_statements.csv").write_bytes((root / "scp_statements.csv").read_bytes())
    for f in sel["filename_lr"].astype(str):
        for ext in (".hea", ".dat"):
            target = dest / f"{f}{ext}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.symlink((root / f"{f}{ext}").resolve(), target)
    return dest


def _pretrain(cfg: DemoConfig, store: Path, text_dir: Path | None, out: Path, train_folds: list[int]) -> Path:
    from melp.train.config import ValSetConfig, apply_overrides, load_config
    from melp.train.run import pretrain

    tcfg = load_config("melp-tiny")
    tcfg.out = str(out)
    tcfg.data.store = str(store)
    tcfg.data.folds = list(train_folds)
    tcfg.model.name = cfg.model
    tcfg.model.text = str(text_dir) if text_dir is not None else None
    # checkpoint selection monitors zero-shot on the last TRAINING fold; the evaluation fold stays unseen
    tcfg.val.sets = [
        ValSetConfig(
            store=str(store), task="super_class", folds=[train_folds[-1]], name=f"super_fold{train_folds[-1]}"
        )
    ]
    if cfg.pretrain_epochs:
        tcfg.trainer.max_epochs = cfg.pretrain_epochs
    if cfg.fast:
        tcfg.trainer.progress_bar = False
    tcfg = apply_overrides(tcfg, list(cfg.pretrain_overrides))
    summary = pretrain(tcfg)
    return Path(summary["best_model"])


def _table(summary: dict[str, Any]) -> str:
    lines = [f"{'evaluation (fold ' + str(summary['val_fold']) + ')':<52} {'value':>8}", "-" * 62]
    for task, r in summary["zeroshot"].items():
        lines.append(f"{'zero-shot ' + task + ' macro AUROC':<52} {r['macro_auroc']:>8.3f}")
    for name in ("probe", "probe_random"):
        for frac, auc in summary[name]["macro_auroc"].items():
            label = "linear probe" if name == "probe" else "probe, random-init encoder"
            lines.append(f"{label + f' {float(frac) * 100:g}% super_class AUROC':<52} {auc:>8.3f}")
    r = summary["retrieval"]
    for key in ("ecg_to_report", "report_to_ecg"):
        lines.append(
            f"{'retrieval ' + key.replace('_', ' ') + ' R@1 / R@10':<52} "
            f"{r[key]['R@1']:>8.3f} / {r[key]['R@10']:.3f}"
        )
    if summary.get("patient_identification"):
        p = summary["patient_identification"]
        lines.append(f"{'patient identification top-1 / top-5':<52} {p['R@1']:>8.3f} / {p['R@5']:.3f}")
    g = summary["generation"]
    lines.append(f"{'generation BLEU-4 / ROUGE-L':<52} {g['bleu4']:>8.2f} / {g['rougeL']:.3f}")
    return "\n".join(lines)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the demo; returns the summary dict (also written to ``OUT/summary.json``)."""
    import melp
    from melp.data.store import ECGStore, prepare
    from melp.eval.features import FeatureBank
    from melp.eval.figures import attention_figure, probe_curve_figure
    from melp.eval.generation import run_generation
    from melp.eval.outputs import write_json
    from melp.eval.probe import run_probe
    from melp.eval.retrieval import patient_identification, run_retrieval
    from melp.eval.splits import choose_splits
    from melp.eval.zeroshot import run_zeroshot

    cfg = cfg.resolved()
    t_start = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(cfg.root) if cfg.root else default_root()
    if not (root / "ptbxl_database.csv").exists():
        hint = "" if cfg.root else " (the repo's data/ptbxl-mini was not found next to the package source)"
        raise FileNotFoundError(
            f"no PTB-XL at {root}{hint}; pass --root FOLDER containing ptbxl_database.csv and records100/"
        )
    times: dict[str, float] = {}
    n = 5
    with _Stage(1, n, f"prepare store from {root}", times):
        if cfg.per_fold:
            root = subset_root(root, out / "subset_root", cfg.per_fold)
        store_dir = out / "store"
        prepare("ptbxl", root, store_dir, rate=100, seconds=10, workers=cfg.workers, progress=not cfg.fast)
        store = ECGStore(store_dir)
        folds = sorted({int(f) for f in store.manifest["fold"].dropna()})
        if cfg.val_fold not in folds:
            raise ValueError(
                f"evaluation fold {cfg.val_fold} not in the data (folds {folds}); use --val-fold"
            )
        train_folds = [f for f in folds if f != cfg.val_fold and f <= 8]
        print(f"    {len(store)} records; train folds {train_folds}, evaluation fold {cfg.val_fold}")

    with _Stage(2, n, "cardiology LM stage (masked LM on training reports)", times):
        from melp.text.mlm import pretrain_text

        text_dir = out / "text_lm"
        corpus = out / "mlm_corpus.txt"
        train_reports = store.manifest.loc[store.manifest["fold"].isin(train_folds), "report"].astype(str)
        corpus.write_text("\n".join(t for t in train_reports if t.strip()) + "\n")
        mlm = pretrain_text(
            corpus,
            "minilm",
            text_dir,
            steps=cfg.mlm_steps,
            batch_size=cfg.mlm_batch,
            max_heldout=cfg.mlm_heldout,
        )
        print(f"    held-out perplexity {mlm.perplexity_before:.2f} -> {mlm.perplexity_after:.2f}")

    with _Stage(3, n, f"pretrain {cfg.model} on folds {train_folds}", times):
        text_arg = text_dir if cfg.model == "melp-tiny" else None  # melp-test has its own tiny text tower
        best = _pretrain(cfg, store_dir, text_arg, out / "pretrain", train_folds)
        model = melp.load_model(best).eval()
        print(f"    best model: {best}")

    summary: dict[str, Any] = {
        "val_fold": cfg.val_fold,
        "root": str(root),
        "n_records": len(store),
        "train_folds": train_folds,
        "model": str(best),
        "config": asdict(cfg),
        "mlm_perplexity": [mlm.perplexity_before, mlm.perplexity_after],
    }
    eval_rows = store.select(folds=[cfg.val_fold])
    bank = FeatureBank(model, store)  # every record goes through the encoder once
    with _Stage(4, n, f"evaluate on fold {cfg.val_fold} ({len(eval_rows)} records)", times):
        summary["zeroshot"] = {}
        for task in PTBXL_TASKS:
            r = run_zeroshot(
                model, store, task, eval_rows, out=out / "zeroshot", n_boot=cfg.n_boot, bank=bank
            )
            summary["zeroshot"][task] = {"macro_auroc": r["macro_auroc"], "ci": r.get("ci", {}).get("auroc")}
            print(f"    zero-shot {task}: {r['macro_auroc']:.3f}")
        splits = choose_splits(store, train_folds=train_folds, test_folds=[cfg.val_fold])
        print(f"    probe splits: {splits.description}")
        probe = run_probe(
            model,
            store,
            "super_class",
            splits,
            cfg.fractions,
            out=out / "probe",
            n_boot=cfg.n_boot,
            figure=False,
            bank=bank,
        )
        random_model = melp.create_model(dict(model.config)).eval()
        probe_random = run_probe(
            random_model,
            store,
            "super_class",
            splits,
            cfg.fractions,
            out=out / "probe",
            n_boot=cfg.n_boot,
            name="probe_random",
            figure=False,
        )
        summary["probe"] = {"macro_auroc": probe["macro_auroc"], "splits": splits.description}
        summary["probe_random"] = {"macro_auroc": probe_random["macro_auroc"]}
        summary["retrieval"] = run_retrieval(model, store, eval_rows, out=out, bank=bank)
        try:
            summary["patient_identification"] = patient_identification(
                model, store, np.arange(len(store)), out=out, bank=bank
            )
        except ValueError as err:  # no patient with two records (tiny subsets)
            summary["patient_identification"] = None
            print(f"    patient identification skipped: {err}")
        gen = run_generation(model, store, eval_rows[: cfg.n_generate], out=out, max_length=48)
        summary["generation"] = {k: gen[k] for k in ("bleu4", "rougeL", "n", "strategy")}
        summary["generation"]["examples"] = gen["examples"]

    with _Stage(5, n, "figures and summary", times):
        import torch

        from melp.data.datasets import PretrainDataset, batches

        figs = out / "figures"
        probe_curve_figure(
            {"MELP (pretrained)": probe["macro_auroc"], "random init": probe_random["macro_auroc"]},
            figs / "probe_fractions.png",
            title=f"linear probe, super_class, fold {cfg.val_fold}",
        )
        # the evaluation record with the most report sentences (at most 6) makes the clearest example
        n_sent = store.manifest["report"].iloc[eval_rows].astype(str).str.count(r"\. ").to_numpy()
        row = eval_rows[[int(np.argmax(np.where(n_sent <= 5, n_sent, -1)))]]
        batch = next(batches(PretrainDataset(store, row, normalize=bank.normalize, train=False), 1))
        with torch.no_grad():
            maps = model.attention_maps(batch["ecg"][0], batch["report"][0], length=int(batch["length"][0]))
        raw, _ = store.signal(int(row[0]))
        attention_figure(
            raw,
            maps,
            store.rate,
            figs / "attention.png",
            title=f"record {batch['id'][0]}: {batch['report'][0]}",
        )
        for task in PTBXL_TASKS:
            src = out / "zeroshot" / f"zeroshot_{task}_roc.png"
            if src.exists():
                (figs / src.name).write_bytes(src.read_bytes())
        summary["figures"] = sorted(str(p.relative_to(out)) for p in figs.glob("*.png"))
        summary["seconds"] = {**times, "total": round(time.time() - t_start, 1)}
        write_json(out / "summary.json", summary)

    table = _table(summary)
    print("\n" + table)
    print("\ngenerated vs true reports:")
    for ex in summary["generation"]["examples"][:4]:
        print(f"  true: {ex['report']}\n  gen:  {ex['generated']}")
    print(f"\nwrote {out / 'summary.json'} and figures in {out / 'figures'} ({time.time() - t_start:.0f} s)")
    return summary
