"""Loss ablation of the demo recipe on PTB-XL: full vs CLIP-only vs CLIP + caption vs CLIP + beat.

    python scripts/ablation.py --out melp-ablation                   # 4 variants x 3 seeds
    python scripts/ablation.py --out melp-ablation --variants full clip --seeds 42

Selection discipline (the same as ``melp demo``): every run pretrains ``melp-tiny`` on folds 1-7 with
the demo's recipe and text model, its checkpoint is chosen by zero-shot AUROC on fold 8, and fold 9
is evaluated once per run, at the end: zero-shot super-class, the linear probe at 1 % and 10 % of
the training records (``--draws`` label draws each, averaged), and the beat level
(:func:`melp.eval.beats.beat_diagnostics`). Variants differ only in the loss weights.

Outputs: ``OUT/runs/<variant>_s<seed>/`` (pretraining folder, ``eval/`` JSON + score CSVs,
``result.json``), ``OUT/ablation.json``, ``OUT/ablation.md`` (mean +/- sd over seeds; 95 % bootstrap
intervals of the seed mean and of the paired difference to CLIP-only, resampling fold-9 records)
and ``OUT/ablation.png``. A finished run (its ``result.json``) is reused, so an interrupted
ablation resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

# loss weights of each variant on top of the recipe (the beat-diversity term belongs to the beat
# loss: it is off wherever the beat loss is)
VARIANTS = {
    "full": [],
    "clip": ["loss.caption=0", "loss.beat=0", "loss.diversity=0"],
    "clip+caption": ["loss.beat=0", "loss.diversity=0"],
    "clip+beat": ["loss.caption=0"],
}
TASK = "super_class"


def _scores(csv: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(labels (N, K), scores (N, K), ids) from a ``*_scores.csv`` written by the evaluation."""
    frame = pd.read_csv(csv, dtype={"id": str})
    score_cols = [c for c in frame.columns if c.startswith("score_")]
    label_cols = ["label_" + c[len("score_") :] for c in score_cols]
    return frame[label_cols].to_numpy(float), frame[score_cols].to_numpy(float), frame["id"].tolist()


def run_one(variant: str, seed: int, args, base, store, text_dir: Path, train_folds: list[int]) -> dict:
    """Pretrain one (variant, seed) and evaluate it on the test fold; reuses a finished run."""
    import melp
    from melp.eval.beats import beat_diagnostics
    from melp.eval.features import FeatureBank
    from melp.eval.probe import HeadConfig, run_probe
    from melp.eval.splits import choose_splits
    from melp.eval.zeroshot import run_zeroshot
    from melp.pipeline import pretrain_stage

    run_dir = Path(args.out) / "runs" / f"{variant}_s{seed}"
    done = run_dir / "result.json"
    if done.exists():
        print(f"    {variant} seed {seed}: done before, reusing {done}")
        return json.loads(done.read_text())
    t0 = time.time()
    overrides = [f"seed={seed}", *VARIANTS[variant], *args.set]
    cfg = replace(base, pretrain_overrides=[*base.pretrain_overrides, *overrides])
    # resume="auto": a run killed during pretraining continues from its last checkpoint
    best = pretrain_stage(cfg, store.path, text_dir, run_dir / "pretrain", train_folds, resume="auto")
    model = melp.load_model(best).eval()
    rows = store.select(folds=[args.test_fold])
    bank = FeatureBank(model, store)
    ev = run_dir / "eval"
    zs = run_zeroshot(model, store, TASK, rows, out=ev, n_boot=0, bank=bank, figure=False)
    splits = choose_splits(store, train_folds=train_folds, test_folds=[args.test_fold])
    probe = {}
    for frac in (0.01, 0.1):
        draws = [
            run_probe(model, store, TASK, splits, (frac,), out=ev, n_boot=0, bank=bank, figure=False,
                      config=HeadConfig(seed=args.probe_seed + d), name=f"probe_draw{d}")["macro_auroc"][f"{frac:g}"]
            for d in range(args.draws)
        ]  # fmt: skip
        probe[f"{frac:g}"] = {"mean": float(np.mean(draws)), "draws": draws}
    beats = beat_diagnostics(model, store, rows)
    res = {"variant": variant, "seed": seed, "overrides": overrides, "model": str(best),
           "zeroshot": zs["macro_auroc"], "probe": probe, "beats": beats, "seconds": round(time.time() - t0, 1)}  # fmt: skip
    done.write_text(json.dumps(res, indent=1))
    print(f"    {variant} seed {seed}: zero-shot {zs['macro_auroc']:.3f}, probe 1 % {probe['0.01']['mean']:.3f}, "
          f"10 % {probe['0.1']['mean']:.3f}, sentence->beat max/min {beats['median_record_ratio']:.2f} "
          f"({res['seconds']:.0f} s)")  # fmt: skip
    return res


