"""The training step reads no device value (profiler event counts), the device-side monitor reports
what a host-side computation gives, and zero loss weights take exactly their modules out of training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.profiler import ProfilerActivity, profile

import melp
from melp.losses import MELPLoss
from melp.train.datamodule import PretrainCollate
from melp.train.optim import build_optimizer
from melp.train.step import StepMonitor, train_step, unused_parameters
from melp.train.syncs import classify, count_syncs

DATA = Path(__file__).parents[1] / "data"
REPORTS = [
    "sinus rhythm. normal ecg.",
    "atrial fibrillation. left axis deviation. abnormal ecg.",
    "sinus bradycardia.",
    "st elevation. possible infarct. abnormal",
]


def _batch(collate: PretrainCollate, b: int, seed: int = 0) -> dict:
    """b items as the pretraining dataset gives them (one of every 4 records is 6 s of 10: padded)."""
    g = torch.Generator().manual_seed(seed)
    items = [
        {
            "ecg": torch.randn(12, 1000, generator=g),
            "length": 600 if i % 4 == 2 else 1000,
            "report": REPORTS[i % 4],
        }
        for i in range(b)
    ]
    return collate(items)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return melp.create_model("melp-test")


@pytest.mark.parametrize("sparse", [False, True])
def test_library_step_makes_no_host_sync_and_op_count_is_flat_in_batch(model, sparse, monkeypatch):
    monkeypatch.setitem(model.config["decoder"], "sparse_logits", sparse)
    collate = PretrainCollate.for_model(model)
    loss_fn = MELPLoss()  # all three terms
    opt = build_optimizer(model, 1e-3, 0.1, (0.9, 0.95), 1e-8)
    monitor = StepMonitor()
    ops = {}
    for b in (4, 8):
        batch = _batch(collate, b)
        train_step(model, loss_fn, opt, batch, monitor, 0)  # warm-up: optimizer state
        r = count_syncs(lambda batch=batch: train_step(model, loss_fn, opt, batch, monitor, 1))
        assert r.syncs == 0, f"B={b}: {r.by_op} inside {r.where}"
        assert r.by_op["aten::item"] == 0
        ops[b] = r.ops
    assert ops[4] == ops[8], ops  # no per-sample Python loop anywhere in the step
    assert monitor.read().batches == 4  # the monitor saw every step


def test_sync_counter_sees_item_and_boolean_masks():
    """The counter itself: .item() and a boolean-mask index are syncs, the fused optimizer's CPU
    step-counter reads are not."""
    x = torch.randn(8)
    r = count_syncs(lambda: (x.sum().item(), x[x > 0]))
    assert r.syncs == 2 and r.by_op["aten::nonzero"] == 1 and r.by_op["aten::_local_scalar_dense"] == 1
    p = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.AdamW([p], fused=True)
    p.grad = torch.ones(3)
    opt.step()
    r = count_syncs(opt.step)
    assert r.syncs == 0 and r.cpu_optimizer_reads == 1


def test_monitor_means_flags_and_first_bad_step():
    mon = StepMonitor(("scale",))
    rows = [(1.0, 2.0, 0.5), (3.0, 4.0, 1.5), (5.0, float("nan"), 2.5)]
    for step, (c, cap, beat) in enumerate(rows):
        losses = {k: torch.tensor(v) for k, v in zip(("clip", "caption", "beat"), (c, cap, beat))}
        losses["total"] = losses["clip"] + losses["caption"] + losses["beat"]
        mon.update(losses, step + 10, {"scale": torch.tensor(float(step))})
        if step == 1:  # a look (as at a checkpoint) changes nothing
            look = mon.read(reset=False)
            assert look.losses["clip"] == pytest.approx(2.0) and look.first_bad_step is None
    rep = mon.read()
    assert rep.losses["clip"] == pytest.approx(3.0) and rep.losses["beat"] == pytest.approx(1.5)
    assert math.isnan(rep.losses["caption"]) and rep.extras["scale"] == pytest.approx(1.0)
    assert rep.bad_terms == ["caption", "total"] and rep.first_bad_step == 12 and rep.batches == 3
    assert not mon.pending and mon.read().batches == 0  # reset after a read
    # what every rank would send: the gathered rows are reduced (sum, max, min) correctly
    mon.update(
        {k: torch.tensor(1.0) for k in ("clip", "caption", "beat", "total")}, 5, {"scale": torch.tensor(2.0)}
    )
    other = StepMonitor(("scale",))
    inf = torch.tensor(float("inf"))
    other.update({k: inf for k in ("clip", "caption", "beat", "total")}, 7, {"scale": torch.tensor(4.0)})
    other_row = _packed(other)
    rep = mon.read(lambda t: torch.stack([t, other_row]))  # (K,) -> (2, K): this rank and another
    assert (
        rep.first_bad_step == 7 and rep.bad_terms == ["clip", "caption", "beat", "total"] and rep.batches == 2
    )
    assert rep.extras["scale"] == pytest.approx(3.0)


def _packed(mon: StepMonitor) -> torch.Tensor:
    """The vector ``mon.read`` would send to the gather (captured through a recording gather)."""
    box = {}

    def record(t):
        box["t"] = t
        return t[None]

    mon.read(record)
    return box["t"]


EXPECT_UNUSED = {
    (1.0, 2.0, 0.2): set(),
    (1.0, 2.0, 0.0): {"sent_proj"},
    (1.0, 0.0, 0.2): {"decoder", "caption_pooler", "caption_norm"},
    (0.0, 2.0, 0.2): {"text_proj", "logit_scale"},
    (1.0, 0.0, 0.0): {"decoder", "caption_pooler", "caption_norm", "sent_proj"},
}


@pytest.mark.parametrize("weights", list(EXPECT_UNUSED))
def test_zero_weights_leave_exactly_their_modules_unused(model, weights):
    batch = _batch(PretrainCollate.for_model(model), 4)
    names = unused_parameters(model, MELPLoss(*weights), batch)
    assert {n.split(".")[0] for n in names} == EXPECT_UNUSED[weights]
    # every parameter of those modules is in the list (nothing of them is half-trained)
    for top in EXPECT_UNUSED[weights]:
        owned = {n for n, p in model.named_parameters() if n.split(".")[0] == top and p.requires_grad}
        assert owned <= set(names)
    assert model.training  # the probe restores the modes


class _ProfileSteps(Callback):
    """Profile every training batch from on_train_batch_start to on_train_batch_end (callbacks run
    before the module's own on_train_batch_end, where the monitor is read on logging steps)."""

    def __init__(self):
        self.counts, self._prof = {}, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._prof = profile(activities=[ProfilerActivity.CPU])
        self._prof.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._prof.__exit__(None, None, None)
        self.counts[trainer.global_step] = classify(self._prof.events())


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from melp.data.readers.ptbxl import subset_root
    from melp.data.store import prepare

    tmp = tmp_path_factory.mktemp("step")
    root = subset_root(DATA / "ptbxl-mini", tmp / "root", per_fold=2)
    prepare("ptbxl", root, tmp / "store", workers=0, progress=False)
    return tmp / "store"


def test_lightning_training_batches_make_no_host_sync(store, tmp_path):
    """Through ``pretrain``: training_step + backward + optimizer + Lightning's own bookkeeping
    of every batch, logging steps included, read nothing from the device."""
    from melp.train.config import apply_overrides, load_config
    from melp.train.run import pretrain

    cfg = load_config("melp-tiny")
    cfg.model.overrides = {}
    cfg = apply_overrides(
        cfg,
        [
            f"data.store={store}",
            f"out={tmp_path}",
            "model.name=melp-test",
            "model.freeze=[]",
            "model.cache_text=false",  # the CPU-budget text cache reads token ids on the host
            "data.batch_size=4",
            "trainer.max_steps=4",
            "trainer.log_every_n_steps=2",
            "trainer.progress_bar=false",
            "val.sets=[]",
        ],
    )
    prof = _ProfileSteps()
    summary = pretrain(cfg, callbacks=[prof])
    assert summary["global_step"] == 4 and sorted(prof.counts) == [1, 2, 3, 4]
    for step, r in prof.counts.items():
        assert r.syncs == 0 and r.by_op["aten::item"] == 0, f"step {step}: {r.by_op} inside {r.where}"
