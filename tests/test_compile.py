"""torch.compile: the training forward and the three losses trace as one graph (no break), and
``model.compile: true`` trains like eager mode.

Cost on 2 CPU cores: tracing (``torch._dynamo.explain``, no code generation) takes a few seconds;
the training test uses the ``aot_eager`` backend (dynamo + AOT autograd, ~10 s to compile).
Inductor itself (the default ``model.compile_backend``) is exercised by
``benchmarks/bench_train_step.py --compile``; its first compile of ``melp-test`` takes minutes on
this machine, too long for CI.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch._dynamo as dynamo

import melp
from melp.losses import MELPLoss
from melp.losses.beat import beat_loss
from melp.losses.caption import caption_loss
from melp.losses.clip import clip_loss
from melp.train.datamodule import PretrainCollate
from melp.train.step import forward_and_loss, model_inputs

DATA = Path(__file__).parents[1] / "data"
REPORTS = [
    "sinus rhythm. normal ecg.",
    "atrial fibrillation. left axis deviation. abnormal ecg.",
    "sinus bradycardia.",
    "st elevation. possible infarct. abnormal",
]


def _breaks(fn, *args, **kwargs) -> list[str]:
    """Graph-break reasons of tracing ``fn`` with static shapes, then with every dimension
    dynamic (as after a recompile for a new report length): both must give one graph."""
    dynamo.reset()
    ex = dynamo.explain(fn)(*args, **kwargs)
    reasons = [str(r.reason) for r in ex.break_reasons] + ([] if ex.graph_count == 1 else ["graphs"])
    dynamo.reset()
    try:  # fullgraph=True raises at the first break; the "eager" backend generates no code
        torch.compile(fn, backend="eager", fullgraph=True, dynamic=True)(*args, **kwargs)
    except torch._dynamo.exc.Unsupported as err:
        reasons.append(f"dynamic shapes: {str(err).splitlines()[0]}")
    return reasons


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return melp.create_model("melp-test").train()


def _inputs(model) -> dict:
    g = torch.Generator().manual_seed(0)
    batch = PretrainCollate.for_model(model)(  # one record of 6 s in a 10 s window (padding mask)
        [
            {"ecg": torch.randn(12, 1000, generator=g), "length": 1000 - 400 * (i == 2), "report": r}
            for i, r in enumerate(REPORTS)
        ]
    )
    return model_inputs(batch)


@pytest.mark.parametrize("sparse", [False, True])
def test_forward_and_losses_trace_as_one_graph(model, sparse, monkeypatch):
    monkeypatch.setitem(model.config["decoder"], "sparse_logits", sparse)
    inputs = _inputs(model)
    assert ("caption_index" in inputs) == sparse and "lengths" in inputs
    assert _breaks(forward_and_loss, model, MELPLoss(), **inputs) == []


def test_encoder_poolers_and_each_loss_trace_without_graph_breaks(model):
    inputs = _inputs(model)
    tokens, mask = model.ecg_tokens(inputs["ecg"], inputs["lengths"])
    assert mask is not None and not mask.all()
    assert _breaks(model.ecg_encoder, inputs["ecg"], inputs["lengths"]) == []
    assert _breaks(model.beat_pooler, tokens, mask) == []
    assert _breaks(model.caption_pooler, tokens, mask) == []
    out = model(**inputs)
    ids = out["text_ids"]
    assert _breaks(clip_loss, out["ecg_latent"], out["text_latent"], out["logit_scale"], text_ids=ids) == []
    assert _breaks(caption_loss, out["caption_logits"], out["caption_targets"], out["pad_id"]) == []
    assert _breaks(beat_loss, out["beats"], out["sentences"], out["sentence_mask"], text_ids=ids) == []


def test_a_host_read_is_reported_as_a_graph_break(model):
    """The check above can fail: a .item() in the traced code is a break."""

    def with_item(x):
        return model.ecg_encoder(x)[0] * float(x.abs().max())

    assert _breaks(with_item, torch.randn(2, 12, 1000))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from melp.data.readers.ptbxl import subset_root
    from melp.data.store import prepare

    tmp = tmp_path_factory.mktemp("compile")
    root = subset_root(DATA / "ptbxl-mini", tmp / "root", per_fold=2)
    prepare("ptbxl", root, tmp / "store", workers=0, progress=False)
    return tmp / "store"


def test_compiled_training_matches_eager(store, tmp_path):
    import pandas as pd

    from melp.train.config import apply_overrides, load_config
    from melp.train.run import pretrain

    def run(out, *extra):
        cfg = load_config("melp-tiny")
        cfg.model.overrides = {  # dropout off: eager and compiled draw their masks differently
            "ecg": {"dropout": 0.0, "attention_dropout": 0.0, "dropout_input": 0.0},
            "text": {
                "from_config": {
                    "hidden_size": 32,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 2,
                    "intermediate_size": 64,
                    "max_position_embeddings": 64,
                    "hidden_dropout_prob": 0.0,
                    "attention_probs_dropout_prob": 0.0,
                }
            },
        }
        cfg = apply_overrides(
            cfg,
            [
                f"data.store={store}",
                f"out={out}",
                "model.name=melp-test",
                "model.freeze=[]",
                "model.cache_text=false",
                "data.batch_size=4",
                "trainer.max_steps=3",
                "trainer.log_every_n_steps=1",
                "trainer.progress_bar=false",
                "val.sets=[]",
                *extra,
            ],
        )
        pretrain(cfg)
        log = pd.read_csv(out / "logs" / "csv" / "metrics.csv")
        return log[log["train/total"].notna()].set_index("step")

    eager = run(tmp_path / "eager")
    dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = run(tmp_path / "compiled", "model.compile=true", "model.compile_backend=aot_eager")
    # really compiled: one graph, recompiled once with a dynamic report length, no break
    assert counters["stats"]["unique_graphs"] == 2 and not counters["graph_break"], dict(
        counters["graph_break"]
    )
    assert list(compiled.index) == [0, 1, 2]
    for term in ("train/clip", "train/caption", "train/beat", "train/total"):
        err = float((eager[term] - compiled[term]).abs().max())
        assert err < 1e-4, (term, err)
