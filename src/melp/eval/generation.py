"""Report generation from ECGs, scored with BLEU-4 (sacrebleu) and ROUGE-L (rouge-score)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melp.data.datasets import PretrainDataset, batches, check_input
from melp.eval.features import eval_mode, model_device, model_normalize, progress
from melp.eval.outputs import write_json
from melp.eval.zeroshot import require_text_tower
from melp.models.generation import MAX_LENGTH

log = logging.getLogger(__name__)

__all__ = ["text_scores", "generate_reports", "run_generation"]


def text_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU-4 (sacrebleu, 0-100, default 13a tokenisation) and mean ROUGE-L F1 (0-1).

    One reference per hypothesis. Raises ValueError on length mismatch.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} generated reports for {len(references)} references")
    import sacrebleu
    from rouge_score import rouge_scorer

    bleu = sacrebleu.corpus_bleu(hypotheses, [references])
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rouge = [scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(hypotheses, references)]
    return {
        "bleu4": float(bleu.score),
        "rougeL": float(np.mean(rouge)) if rouge else float("nan"),
        "n": len(hypotheses),
    }


def generate_reports(
    model: Any,
    store: Any,
    rows: np.ndarray,
    strategy: str = "beam",
    max_length: int = MAX_LENGTH,
    batch_size: int = 32,
    normalize: str | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """Generate a report for each of ``rows``: DataFrame with columns id, report (true), generated."""
    require_text_tower(model, "report generation")
    check_input(store, model.config["ecg"])
    device = model_device(model)
    ds = PretrainDataset(store, np.asarray(rows), normalize=model_normalize(model, normalize), train=False)
    out = []
    with eval_mode(model):
        n_batches = -(-len(ds) // batch_size)
        for batch in progress(batches(ds, batch_size), n_batches, f"generate ({strategy})", "batch"):
            texts = model.generate(
                batch["ecg"].to(device),
                strategy=strategy,
                max_length=max_length,
                lengths=batch["length"].to(device),
                **kwargs,
            )
            out += [
                {"id": i, "report": r, "generated": g} for i, r, g in zip(batch["id"], batch["report"], texts)
            ]
    return pd.DataFrame(out, columns=["id", "report", "generated"])


def run_generation(
    model: Any,
    store: Any,
    rows: np.ndarray,
    out: str | Path | None = None,
    strategy: str = "beam",
    max_length: int = MAX_LENGTH,
    batch_size: int = 32,
    normalize: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Generate and score; writes ``OUT/generation.csv`` (id, report, generated) and ``generation.json``."""
    table = generate_reports(model, store, rows, strategy, max_length, batch_size, normalize, **kwargs)
    res = {
        "strategy": strategy,
        "max_length": max_length,
        **text_scores(table["generated"].tolist(), table["report"].tolist()),
    }
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        table.to_csv(Path(out) / "generation.csv", index=False)
        write_json(Path(out) / "generation.json", res)
    log.info(
        "generation (%s): BLEU-4 %.2f, ROUGE-L %.3f on %d reports",
        strategy,
        res["bleu4"],
        res["rougeL"],
        res["n"],
    )
    res["examples"] = table.head(5).to_dict(orient="records")
    return res