def _score_files(args, variant: str, seeds: list[int], metric: str) -> list[Path]:
    """The score CSVs behind one metric of a variant (every seed; every label draw for a probe)."""
    ev = [Path(args.out) / "runs" / f"{variant}_s{s}" / "eval" for s in seeds]
    if metric == "zeroshot":
        return [e / f"zeroshot_{TASK}_scores.csv" for e in ev]
    pct = {"probe_1": "1", "probe_10": "10"}[metric]
    return [e / f"probe_draw{d}_{TASK}_{pct}pct_scores.csv" for e in ev for d in range(args.draws)]


def summarise(args, results: list[dict]) -> dict:
    """Mean +/- sd over seeds, bootstrap intervals of the seed mean and of the difference to CLIP-only."""
    from melp.eval.metrics import bootstrap_mean_auroc

    metrics = {"zeroshot": lambda r: r["zeroshot"], "probe_1": lambda r: r["probe"]["0.01"]["mean"],
               "probe_10": lambda r: r["probe"]["0.1"]["mean"]}  # fmt: skip
    table: dict[str, dict] = {}
    for variant in args.variants:
        runs = [r for r in results if r["variant"] == variant]
        seeds = [r["seed"] for r in runs]
        row: dict = {"seeds": seeds}
        for name, get in metrics.items():
            vals = [get(r) for r in runs]
            loaded = [_scores(f) for f in _score_files(args, variant, seeds, name)]
            y = loaded[0][0]
            if any(ids != loaded[0][2] for _, _, ids in loaded):
                raise ValueError(f"{variant} {name}: the runs scored different test records")
            entry = {"mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                     "values": vals, "ci": bootstrap_mean_auroc(y, [s for _, s, _ in loaded], n_boot=args.n_boot)}  # fmt: skip
            if variant != "clip" and "clip" in args.variants:
                base = [_scores(f)[1] for f in _score_files(args, "clip", seeds, name)]
                entry["vs_clip"] = bootstrap_mean_auroc(
                    y, [s for _, s, _ in loaded], baseline=base, n_boot=args.n_boot
                )
            row[name] = entry
        ratios = [r["beats"]["median_record_ratio"] for r in runs]
        row["beat_ratio"] = {"mean": float(np.mean(ratios)), "values": ratios}
        row["beat_cosine"] = {"mean": float(np.mean([r["beats"]["beat_cosine"] for r in runs]))}
        table[variant] = row
    return table


def markdown(args, table: dict) -> str:
    """The ablation table in Markdown."""
    head = (f"| variant | zero-shot super (fold {args.test_fold}) | probe 1 % | probe 10 % | "
            "sentence->beat max/min (median record) | beat cosine |")  # fmt: skip
    lines = [head, "|---|---|---|---|---|---|"]
    for variant, row in table.items():
        cells = []
        for name in ("zeroshot", "probe_1", "probe_10"):
            e = row[name]
            cell = f"{e['mean']:.3f} ± {e['sd']:.3f} [{e['ci']['lo']:.3f}, {e['ci']['hi']:.3f}]"
            if "vs_clip" in e:
                d = e["vs_clip"]
                cell += f"; Δ vs CLIP {d['value']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
            cells.append(cell)
        lines.append(f"| {variant} | " + " | ".join(cells)
                     + f" | {row['beat_ratio']['mean']:.2f} | {row['beat_cosine']['mean']:.3f} |")  # fmt: skip
    n = len(next(iter(table.values()))["seeds"])
    lines += ["", f"Mean ± sd over {n} seeds; [95 % bootstrap interval of the seed mean, {args.n_boot} resamples "
              f"of the fold-{args.test_fold} records]; Δ: paired difference to CLIP-only on the same resamples. "
              f"Probe: mean of {args.draws} label draws per seed."]  # fmt: skip
    return "\n".join(lines) + "\n"


def figure(args, table: dict, path: Path) -> None:
    """Bars (seed mean, 95 % interval) per metric and variant, seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [
        ("zeroshot", "zero-shot super-class"),
        ("probe_1", "linear probe 1 %"),
        ("probe_10", "linear probe 10 %"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), constrained_layout=True)
    for ax, (key, title) in zip(axes, names):
        for k, row in enumerate(table.values()):
            e = row[key]
            ax.bar(k, e["mean"], color=f"C{k}", alpha=0.75)
            ax.errorbar(
                k,
                e["mean"],
                yerr=[[e["mean"] - e["ci"]["lo"]], [e["ci"]["hi"] - e["mean"]]],
                color="k",
                capsize=4,
            )
            ax.plot([k] * len(e["values"]), e["values"], "o", color="k", ms=3)
        lo = min(r[key]["ci"]["lo"] for r in table.values())
        ax.set(
            xticks=range(len(table)), xticklabels=list(table), title=title, ylim=(max(0.0, lo - 0.05), 1.0)
        )
        ax.tick_params(axis="x", rotation=20)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"macro AUROC, fold {args.test_fold}")
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from melp.eval.outputs import write_json
    from melp.pipeline import DemoConfig, check_root, prepare_stage, require_training_extra, text_stage

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", default="melp-ablation", help="output folder (resumes a previous run)")
    p.add_argument("--root", default=None, help="PTB-XL root (default: the repo's data/ptbxl-mini)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44], help="pretraining seeds")
    p.add_argument("--draws", type=int, default=3, help="label draws of each probe fraction")
    p.add_argument("--probe-seed", type=int, default=42, help="seed of the first label draw")
    p.add_argument("--select-fold", type=int, default=8)
    p.add_argument("--test-fold", type=int, default=9)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--set", nargs="*", default=[], help="extra pretraining overrides for every variant")
    p.add_argument(
        "--fast", action="store_true", help="a smoke test: the demo's --fast sizes (seconds per run)"
    )
    args = p.parse_args(argv)
    require_training_extra()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = DemoConfig(out=out, root=args.root, select_fold=args.select_fold, test_fold=args.test_fold,
                      fast=args.fast).resolved()  # fmt: skip
    store, train_folds = prepare_stage(base, check_root(base), out)
    text_dir = out / "text_lm"
    if not (text_dir / "config.json").exists():  # one text model for every run
        text_stage(base, store, train_folds, out)
    results = []
    for variant in args.variants:
        for seed in args.seeds:
            results.append(run_one(variant, seed, args, base, store, text_dir, train_folds))
    table = summarise(args, results)
    write_json(out / "ablation.json", {"table": table, "runs": results, "args": vars(args)})
    (out / "ablation.md").write_text(markdown(args, table))
    figure(args, table, out / "ablation.png")
    print("\n" + markdown(args, table))
    print(f"wrote {out / 'ablation.json'}, {out / 'ablation.md'} and {out / 'ablation.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
