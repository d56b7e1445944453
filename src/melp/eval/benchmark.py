"""`melp benchmark`: the paper's evaluation suite in one command, comparable with the published table.

Protocol (spec §1-§7):

* **zero-shot** on the six test sets: PTB-XL super-class, sub-class, form and rhythm (fold 10), CPSC
  2018 / ICBEB and Chapman / CSN (the published ``test`` splits), macro AUROC with bootstrap CIs;
* **linear probe** at 1 / 10 / 100 % of the labelled training records on the same six tasks (PTB-XL:
  train folds 1-8, val fold 9; CPSC and CSN: the published splits); the 1 % and 10 % probes are
  repeated over ``draws`` label draws (seeds ``seed, seed + 1, ...``) and reported as mean +/- sd;
* **test sets never shrink**: the number of labelled test records of every set is printed and
  checked against the published split sizes; on a complete dataset a difference is an error (the
  usual cause: records with a flat lead rejected by ``prepare``; the paper keeps them, so prepare
  benchmark stores with ``--allow-flat-leads``); on a partial download it is a note;
* **ICBEB window**: the paper keeps the first 2,500 samples (5 s at 500 Hz) of each CPSC record and
  zero-pads to 10 s; the benchmark does the same (``icbeb_window_s``), with our padding mask, and
  also reports the paper's own treatment (padding normalised with the signal, no mask) so the
  effect of the mask is visible.

PTB-XL stores without fold 10 (PTB-XL mini) use fold 9 as the test fold, with the validation split
sizes as reference; this is said in the results. Outputs in ``OUT``: ``results.json``,
``results.csv`` (one row per number), ``results.md`` (the paper's layout, published numbers beside
ours, labelled as such) and ``benchmark.png`` (per-set bars with 95 % CIs), plus every single
evaluation's own files under ``zeroshot/`` and ``probe/``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("melp.benchmark")

__all__ = ["BenchmarkConfig", "SETS", "PUBLISHED", "run_benchmark"]

# benchmark set -> (dataset argument, task name in the store, display name)
SETS: dict[str, tuple[str, str, str]] = {
    "ptbxl_super": ("ptbxl", "super_class", "PTBXL-Super"),
    "ptbxl_sub": ("ptbxl", "sub_class", "PTBXL-Sub"),
    "ptbxl_form": ("ptbxl", "form", "PTBXL-Form"),
    "ptbxl_rhythm": ("ptbxl", "rhythm", "PTBXL-Rhythm"),
    "cpsc": ("cpsc", "icbeb", "CPSC2018"),
    "chapman": ("chapman", "chapman", "CSN"),
}

# labelled records of the published test and validation splits (spec §1.2)
EXPECTED = {
    "test": {"ptbxl_super": 2158, "ptbxl_sub": 2158, "ptbxl_form": 880, "ptbxl_rhythm": 2098, "cpsc": 1376,
             "chapman": 4620},
    "val": {"ptbxl_super": 2146, "ptbxl_sub": 2146, "ptbxl_form": 901, "ptbxl_rhythm": 2100, "cpsc": 551,
            "chapman": 1860},
}  # fmt: skip

PUBLISHED: dict[str, Any] = {
    "source": "as reported for MELP (Wang, Xu, Yu, ICML 2025) and MERL (Liu et al., ICML 2024); quoted from "
    "secondary sources (the papers' tables as cited in this project's issue tracker), not re-measured here",
    "zeroshot": {
        "MELP (published)": {"average": 79.0},
        "MERL (published)": {"ptbxl_super": 74.2, "ptbxl_sub": 75.7, "ptbxl_form": 65.9, "ptbxl_rhythm": 78.5,
                             "cpsc": 82.8, "chapman": 74.4, "average": 75.2},
    },
    "probe": {
        "MELP (published)": {
            "0.01": {"ptbxl_super": 87.63, "ptbxl_rhythm": 87.72, "cpsc": 82.05, "chapman": 77.65},
            "1": {"ptbxl_super": 89.44, "ptbxl_rhythm": 93.66, "cpsc": 92.49, "chapman": 90.25},
        },
    },
}  # fmt: skip


@dataclass
class BenchmarkConfig:
    """Settings of a benchmark run (defaults = the paper's protocol)."""

    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    draws: int = 3  # label draws of every fraction < 1
    probe: bool = True
    n_boot: int = 1000
    seed: int = 42
    icbeb_window_s: float = 5.0  # the paper's 2,500 samples at 500 Hz
    leads: tuple[str, ...] | None = None  # evaluate with only these leads (others masked)
    batch_size: int = 128
    head_epochs: int = 100
    figure_formats: tuple[str, ...] = ("png",)


def _test_portion(dataset: str, store) -> tuple[np.ndarray, str, str]:
    """(test rows, which published split they stand for: "test"/"val", a description)."""
    if dataset == "ptbxl":
        folds = {int(f) for f in store.manifest["fold"].dropna()}
        if 10 in folds:
            return store.select(folds=[10]), "test", "fold 10"
        if 9 not in folds:
            raise ValueError(f"{store.path}: a PTB-XL store needs fold 10 (or 9 for PTB-XL mini)")
        return (
            store.select(folds=[9]),
            "val",
            "fold 9 (no fold 10 in this store: it stands in for the test fold)",
        )
    return store.select(split="test"), "test", "published test split"


def _count_note(name: str, store, n: int, split: str) -> str:
    """A line on the test set's size. ValueError when records were rejected from a store that is
    otherwise complete and the set is smaller than the published one (it shrank); a smaller set
    without rejects is a partial dataset (a note)."""
    want = EXPECTED[split][name]
    counts = store.meta.get("counts", {})
    line = f"{name}: {n} labelled {split} records (published split: {want})"
    if n == want:
        return line
    rejected = counts.get("rejected", 0)
    reasons = ", ".join(f"{k} {v}" for k, v in counts.get("rejected_by_reason", {}).items())
    flat = counts.get("rejected_by_reason", {}).get("flat lead", 0)
    hint = "; prepare benchmark stores with --allow-flat-leads (the paper keeps flat leads)" if flat else ""
    if n < want and rejected and not counts.get("missing", 0):
        raise ValueError(
            f"{store.path}: the {split} set of {name} shrank: {n} labelled records, the published split has "
            f"{want}; the store rejected {rejected} records ({reasons}){hint}"
        )
    extra = f"; the store rejected {rejected} records ({reasons}){hint}" if rejected else ""
    return f"{line}: a partial dataset{extra}"


def _probe_set(model, store, task, dataset, cfg, out, bank, leads) -> dict:
    from melp.eval.probe import HeadConfig, run_probe
    from melp.eval.splits import choose_splits

    # PTB-XL: train folds 1-8, val 9, test 10 (without fold 10: test 9, val = 10 % of the 1-8 patients);
    # CPSC and CSN: the published split column
    splits = choose_splits(store)
    res: dict[str, Any] = {"splits": splits.description}
    for frac in cfg.fractions:
        seeds = [cfg.seed] if frac >= 1 else [cfg.seed + k for k in range(cfg.draws)]
        values, cis = [], []
        for seed in seeds:
            r = run_probe(model, store, task, splits, (frac,), out=out / "probe", n_boot=cfg.n_boot if seed == cfg.seed else 0,
                          config=HeadConfig(seed=seed, epochs=cfg.head_epochs), bank=bank, leads=leads, figure=False,
                          name=f"probe_seed{seed}")  # fmt: skip
            summary = r["fractions"][f"{frac:g}"]
            values.append(summary["macro_auroc"])
            cis.append(summary.get("ci", {}).get("auroc"))
        res[f"{frac:g}"] = {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                            "draws": values, "seeds": seeds, "ci_first_draw": cis[0],
                            "n_train": summary["n_train"]}  # fmt: skip
    return res


def run_benchmark(
    model: Any, stores: dict[str, Any], out: str | Path, cfg: BenchmarkConfig | None = None
) -> dict:
    """Run the suite on the given stores (``{"ptbxl": ECGStore, "cpsc": ..., "chapman": ...}``; an
    absent or None entry is skipped with a note). Returns the results (also ``OUT/results.json``)."""
    from melp.data.tasks import resolve_task
    from melp.eval.features import FeatureBank, progress
    from melp.eval.outputs import write_json
    from melp.eval.zeroshot import require_text_tower, run_zeroshot

    cfg = cfg or BenchmarkConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    leads = list(cfg.leads) if cfg.leads else None
    results: dict[str, Any] = {"config": asdict(cfg), "sets": {}, "notes": [], "published": PUBLISHED}
    has_text = getattr(model, "text", "") is not None
    if not has_text:
        results["notes"].append("the model has no text tower: zero-shot skipped, linear probe only")
    todo = [(name, *SETS[name]) for name in SETS if stores.get(SETS[name][0]) is not None]
    for dataset in sorted({d for d, *_ in SETS.values()} - {d for _, d, *_ in todo}):
        results["notes"].append(f"{dataset}: no store given, its sets are skipped")
    banks: dict[tuple, Any] = {}
    for name, dataset, task_name, _ in progress(todo, len(todo), "benchmark", "set"):
        store = stores[dataset]
        task = resolve_task(store, task_name)
        rows, split, what = _test_portion(dataset, store)
        window = round(cfg.icbeb_window_s * store.rate) if dataset == "cpsc" and cfg.icbeb_window_s else None
        key = (dataset, window, False)
        if key not in banks:
            banks[key] = FeatureBank(model, store, cfg.batch_size, leads=leads, window=window)
        bank = banks[key]
        entry: dict[str, Any] = {"store": str(store.path), "task": task, "test": what}
        if has_text:
            require_text_tower(model, "zero-shot classification")
            zs = run_zeroshot(model, store, task, rows, out=out / "zeroshot", n_boot=cfg.n_boot, seed=cfg.seed,
                              bank=bank, leads=leads, name=f"zeroshot_{name}")  # fmt: skip
            entry["zeroshot"] = {"macro_auroc": zs["macro_auroc"], "ci": zs.get("ci", {}).get("auroc"),
                                 "n_test": zs["n_records"]}  # fmt: skip
            n_test = zs["n_records"]
            if window is not None:  # the paper's unmasked window, to show what the mask changes
                pkey = (dataset, window, True)
                banks.setdefault(pkey, FeatureBank(model, store, cfg.batch_size, leads=leads, window=window,
                                                   padding_as_signal=True))  # fmt: skip
                paper = run_zeroshot(model, store, task, rows, n_boot=0, bank=banks[pkey], leads=leads)
                entry["zeroshot_paper_window"] = {"macro_auroc": paper["macro_auroc"]}
        else:
            from melp.data.datasets import DownstreamDataset

            n_test = len(DownstreamDataset(store, task, rows))
        entry["n_test"] = n_test
        note = _count_note(name, store, n_test, split)
        print(f"    {note}", flush=True)
        entry["count_note"] = note
        if cfg.probe:
            entry["probe"] = _probe_set(model, store, task, dataset, cfg, out, bank, leads)
        results["sets"][name] = entry
    zs = [e["zeroshot"]["macro_auroc"] for e in results["sets"].values() if "zeroshot" in e]
    results["zeroshot_average"] = float(np.mean(zs)) if len(zs) == len(SETS) else None
    write_json(out / "results.json", results)
    _write_csv(results, out / "results.csv")
    (out / "results.md").write_text(markdown_table(results))
    benchmark_figure(results, out / "benchmark.png", formats=cfg.figure_formats)
    return results


def _write_csv(results: dict, path: Path) -> None:
    import pandas as pd

    rows = []
    for name, e in results["sets"].items():
        if "zeroshot" in e:
            ci = e["zeroshot"]["ci"] or {}
            rows.append({"set": name, "metric": "zeroshot_macro_auroc", "fraction": None, "value": e["zeroshot"]["macro_auroc"],
                         "sd": None, "lo": ci.get("lo"), "hi": ci.get("hi"), "n_test": e["n_test"]})  # fmt: skip
        for frac, p in (e.get("probe") or {}).items():
            if frac == "splits":
                continue
            ci = p["ci_first_draw"] or {}
            rows.append({"set": name, "metric": "probe_macro_auroc", "fraction": float(frac), "value": p["mean"],
                         "sd": p["sd"], "lo": ci.get("lo"), "hi": ci.get("hi"), "n_test": e["n_test"]})  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False, float_format="%.5f")


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def markdown_table(results: dict) -> str:
    """The paper's two tables (zero-shot, linear probe), ours beside the published numbers (in %)."""
    sets = results["sets"]
    names = list(SETS)
    head = "| | " + " | ".join(SETS[n][2] for n in names) + " | Average |"
    sep = "|---" * (len(names) + 2) + "|"
    ours = [sets.get(n, {}).get("zeroshot", {}).get("macro_auroc") for n in names]
    avg = results.get("zeroshot_average")
    lines = ["## Zero-shot classification (macro AUROC, %)", "", head, sep,
             "| this model | " + " | ".join(_pct(v) for v in ours) + f" | {_pct(avg)} |"]  # fmt: skip
    for label, vals in PUBLISHED["zeroshot"].items():
        cells = [f"{vals[n]:.1f}" if n in vals else "-" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {vals.get('average', '-')} |")
    if "cpsc" in sets and "zeroshot_paper_window" in sets["cpsc"]:
        lines += ["", f"CPSC2018 with the paper's unmasked window (padding normalised with the signal, no mask): "
                  f"{_pct(sets['cpsc']['zeroshot_paper_window']['macro_auroc'])} (masked: {_pct(ours[names.index('cpsc')])})."]  # fmt: skip
    fracs = [f for f in ("0.01", "0.1", "1") if any(f in (sets.get(n, {}).get("probe") or {}) for n in names)]
    if fracs:
        lines += ["", "## Linear probe (macro AUROC, %; 1 % and 10 %: mean +/- sd over label draws)", "",
                  "| | " + " | ".join(f"{SETS[n][2]} {float(f) * 100:g} %" for n in names for f in fracs) + " |",
                  "|---" * (len(names) * len(fracs) + 1) + "|"]  # fmt: skip
        cells = []
        for n in names:
            for f in fracs:
                p = (sets.get(n, {}).get("probe") or {}).get(f)
                cells.append(
                    "-"
                    if p is None
                    else f"{100 * p['mean']:.1f}" + (f" +/- {100 * p['sd']:.1f}" if p["sd"] else "")
                )
        lines.append("| this model | " + " | ".join(cells) + " |")
        for label, by_frac in PUBLISHED["probe"].items():
            row = [
                f"{by_frac[f][n]:.2f}" if f in by_frac and n in by_frac[f] else "-"
                for n in names
                for f in fracs
            ]
            lines.append(f"| {label} | " + " | ".join(row) + " |")
    lines += ["", f"Published numbers: {PUBLISHED['source']}.", ""]
    lines += [f"* {e['count_note']}" for e in sets.values()] + [f"* {n}" for n in results["notes"]]
    return "\n".join(lines) + "\n"


def benchmark_figure(results: dict, path: str | Path, formats=("png",)) -> list[Path]:
    """Per-set bars of the zero-shot AUROC (95 % bootstrap CI) and of the probe at each fraction
    (+/- sd over draws), published MERL zero-shot numbers as markers."""
    from melp.eval.figures import _plt, _save

    plt = _plt()
    sets = results["sets"]
    names = [n for n in SETS if n in sets]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    x = np.arange(len(names))
    ax = axes[0]
    if names and all("zeroshot" in sets[n] for n in names):
        vals = np.array([sets[n]["zeroshot"]["macro_auroc"] for n in names], float)
        ci = [sets[n]["zeroshot"]["ci"] or {} for n in names]
        err = np.array([[v - c.get("lo", v), c.get("hi", v) - v] for v, c in zip(vals, ci)]).T
        ax.bar(x, vals, yerr=err, color="C0", capsize=3, label="this model (95 % CI)")
        merl = PUBLISHED["zeroshot"]["MERL (published)"]
        ax.scatter(
            x,
            [merl[n] / 100 for n in names],
            color="k",
            marker="_",
            s=200,
            label="MERL (published)",
            zorder=3,
        )
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no zero-shot results", ha="center", transform=ax.transAxes)
    ax.set(xticks=x, ylim=(0.4, 1.0), ylabel="macro AUROC", title="zero-shot")
    ax.set_xticklabels([SETS[n][2] for n in names], rotation=20, fontsize=8)
    ax = axes[1]
    fracs = [f for f in ("0.01", "0.1", "1") if any(f in (sets[n].get("probe") or {}) for n in names)]
    width = 0.8 / max(len(fracs), 1)
    for j, f in enumerate(fracs):
        p = [(sets[n].get("probe") or {}).get(f) for n in names]
        ax.bar(x + (j - (len(fracs) - 1) / 2) * width, [q["mean"] if q else np.nan for q in p], width,
               yerr=[q["sd"] if q else 0 for q in p], capsize=2, label=f"{float(f) * 100:g} %", color=f"C{j + 1}")  # fmt: skip
    ax.set(xticks=x, ylim=(0.4, 1.0), title="linear probe (mean +/- sd over label draws)")
    ax.set_xticklabels([SETS[n][2] for n in names], rotation=20, fontsize=8)
    if fracs:
        ax.legend(fontsize=8, title="labels", title_fontsize=8)
    fig.tight_layout()
    return _save(fig, path, formats)
