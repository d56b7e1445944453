"""Two-process DDP on CPU (gloo) through ``melp pretrain``: configurations users run, equivalence
with one process, validation gathered across ranks, rank-0-only output, kill -9 and resume.

Process budget: one 2-process session runs every 2-process configuration back to back through
``pretrain()`` (launched as torchrun would: the processes exist first and Lightning finds them
through the environment), and two ``melp pretrain`` command lines (Lightning's own launcher) make
the kill -9 / resume test. What is compared, exactly:

* CLIP is computed over the *global* batch (latents all-gathered): with dropout off, the per-step
  CLIP loss (logged as the mean over ranks) and every parameter gradient of 2 processes x B/2 equal
  those of 1 process x B.
* The caption and beat terms are *local* to a rank (token means over the rank's reports, beat
  negatives from the rank's batch), so on W ranks they equal gradient accumulation over W
  micro-batches on one process: 2 processes x B/2 == 1 process x B/2 with accumulate_grad_batches=2
  (same samples per micro-batch, because the sampler hands rank r the r-th slice of each global batch).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from lightning.pytorch.callbacks import Callback

DATA = Path(__file__).parents[1] / "data"
TEST_TEXT = {  # melp-test's text tower with its dropout
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}
NO_DROPOUT = {
    "ecg": {"dropout": 0.0, "attention_dropout": 0.0, "dropout_input": 0.0},
    "text": {"from_config": {**TEST_TEXT, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}},
}
KILL_STEPS = 24


def _cfg(store: Path, out: Path, *extra: str, overrides: dict | None = None):
    from melp.train.config import apply_overrides, load_config

    cfg = load_config("melp-tiny")
    cfg.model.overrides = dict(overrides or {})
    return apply_overrides(
        cfg,
        [
            f"data.store={store}",
            f"out={out}",
            "model.name=melp-test",
            "model.freeze=[]",  # a trainable text tower: its gradients are compared too
            "model.cache_text=false",
            "model.caption_vocab_from_reports=false",
            "data.batch_size=4",
            "data.lead_mask_p=0.25",
            "optim.lr=2e-3",
            "optim.warmup_steps=1",
            "trainer.log_every_n_steps=1",
            "trainer.progress_bar=false",
            "trainer.accelerator=cpu",
            "val.batch_size=4",
            "val.sets.0.folds=[8,9]",
            "val.sets.0.limit=9",  # 9 records on 2 ranks: the last shard is padded with a duplicate
            *extra,
        ],
    )


# name -> optimizer steps, overrides, model overrides; all run on 2 processes in one session
RUNS = {
    # equivalence, global term: CLIP only, dropout off, 2 x 4 (reference: 1 x 8). In float64, so
    # that what is compared is the arithmetic of the distributed terms, not float32 rounding
    "clip": (
        3,
        [
            "loss.caption=0",
            "loss.beat=0",
            "loss.diversity=0",
            "val.every_n_steps=3",
            "trainer.precision=64-true",
        ],
        NO_DROPOUT,
    ),
    # equivalence, local terms: caption + beat, dropout off, 2 x 4 (reference: 1 x 4, accumulate 2)
    "local": (3, ["loss.clip=0", "val.sets=[]", "trainer.precision=64-true"], NO_DROPOUT),
    # all three terms, dropout on, bf16 autocast, accumulation, clipping
    "full": (
        2,
        ["trainer.precision=bf16-mixed", "trainer.accumulate_grad_batches=2", "optim.grad_clip=1.0"],
        None,
    ),
    # caption off (decoder and caption pooler unused)
    "nocaption": (2, ["loss.caption=0", "val.sets=[]"], None),
    # the melp-tiny recipe as shipped: frozen, cached text tower; compact caption vocabulary
    "recipe": (
        2,
        [
            "model.freeze=[text.]",
            "model.cache_text=true",
            "model.caption_vocab_from_reports=true",
            "val.sets=[]",
        ],
        None,
    ),
    # the uninterrupted reference of the kill -9 test (the same config as _kill_config)
    "kill_ref": (
        KILL_STEPS,
        ["loss.beat=0", "loss.diversity=0", "trainer.ckpt_every_n_steps=1", "val.every_n_steps=8"],
        None,
    ),
}


def _run_cfg(store: Path, out: Path, name: str, *extra: str):
    steps, sets, model_overrides = RUNS[name]
    return _cfg(store, out, f"trainer.max_steps={steps}", *sets, *extra, overrides=model_overrides)


class _Grads(Callback):
    """Rank 0 keeps the (already all-reduced) gradients of every optimizer step."""

    def __init__(self, path: Path):
        self.path, self.steps = path, {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.steps[trainer.global_step] = {
            n: p.grad.detach().clone() for n, p in pl_module.model.named_parameters() if p.grad is not None
        }

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            torch.save(self.steps, self.path)


def _session(rank: int, port: int, store: str, out: str) -> None:
    """One of the two processes: every RUNS entry back to back (launched like torchrun)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE="2",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        NODE_RANK="0",
    )
    torch.set_num_threads(1)
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    rank_zero_only.rank = rank  # what Lightning reads from RANK at import; the test process imported it first
    from melp.train.run import pretrain

    for name in RUNS:
        run_out = Path(out) / name
        cfg = _run_cfg(Path(store), run_out, name, "trainer.devices=2", "trainer.strategy=ddp")
        run_out.mkdir(parents=True, exist_ok=True)
        summary = pretrain(cfg, callbacks=[_Grads(run_out / f"grads{rank}.pt")])
        (run_out / f"rank{rank}.txt").write_text(f"{summary['global_step']} {summary['rank']}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """PTB-XL mini, 5 records per fold: folds 1-7 train (35), folds 8-9 for validation."""
    from melp.data.readers.ptbxl import subset_root
    from melp.data.store import prepare

    tmp = tmp_path_factory.mktemp("ddp")
    root = subset_root(DATA / "ptbxl-mini", tmp / "root", per_fold=5)
    prepare("ptbxl", root, tmp / "store", workers=0, progress=False)
    return tmp / "store"


@pytest.fixture(scope="module")
def two_process(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("two")
    mp.spawn(_session, args=(_free_port(), str(store), str(out)), nprocs=2, join=True)
    return out


def _single(store: Path, out: Path, name: str, *extra: str) -> Path:
    """The RUNS entry ``name`` on one process (with ``extra`` overrides)."""
    from melp.train.run import pretrain

    run_out = out / name
    run_out.mkdir(parents=True)
    pretrain(_run_cfg(store, run_out, name, *extra), callbacks=[_Grads(run_out / "grads0.pt")])
    return run_out


def _train_rows(run: Path) -> pd.DataFrame:
    log = pd.read_csv(run / "logs" / "csv" / "metrics.csv")
    rows = log[log["train/total"].notna()]
    assert rows["step"].is_unique, "a training step was logged twice"
    return rows.set_index("step")


def _max_grad_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for step in a:
        assert a[step].keys() == b[step].keys(), f"step {step}: different parameters got gradients"
        for name in a[step]:
            worst = max(worst, float((a[step][name] - b[step][name]).abs().max()))
    return worst


def test_clip_term_and_gradients_of_2x4_equal_1x8_and_validation_is_gathered(two_process, store, tmp_path):
    one = _single(store, tmp_path, "clip", "data.batch_size=8")
    two = two_process / "clip"
    a, b = _train_rows(one), _train_rows(two)
    assert list(a.index) == list(b.index) == [0, 1, 2]
    clip_err = float((a["train/clip"] - b["train/clip"]).abs().max())
    assert clip_err < 1e-5, clip_err
    grads_1, grads_2 = torch.load(one / "grads0.pt"), torch.load(two / "grads0.pt")
    assert sorted(grads_1) == [0, 1, 2] and len(grads_1[0]) > 40  # ECG, text and heads all trained
    grad_err = _max_grad_diff(grads_1, grads_2)
    assert grad_err < 1e-5, grad_err
    # D19: AUROC of the 9 validation records; 2 ranks see 5 + 5 rows (one padding duplicate)
    va = pd.read_csv(one / "logs" / "csv" / "metrics.csv")["val/super_fold8_auroc"].dropna()
    vb = pd.read_csv(two / "logs" / "csv" / "metrics.csv")["val/super_fold8_auroc"].dropna()
    assert len(va) == len(vb) == 1 and 0.0 < va.iloc[0] < 1.0
    assert abs(va.iloc[0] - vb.iloc[0]) < 1e-6, (va.iloc[0], vb.iloc[0])
    print(f"max |CLIP loss| difference {clip_err:.2e}, max |gradient| difference {grad_err:.2e}")


def test_local_terms_of_2x4_equal_accumulation_of_2x4_in_one_process(two_process, store, tmp_path):
    one = _single(store, tmp_path, "local", "trainer.accumulate_grad_batches=2")
    two = two_process / "local"
    a, b = _train_rows(one), _train_rows(two)
    assert list(a.index) == list(b.index) == [0, 1, 2]
    for term in ("train/caption", "train/beat"):
        assert float((a[term] - b[term]).abs().max()) < 1e-5, term
    assert (a["train/clip"] == 0).all()
    grad_err = _max_grad_diff(torch.load(one / "grads0.pt"), torch.load(two / "grads0.pt"))
    assert grad_err < 1e-5, grad_err
    print(f"max |gradient| difference {grad_err:.2e}")


def test_user_configurations_run_on_two_processes(two_process):
    for name, (steps, _, _) in RUNS.items():
        assert [(two_process / name / f"rank{r}.txt").read_text() for r in (0, 1)] == [
            f"{steps} 0",
            f"{steps} 1",
        ]
        rows = _train_rows(two_process / name)
        assert len(rows) == steps and np.isfinite(rows["train/total"]).all(), name
        assert not (two_process / name / "grads1.pt").exists()  # only rank 0 writes
    # a zero weight takes its modules out of training: no gradient, no DDP reduction
    grads = torch.load(two_process / "nocaption" / "grads0.pt")
    assert not any(n.startswith(("decoder.", "caption_pooler.")) for step in grads.values() for n in step)
    assert all(any(n.startswith("text_proj.") for n in step) for step in grads.values())
    grads = torch.load(two_process / "recipe" / "grads0.pt")  # frozen text tower: no text gradient
    assert not any(n.startswith("text.") for step in grads.values() for n in step)
    grads = torch.load(two_process / "full" / "grads0.pt")
    assert len(grads) == 2 and any(n.startswith("sent_proj.") for n in grads[0])
    hparams = (two_process / "full" / "logs" / "csv" / "hparams.yaml").read_text()
    assert "world_size: 2" in hparams and "global_batch: 16" in hparams and "bf16-mixed" in hparams


def _melp() -> list[str]:
    exe = shutil.which("melp", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-c", "import sys; from melp.cli import main; sys.exit(main())"]


def _kill_config(store: Path, folder: Path) -> Path:
    """The kill_ref run as a config file for ``melp pretrain --config``."""
    from melp.train.config import save_config

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kill.yaml"
    save_config(
        _run_cfg(store, folder / "unused", "kill_ref", "trainer.devices=2", "trainer.strategy=ddp"), path
    )
    return path


@pytest.mark.slow
def test_kill_9_of_two_processes_then_resume_continues_the_same_losses(two_process, store, tmp_path):
    """SIGKILL of both processes mid-run; ``--resume auto`` on 2 processes ends with the losses of
    the uninterrupted run (tolerance 1e-6; measured: identical). The same checkpoint resumed on
    1 process x 8 continues the same data position and learning-rate schedule."""
    from melp.train.checkpoint import load_checkpoint

    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["pretrain", "--config", str(_kill_config(store, tmp_path)), "--out", str(out)]
    proc = subprocess.Popen(
        _melp() + args,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the launcher and its rank-1 child
    )
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if last.is_file() and load_checkpoint(last)["global_step"] >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # both ranks, at once, mid-run
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = load_checkpoint(last)["global_step"]
    assert 3 <= killed_at < KILL_STEPS
    saved = tmp_path / "at_kill.ckpt"
    shutil.copy(last, saved)

    rerun = subprocess.run(
        _melp() + [*args, "--resume", "auto"], env=env, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout.count("best model exported") == 1  # rank 0 only
    assert rerun.stderr.count("pretraining melp-test on 35 records") == 1
    assert "not used in producing the loss" not in rerun.stderr  # loss.beat=0 under DDP
    ref, got = _train_rows(two_process / "kill_ref"), _train_rows(out)
    assert list(got.index) == list(range(KILL_STEPS))  # every step once: rows before the kill kept
    cols = ["train/clip", "train/caption", "train/total", "train/logit_scale"]
    diff = float((ref[cols] - got[cols]).abs().to_numpy().max())
    assert diff <= 1e-6, f"resumed losses differ from the uninterrupted run by {diff}"
    ref_end, got_end = (
        load_checkpoint(two_process / "kill_ref" / "checkpoints" / "last.ckpt"),
        load_checkpoint(last),
    )
    assert got_end["melp_state"] == ref_end["melp_state"]

    # another world size: 1 process x 8 (the same global batch) from the same checkpoint
    from melp.train.run import pretrain

    one = tmp_path / "one"
    summary = pretrain(_run_cfg(store, one, "kill_ref", "data.batch_size=8"), resume=str(saved))
    assert summary["global_step"] == KILL_STEPS
    end = load_checkpoint(one / "checkpoints" / "last.ckpt")["melp_state"]
    assert (end["data_epoch"], end["data_offset"]) == (
        ref_end["melp_state"]["data_epoch"],
        ref_end["melp_state"]["data_offset"],
    )
    lr_ref = pd.read_csv(two_process / "kill_ref" / "logs" / "csv" / "metrics.csv").dropna(
        subset=["lr-AdamW/pg1"]
    )
    lr_one = pd.read_csv(one / "logs" / "csv" / "metrics.csv").dropna(subset=["lr-AdamW/pg1"])
    lr_ref = lr_ref.set_index("step")["lr-AdamW/pg1"]
    lr_one = lr_one.set_index("step")["lr-AdamW/pg1"]
    assert np.allclose(lr_one.to_numpy(), lr_ref.loc[lr_one.index].to_numpy(), rtol=0, atol=1e-12)
    print(f"killed at step {killed_at}; max |loss| difference after resume {diff:.2e}")
