"""Training checkpoints: a crafted pickle is refused before it runs anything; writes are atomic."""

from __future__ import annotations

import logging

import pytest
import torch

from melp.train.checkpoint import SafeCheckpointIO, UnsafeCheckpointError, load_checkpoint


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def crafted(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "melp_state": _Payload(str(marker))}, path)
    torch.load(path, weights_only=False).get("melp_state")  # the file really runs code when unpickled...
    assert marker.exists()
    marker.unlink()  # ...so the tests below would see the marker if it ran again
    return path, marker


def test_crafted_checkpoint_is_refused_by_the_loader(crafted):
    path, marker = crafted
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.ckpt.*references io\.open.*refusing"):
        load_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):
        SafeCheckpointIO().load_checkpoint(path, weights_only=False)  # what Lightning asks for is ignored
    assert not marker.exists()


def test_pretrain_resume_refuses_a_crafted_checkpoint_before_any_work(crafted, tmp_path, caplog):
    from melp.cli import main

    path, marker = crafted
    args = ["pretrain", "--config", "melp-tiny", "--out", str(tmp_path / "run"), "--resume", str(path)]
    with caplog.at_level(logging.ERROR):
        code = main([*args, "--set", f"data.store={tmp_path / 'no-store-needed'}"])
    assert code == 2
    assert "refusing to load it" in caplog.text and "evil.ckpt" in caplog.text
    assert not marker.exists()
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpts" / "last.ckpt"
    io = SafeCheckpointIO()
    io.save_checkpoint({"global_step": 1, "state_dict": {"w": torch.ones(3)}}, path)
    assert load_checkpoint(path)["global_step"] == 1
    before = path.read_bytes()

    real_save = torch.save

    def dies_halfway(obj, f, *a, **kw):  # a crash in the middle of writing the new checkpoint
        real_save({"partial": torch.zeros(10)}, f)
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "state_dict": {"w": torch.zeros(3)}}, path)
    assert path.read_bytes() == before  # the previous checkpoint is intact
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_unreadable_checkpoint_is_named(tmp_path):
    bad = tmp_path / "truncated.ckpt"
    bad.write_bytes(b"PK\x03\x04 not a whole file")
    with pytest.raises(ValueError, match=r"truncated\.ckpt cannot be read"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        load_checkpoint(tmp_path / "missing.ckpt")
