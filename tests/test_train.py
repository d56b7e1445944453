"""Training layer: typed config, schedule, resumable sampling, and short real pretraining runs."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from melp.train.checkpoint import load_checkpoint
from melp.train.config import (
    ConfigError,
    PretrainConfig,
    apply_overrides,
    from_dict,
    list_configs,
    load_config,
)
from melp.train.datamodule import IndexedDataset, ResumableSampler
from melp.train.optim import lr_factor, param_groups, warmup_cosine

DATA = Path(__file__).parents[1] / "data"


# --------------------------------------------------------------------------- config


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        apply_overrides(PretrainConfig(), ["optim.lrr=1e-3"])
    with pytest.raises(ConfigError, match=r"data\.bogus"):
        from_dict({"data": {"bogus": 1}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"optim\.lr.*float"):
        apply_overrides(PretrainConfig(), ["optim.lr=fast"])
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs.*int"):
        from_dict({"trainer": {"max_epochs": 2.5}})
    with pytest.raises(ConfigError, match=r"data\.folds\.1.*int"):
        from_dict({"data": {"folds": [1, "x"]}})
    with pytest.raises(ConfigError, match=r"trainer\.deterministic.*bool"):
        from_dict({"trainer": {"deterministic": 1}})


def test_overrides_parse_to_field_types(tmp_path):
    cfg = apply_overrides(
        PretrainConfig(),
        [
            "optim.lr=1e-4",
            "data.folds=1,2,3",
            "data.split=null",
            "model.text=minilm",
            "out=123",
            "optim.betas=[0.8,0.9]",
            "model.overrides.text.max_length=40",
            "val.batch_size=7",
        ],
    )
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.data.folds == [1, 2, 3] and cfg.data.split is None
    assert cfg.model.text == "minilm" and cfg.out == "123"  # str fields keep the raw text
    assert cfg.optim.betas == [0.8, 0.9] and cfg.val.batch_size == 7
    assert cfg.model.overrides == {"text": {"max_length": 40}}
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 0.5\n  nope: 1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*optim\.nope"):
        load_config(f)


def test_named_configs_pin_the_paper_setup():
    assert {"melp-tiny", "melp-paper"} <= set(list_configs())
    p = load_config("melp-paper")
    assert (p.optim.lr, p.optim.weight_decay, p.optim.betas) == (2e-4, 0.2, [0.9, 0.95])
    assert (p.loss.clip, p.loss.caption, p.loss.beat) == (1.0, 2.0, 0.2)
    assert (
        p.loss.soft_duplicates is False and PretrainConfig().loss.soft_duplicates is False
    )  # the paper's targets
    assert load_config("melp-tiny").loss.soft_duplicates is True  # the CPU recipe's documented deviation
    t = load_config("melp-tiny")  # the recipe trains the registered melp-tiny as it is
    assert t.model.name == "melp-tiny" and t.model.overrides == {}
    assert (p.data.batch_size, p.trainer.devices, p.trainer.precision) == (64, 4, "bf16-mixed")
    assert p.model.name == "melp-small" and p.model.text == "fuyingw/heart_bert"
    t = load_config("melp-tiny")
    assert t.model.name == "melp-tiny" and t.data.folds == [1, 2, 3, 4, 5, 6, 7]
    # checkpoint selection on fold 8; fold 9 (the final evaluation) and 10 are read by no stage
    assert all(v.folds == [8] for v in t.val.sets)
    assert not {9, 10} & set(t.data.folds)
    assert (
        t.loss.diversity == 5.0 and p.loss.diversity == 0.0
    )  # the CPU recipe's deviation; the paper's formula


# --------------------------------------------------------------------------- optimizer / schedule


def test_lr_factor_hand_values():
    # warmup 10, total 110: linear to 1 at step 9, cosine over the 100 remaining steps
    assert lr_factor(0, 110, 10) == pytest.approx(0.1)
    assert lr_factor(9, 110, 10) == pytest.approx(1.0)
    assert lr_factor(10, 110, 10) == pytest.approx(1.0)
    assert lr_factor(60, 110, 10) == pytest.approx(0.5)
    assert lr_factor(35, 110, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(110, 110, 10) == pytest.approx(0.0)
    assert lr_factor(500, 110, 10, min_ratio=0.1) == pytest.approx(0.1)


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.query = nn.Parameter(torch.zeros(2, 4))
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)

    def no_weight_decay(self):
        return {"lin.bias", "norm.weight", "norm.bias", "query"}


def test_param_groups_follow_no_weight_decay_and_scheduler_steps():
    m = _Toy()
    groups = param_groups(m, 0.2)
    by_decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in groups}
    assert by_decay[0.2] == {id(m.lin.weight)}
    assert by_decay[0.0] == {id(m.lin.bias), id(m.norm.weight), id(m.norm.bias), id(m.query)}
    opt = torch.optim.AdamW(groups, lr=1.0)
    sched = warmup_cosine(opt, total_steps=4, warmup_steps=2)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.5])


# --------------------------------------------------------------------------- sampling


def test_sampler_shards_resumes_and_pads():
    full = ResumableSampler(10, seed=3, world_size=1)
    full.start(2)
    order = list(full)
    assert sorted(order) == list(range(10))
    assert list(full) != order  # the next iter() is epoch 3: a new shuffle
    r = ResumableSampler(10, seed=3, world_size=1, encode_epoch=True)
    r.start(2, 4)
    assert list(r) == [20 + i for i in order[4:]]  # epoch 2 from its 5th sample, epoch encoded
    assert [k - 30 for k in r] == ResumableSampler(10, seed=3).indices(3)  # the offset applies once
    shards = [list(ResumableSampler(10, shuffle=False, rank=k, world_size=4)) for k in range(4)]
    assert shards == [[0, 4, 8], [1, 5, 9], [2, 6, 0], [3, 7, 1]]  # padded by wrapping
    dropped = [
        list(ResumableSampler(10, shuffle=False, rank=k, world_size=4, drop_last=True)) for k in range(4)
    ]
    assert dropped == [[0, 4], [1, 5], [2, 6], [3, 7]]


@pytest.mark.parametrize("world,drop_last", [(1, True), (1, False), (2, False), (2, True)])
def test_stream_batch_sampler_runs_epochs_back_to_back_and_resumes_anywhere(world, drop_last):
    """The run's batches are each epoch's per-rank batches, epoch after epoch, for ``total`` batches;
    restarted from any (data position, batches done) it continues the same stream, epoch ends included."""
    from melp.train.datamodule import StreamBatchSampler, advance_position, batches_per_epoch

    n, b, total = 11, 3, 9

    def make(rank, position=(0, 0), done=0):
        s = ResumableSampler(n, seed=4, rank=rank, world_size=world, drop_last=drop_last, batch_size=b,
                             encode_epoch=True)  # fmt: skip
        s.start(*position)
        return StreamBatchSampler(s, total, done)

    per = batches_per_epoch(n, b, world, drop_last)
    for rank in range(world):
        ref = list(make(rank))
        assert len(ref) == total == len(make(rank))
        want = []
        for epoch in range(total // per + 1):  # hand-built: each epoch's indices cut into batches
            idx = [epoch * n + i for i in ResumableSampler(n, seed=4, rank=rank, world_size=world,
                                                           drop_last=drop_last, batch_size=b).indices(epoch)]  # fmt: skip
            want += [idx[k : k + b] for k in range(0, len(idx), b)]
        assert ref == want[:total]
        for done in range(total + 1):
            pos = advance_position((0, 0), done, n, b, world, drop_last)
            assert list(make(rank, pos, done)) == ref[done:], done
        # an iterator stopped early and re-created continues where it stopped
        s = make(rank)
        it = iter(s)
        head = [next(it) for _ in range(per + 1)]
        assert head + list(s) == ref
    with pytest.raises(ValueError, match="batches done"):
        make(0, done=total + 1)


class _Noisy(torch.utils.data.Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return {"x": torch.rand(3), "y": float(np.random.rand()), "z": random.random()}


def test_indexed_dataset_is_deterministic_and_leaves_global_rng_alone():
    ds = IndexedDataset(_Noisy(), seed=1)
    torch.manual_seed(0)
    ref = torch.rand(2)
    torch.manual_seed(0)
    a = ds[2]
    after = torch.rand(2)
    assert torch.equal(ref, after)  # loading did not consume the global torch RNG
    b = ds[2]
    assert torch.equal(a["x"], b["x"]) and a["y"] == b["y"] and a["z"] == b["z"] and a["index"] == 2
    assert not torch.equal(ds[3]["x"], a["x"])
    c = ds[5 + 2]  # epoch 1, record 2: a new augmentation each epoch
    assert c["index"] == 2 and not torch.equal(c["x"], a["x"])


class _Augmenting(torch.utils.data.Dataset):
    """Draws from ``self.generator`` as PretrainDataset does (None = torch's global RNG)."""

    generator = None

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return {
            "x": torch.rand(4, generator=self.generator),
            "k": torch.randint(0, 9, (2,), generator=self.generator),
        }


def test_indexed_dataset_generator_path_draws_what_global_seeding_draws():
    """The per-item generator (fast path) gives the augmentation the seeded global RNG gave."""
    ds = IndexedDataset(_Augmenting(), seed=5)
    for key in (0, 3, 5 + 1, 10 + 4):
        epoch, i = divmod(key, 5)
        s = int(np.random.SeedSequence([5, epoch, i]).generate_state(1)[0])
        fast, slow = ds[key], ds._seeded_globally(i, s)
        assert torch.equal(fast["x"], slow["x"]) and torch.equal(fast["k"], slow["k"])
    assert _Augmenting.generator is None and not torch.equal(ds[0]["x"], ds[1]["x"])


# --------------------------------------------------------------------------- real short runs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store of 4 real PTB-XL mini records per fold (36; folds 1-8 train, 9 validation)."""
    from melp.data.readers.ptbxl import subset_root
    from melp.data.store import prepare

    tmp = tmp_path_factory.mktemp("train")
    root = subset_root(DATA / "ptbxl-mini", tmp / "root", per_fold=4)
    prepare("ptbxl", root, tmp / "store", workers=0, progress=False)
    return tmp / "store"


def _cfg(store: Path, out: Path, *extra: str) -> PretrainConfig:
    cfg = load_config("melp-tiny")
    return apply_overrides(
        cfg,
        [
            f"data.store={store}",
            f"out={out}",
            "model.name=melp-test",
            "data.batch_size=8",
            "data.lead_mask_p=0.25",
            "trainer.max_steps=8",
            "val.every_n_steps=4",
            "optim.lr=2e-3",
            "optim.warmup_steps=2",
            "trainer.log_every_n_steps=1",
            "trainer.progress_bar=false",
            "val.batch_size=16",
            *extra,
        ],
    )


def _weights(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.model.state_dict().items()}


@pytest.fixture(scope="module")
def full_run(store, tmp_path_factory):
    from melp.train.run import pretrain

    out = tmp_path_factory.mktemp("full")
    torch.manual_seed(0)
    return pretrain(_cfg(store, out)), out


def test_run_loss_goes_down_and_outputs_load(full_run):
    import pandas as pd

    import melp

    summary, out = full_run
    log = pd.read_csv(out / "logs" / "csv" / "metrics.csv")
    total = log["train/total"].dropna().to_numpy()
    assert len(total) == 8 and np.isfinite(total).all()
    assert total[-3:].mean() < total[:3].mean() - 0.5
    for term in ("train/clip", "train/caption", "train/beat", "val/mean_auroc", "val/super_fold8_auroc"):
        assert log[term].notna().any(), term
    assert 0.0 <= summary["best_score"] <= 1.0
    # the beat level is diagnosed at each validation, on the first validation set's records, with
    # the weights of that moment (the last one: the final weights)
    from melp.data.datasets import DownstreamDataset, select_rows
    from melp.data.store import ECGStore
    from melp.eval.beats import beat_diagnostics

    hist = summary["beat_history"]
    assert [h["step"] for h in hist] == [4, 8]
    assert log["val/beat_cosine"].dropna().tolist() == pytest.approx([h["beat_cosine"] for h in hist])
    cfg = load_config(out / "config.yaml")
    vstore = ECGStore(cfg.data.store)
    vrows = select_rows(vstore, cfg.val.sets[0].split, cfg.val.sets[0].folds, 0, "val")
    vrows = DownstreamDataset(vstore, cfg.val.sets[0].task, vrows).rows  # the labelled ones
    want = beat_diagnostics(
        summary["module"].model, vstore, vrows[: cfg.val.beat_records], normalize=cfg.data.normalize
    )
    for key in ("beat_cosine", "attention_entropy", "attention_ratio", "half_mass_frames", "qrs_hit"):
        assert hist[-1][key] == pytest.approx(want[key], abs=1e-5), key
    assert (out / "config.yaml").is_file() and load_config(out / "config.yaml").model.name == "melp-test"
    # the Lightning checkpoint holds the full training state and loads into a fresh model
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")  # weights_only: no pickled objects inside
    assert ckpt["global_step"] == 8 and "melp_state" in ckpt and ckpt["optimizer_states"]
    fresh = melp.load_model(out / "best_model")  # same architecture (incl. the compact caption vocabulary)
    fresh.load_state_dict({k[len("model.") :]: v for k, v in ckpt["state_dict"].items()})
    last = _weights(summary["module"])
    assert all(torch.equal(fresh.state_dict()[k], last[k]) for k in last)
    # the exported best model equals the best checkpoint's weights
    best = load_checkpoint(summary["best_checkpoint"])["state_dict"]
    exported = melp.load_model(out / "best_model")
    state = exported.state_dict()
    assert all(torch.equal(state[k[len("model.") :]], v) for k, v in best.items())


@pytest.mark.parametrize("stop", [2, 3])  # mid-epoch; the last batch of epoch 0 (3 batches per epoch)
def test_interrupt_and_resume_matches_uninterrupted(full_run, store, tmp_path, stop):
    from melp.train.run import pretrain

    summary, _ = full_run
    out = tmp_path / "resumed"
    torch.manual_seed(0)
    first = pretrain(_cfg(store, out, f"trainer.stop_at_step={stop}"))
    assert first["global_step"] == stop
    torch.manual_seed(123)  # a different process state must not matter
    second = pretrain(_cfg(store, out), resume="auto")
    assert second["global_step"] == 8
    ref, got = _weights(summary["module"]), _weights(second["module"])
    diff = max(float((ref[k].float() - got[k].float()).abs().max()) for k in ref)
    assert diff == 0.0, f"resumed weights differ from the uninterrupted run by {diff}"
    assert second["best_score"] == pytest.approx(summary["best_score"])
    # the CSV log covers the whole run: the rows written before the interruption are kept
    import pandas as pd

    csv_dir = out / "logs" / "csv"
    log = pd.read_csv(csv_dir / "metrics.csv")
    steps = log.loc[log["train/total"].notna(), "step"].tolist()
    assert steps == list(range(8)), steps
    assert not list(csv_dir.glob("metrics.part-*.csv"))


@pytest.mark.parametrize("log_every", [1, 100])
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(store, tmp_path, monkeypatch, log_every):
    """The device-side flag is read at logging steps and before every checkpoint: with a log
    interval longer than the run, the checkpoint of the bad step is what stops it."""
    import melp.losses
    from melp.train.run import NonFiniteLossError, pretrain

    base = melp.losses.MELPLoss
    calls = {"n": 0}

    class Exploding(base):
        def forward(self, **kw):
            out = base.forward(self, **kw)
            calls["n"] += 1
            if calls["n"] == 5:  # the 4th training step (global step 3); call 1 is the unused-parameter probe
                out["beat"] = out["beat"] * float("nan")
                out["total"] = out["clip"] + out["caption"] + out["beat"]
            return out

    monkeypatch.setattr(melp.losses, "MELPLoss", Exploding)
    with pytest.raises(NonFiniteLossError, match=r"step 3.*beat"):
        pretrain(
            _cfg(
                store,
                tmp_path,
                "trainer.ckpt_every_n_steps=1",
                "val.every_n_steps=0",
                f"trainer.log_every_n_steps={log_every}",
            )
        )
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_store_rate_mismatch_is_explained(store, tmp_path):
    from melp.train.run import pretrain

    cfg = _cfg(store, tmp_path, "model.overrides.ecg.sample_rate=500", "model.overrides.ecg.n_samples=5000")
    with pytest.raises(ValueError, match=r"--rate 500 --seconds 10"):
        pretrain(cfg)


def test_trainer_features_early_stopping_top_k_hparams_bar_devices_auto(store, tmp_path, capsys):
    """Through the CLI: --out, trainer.devices=auto, early stopping after `patience` validations
    without a new best (lr 0: the score cannot improve), the top-k checkpoints, hparams.yaml, the
    progress bar's epoch count, one 'best model exported' line."""
    import yaml

    from melp.cli import main

    out = tmp_path / "run"
    cfg = _cfg(store, tmp_path / "ignored")
    args = [
        f"{k}={v}" for k, v in (("data.store", store), ("model.name", "melp-test"), ("model.overrides", "{}"))
    ]
    code = main(
        [
            "pretrain",
            "--config",
            "melp-tiny",
            "--out",
            str(out),
            "--set",
            *args,
            f"data.batch_size={cfg.data.batch_size}",
            "trainer.max_steps=8",  # 28 records of folds 1-7, 3 steps per epoch: 3 epochs
            "val.every_n_steps=1",
            "optim.lr=0",
            "trainer.early_stopping_patience=2",
            "trainer.save_top_k=2",
            "trainer.devices=auto",
            "trainer.progress_bar=true",
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 3  # best at step 1, then 2 validations without improvement
    best = sorted(p.name for p in (out / "checkpoints").glob("best-*.ckpt"))
    assert best == ["best-step000001.ckpt", "best-step000002.ckpt"]
    assert Path(summary["best_checkpoint"]).name == "best-step000001.ckpt"
    hp = yaml.safe_load((out / "logs" / "csv" / "hparams.yaml").read_text())
    assert hp["optim"]["lr"] == 0.0 and hp["world_size"] == 1 and hp["steps_per_epoch"] == 3
    captured = capsys.readouterr()
    assert "Epoch 0/2" in captured.out and "/-2" not in captured.out  # Lightning draws on stdout
    assert "Epoch 1/2" in captured.out  # the caption follows the data epoch within the one Lightning epoch
    assert captured.out.count("best model exported") == 1


def test_missing_logger_package_and_impossible_strategy_are_explained(store, tmp_path, monkeypatch):
    import importlib.util

    from melp.train.run import pretrain

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n in ("wandb", "mlflow") else real(n, *a)
    )
    for name in ("wandb", "mlflow"):
        with pytest.raises(
            ConfigError, match=rf"'{name}' needs the {name} package: pip install 'melp\[{name}\]'"
        ):
            pretrain(_cfg(store, tmp_path, f"trainer.loggers=[csv,{name}]"))
    with pytest.raises(ConfigError, match=r"unknown logger 'neptune'"):
        pretrain(_cfg(store, tmp_path, "trainer.loggers=[neptune]"))
    with pytest.raises(ConfigError, match=r"FSDP on CUDA GPUs only.*use trainer.strategy=ddp"):
        pretrain(_cfg(store, tmp_path, "trainer.strategy=fsdp", "trainer.accelerator=cpu"))
    with pytest.raises(ConfigError, match=r"every weight is 0"):
        pretrain(_cfg(store, tmp_path, "loss.clip=0", "loss.caption=0", "loss.beat=0"))
    assert not (tmp_path / "config.yaml").exists()  # refused before any work


def test_tensorboard_logger_writes_events(full_run):
    _, out = full_run
    assert list((out / "logs" / "tb").glob("events.out.tfevents.*"))


# --------------------------------------------------------------------------- warm start from released weights


def test_pretraining_warm_starts_from_a_converted_encoder(store, tmp_path):
    """model.init = an encoder-only folder (melp convert): the ECG side starts from it, the text side
    is built from the config; data.normalize is written into the saved model's config."""
    import json

    import melp
    from melp.models.convert import convert_melp_encoder
    from melp.train.run import build_model, pretrain

    golden = DATA / "golden"
    (tmp_path / "cfg.json").write_text(
        json.dumps(json.loads((golden / "melp_encoder_small.json").read_text())["small_config"])
    )
    convert_melp_encoder(
        golden / "melp_encoder_small.safetensors", tmp_path / "enc", tmp_path / "cfg.json", 100, 1000
    )
    encoder = melp.load_model(tmp_path / "enc")
    text = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    cfg = _cfg(
        store,
        tmp_path / "out",
        f"model.init={tmp_path / 'enc'}",
        "trainer.max_steps=2",
        "data.normalize=zscore",
    )
    cfg.model.overrides = {"text": {"from_config": {**text, "max_position_embeddings": 64}}}
    model = build_model(cfg)  # caption pooler (64 wide) feeds a 64-wide text tower
    assert model.has_text and model.config["ecg"]["normalize"] == "zscore"
    start = model.state_dict()
    assert all(torch.equal(start[k], v) for k, v in encoder.state_dict().items())
    summary = pretrain(cfg)
    best = melp.load_model(summary["best_model"])
    assert best.has_text and best.config["ecg"]["normalize"] == "zscore"
    assert (
        json.loads((Path(summary["best_model"]) / "config.json").read_text())["ecg"]["normalize"] == "zscore"
    )
    moved = [
        k
        for k, v in encoder.state_dict().items()
        if not torch.equal(summary["module"].model.state_dict()[k], v)
    ]
    assert any(k.startswith("ecg_encoder.") for k in moved)  # it trained from there
    full = _cfg(store, tmp_path / "o2", f"model.init={summary['best_model']}", "model.text=minilm")
    with pytest.raises(ValueError, match="saved full model"):
        build_model(full)
    bad = _cfg(store, tmp_path / "o3", f"model.init={tmp_path / 'enc'}")  # melp-test text: 32 wide
    with pytest.raises(ValueError, match="caption pooler is 64 wide and the text tower 32"):
        build_model(bad)


def test_beat_diversity_term_is_trained_and_logged(store, tmp_path):
    import pandas as pd

    from melp.train.run import pretrain

    out = tmp_path / "div"
    pretrain(_cfg(store, out, "loss.diversity=0.5", "trainer.max_steps=2", "val.sets=[]"))
    log = pd.read_csv(out / "logs" / "csv" / "metrics.csv")
    rows = log.dropna(subset=["train/total"])
    assert len(rows) == 2 and (rows["train/diversity"] > 0).all()
    parts = rows[["train/clip", "train/caption", "train/beat", "train/diversity"]].sum(axis=1)
    assert np.allclose(parts, rows["train/total"], atol=1e-5)  # the term is part of what is trained
