"""The model behaves like the Hub models users know: one load path (folder, weights file or hub id,
never a typo sent to the Hub), constructors that never download, version + config hash, an input
contract with its own preprocessing, encoder-only models, and a model card for the Hub."""

from __future__ import annotations

import inspect
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

import melp
from melp.data.signal import CANONICAL_LEADS, normalize_minmax, normalize_zscore
from melp.models.io import config_hash
from melp.models.melp import MELPModel, TextTowerRequired


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return melp.create_model("melp-test").eval()


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory) -> Path:
    return model.save_pretrained(tmp_path_factory.mktemp("m") / "model")


# ------------------------------------------------------------------------------------ load path
def test_one_load_path_same_signature_folder_or_weights_file(model, saved):
    assert melp.load_model == MELPModel.from_pretrained
    params = list(inspect.signature(melp.load_model).parameters)
    assert params == ["path_or_id", "revision", "cache_dir", "device", "dtype"]
    assert "pretrained" not in inspect.signature(melp.create_model).parameters
    for where in (saved, saved / "model.safetensors", str(saved / "config.json")):
        loaded = melp.load_model(where)
        assert all(
            torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values())
        )
    half = melp.load_model(saved, dtype=torch.float64)
    assert half.beat_proj.dtype == torch.float64 and not half.training


@pytest.fixture
def no_hub(monkeypatch):
    """Fail the test if anything tries the Hub or opens a network connection."""
    import huggingface_hub

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"network/hub access attempted: {args}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return calls


def test_path_like_strings_are_never_sent_to_the_hub(tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    for typo in (
        "runs/best",
        "./best_model",
        "/no/such/dir",
        "a/b/c",
        "model.safetensors",
        "owner/name.json",
    ):
        with pytest.raises(FileNotFoundError, match="no such model folder"):
            melp.load_model(typo)
    with pytest.raises(FileNotFoundError, match="notes.txt: not a model folder"):
        melp.load_model("notes.txt")
    assert no_hub == []


def _fake_hub_cache(saved: Path, cache: Path, repo: str, commit: str = "a" * 40) -> None:
    """The Hugging Face cache layout (what `melp download` leaves) for a local stand-in of the Hub."""
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    for p in saved.iterdir():
        (snap / p.name).symlink_to(p.resolve(), target_is_directory=p.is_dir())


def test_hub_id_loads_from_the_local_cache_offline(model, saved, tmp_path, no_hub):
    _fake_hub_cache(saved, tmp_path / "cache", "someone/melp-test")
    loaded = melp.load_model("someone/melp-test", cache_dir=tmp_path / "cache")
    assert torch.equal(loaded.beat_proj, model.beat_proj)
    again = melp.load_model("someone/melp-test", revision="a" * 40, cache_dir=tmp_path / "cache")
    assert torch.equal(again.beat_proj, model.beat_proj) and no_hub == []


def test_create_model_fails_fast_when_a_named_text_tower_is_not_local(no_hub):
    with pytest.raises(OSError, match=r"melp download someone-else/not-cached-bert"):
        melp.create_model("melp-small", text={"name_or_path": "someone-else/not-cached-bert"})
    assert no_hub == []  # no Hub call, no connection: the error comes at once


def test_version_and_config_hash_in_config_and_weights(model, saved, tmp_path, caplog):
    from safetensors import safe_open

    cfg = json.loads((saved / "config.json").read_text())
    assert cfg["melp_version"] == melp.__version__
    assert cfg["config_hash"] == config_hash(model.config)
    with safe_open(str(saved / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["melp_version"] == melp.__version__ and meta["config_hash"] == cfg["config_hash"]
    edited = tmp_path / "edited"
    model.save_pretrained(edited)
    cfg["ecg"]["normalize"] = "zscore"
    (edited / "config.json").write_text(json.dumps(cfg))
    with caplog.at_level("WARNING"):
        loaded = melp.load_model(edited)
    assert loaded.config["ecg"]["normalize"] == "zscore"
    assert "edited after saving" in caplog.text


# ------------------------------------------------------------------------------------ API fixes
def test_encode_text_one_string_is_one_row(model):
    with torch.no_grad():
        one = model.encode_text("sinus rhythm. normal ecg.")
        listed = model.encode_text(["sinus rhythm. normal ecg."])
    assert one.shape == (1, model.config["embed_dim"])
    assert torch.equal(one, listed)


# ------------------------------------------------------------------------------- input contract
def test_config_states_the_input_contract(model, saved):
    ecg = json.loads((saved / "config.json").read_text())["ecg"]
    assert (ecg["sample_rate"], ecg["n_samples"], ecg["normalize"]) == (100, 1000, "minmax")
    assert ecg["leads"] == list(CANONICAL_LEADS)
    with pytest.raises(ValueError, match="ecg.normalize"):
        melp.create_model("melp-test", ecg={"normalize": "robust"})
    with pytest.raises(ValueError, match="canonical order"):
        melp.create_model("melp-test", ecg={"leads": ["II", "I", *CANONICAL_LEADS[2:]]})


def test_preprocess_reorders_resamples_crops_and_normalises(model):
    rng = np.random.default_rng(0)
    canon = rng.normal(size=(12, 800))  # 8 s at the model's 100 Hz, canonical order
    wfdb_order = [0, 1, 2, 3, 5, 4, 6, 7, 8, 9, 10, 11]  # raw files: aVL before aVF
    names = [CANONICAL_LEADS[i] for i in wfdb_order]
    raw = np.vstack([canon[wfdb_order], rng.normal(size=(1, 800))])  # + an extra (respiration) channel
    x, valid = model.preprocess(raw, 100, [n.upper() for n in names] + ["RESP"])
    assert valid == 800 and x.dtype == torch.float32 and x.shape == (12, 1000)
    expected = np.zeros((12, 1000))
    expected[:, :800] = (canon - canon.min()) / (canon.max() - canon.min() + 1e-8)  # global, valid part
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-6)
    # another rate: a 1.3 Hz sine at 500 Hz for 12 s -> 100 Hz, cropped to 10 s
    t500 = np.arange(6000) / 500
    sine = np.tile(np.sin(2 * np.pi * 1.3 * t500), (12, 1))
    y, valid = model.preprocess(sine, 500, list(CANONICAL_LEADS))
    t100 = np.arange(1000) / 100
    target = (np.sin(2 * np.pi * 1.3 * t100) + 1) / 2  # min-max of a full sine -> [0, 1]
    assert valid == 1000 and float(np.abs(y.numpy()[0] - target).max()) < 0.01
    with pytest.raises(ValueError, match="lacks lead.*V6"):
        model.preprocess(canon[:11], 100, list(CANONICAL_LEADS[:11]))
    z, _ = model.preprocess(canon[:11], 100, list(CANONICAL_LEADS[:11]), missing="zero")
    zero_mv = -min(canon[:11].min(), 0) / (max(canon[:11].max(), 0) - min(canon[:11].min(), 0) + 1e-8)
    np.testing.assert_allclose(z[11, :800].numpy(), zero_mv, atol=1e-6)  # 0 mV, then normalised (as masking)
    with pytest.raises(ValueError, match="appears twice"):
        model.preprocess(canon[:2], 100, ["I", "i"])
    with pytest.raises(ValueError, match="finite"):
        model.preprocess(np.full((12, 10), np.nan), 100, list(CANONICAL_LEADS))
    with pytest.raises(ValueError, match="one row per lead name"):
        model.preprocess(canon, 100, ["I"])


def test_preprocess_uses_the_models_normalisation(model):
    zs = melp.create_model(dict(model.config, ecg={**model.config["ecg"], "normalize": "zscore"}))
    canon = np.random.default_rng(1).normal(size=(12, 1000)) * 3 + 2
    x, _ = zs.preprocess(canon, 100, list(CANONICAL_LEADS))
    np.testing.assert_allclose(x.numpy(), normalize_zscore(canon), atol=1e-5)
    y, _ = model.preprocess(canon, 100, list(CANONICAL_LEADS))
    np.testing.assert_allclose(y.numpy(), normalize_minmax(canon), atol=1e-6)
    with torch.no_grad():
        assert model.embed(x[None])["probe"].shape == (1, model.config["embed_dim"])


# ----------------------------------------------------------------------------- encoder-only
def test_encoder_only_copy_embeds_identically_and_refuses_text(model, tmp_path):
    enc = model.encoder_only()
    assert not enc.has_text and enc.config["text"] is None and enc.config["decoder"] is None
    x = torch.rand(2, 12, 1000)
    with torch.no_grad():
        a, b = model.embed(x), enc.embed(x)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert torch.equal(
            model.caption_context(*model.ecg_tokens(x)), enc.caption_context(*enc.ecg_tokens(x))
        )
    enc.save_pretrained(tmp_path / "enc")
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == ["config.json", "model.safetensors"]
    loaded = melp.load_model(tmp_path / "enc")
    with torch.no_grad():
        assert torch.equal(loaded.encode_ecg(x), model.encode_ecg(x))
    for call in (lambda: loaded.encode_text("x"), lambda: loaded.generate(x), lambda: loaded.tokenize(["x"])):
        with pytest.raises(TextTowerRequired, match="needs a text tower.*encoder-only.*model.init"):
            call()
    with pytest.raises(ValueError, match="caption_dim"):
        MELPModel(
            dict(model.config, text=None, decoder=None, heads={**model.config["heads"], "caption_dim": None})
        )


def test_with_text_tower_keeps_the_ecg_side_and_builds_the_text_side(model):
    from melp.models.registry import with_text_tower

    enc = model.encoder_only()
    full = with_text_tower(enc, "melp-test", text={"freeze_layers": 0})
    assert full.has_text and full.config["text"]["freeze_layers"] == 0
    src, own = enc.state_dict(), full.state_dict()
    assert all(torch.equal(own[k], v) for k, v in src.items())
    assert set(own) - set(src) and all(
        k.startswith(("text.", "text_proj.", "sent_proj.", "decoder.")) for k in set(own) - set(src)
    )
    wide = dict(enc.config, heads={**enc.config["heads"], "caption_dim": 48})
    with torch.random.fork_rng():
        narrow = MELPModel(wide)
    with pytest.raises(ValueError, match="caption pooler is 48 wide and the text tower 32"):
        with_text_tower(narrow, "melp-test")


# ------------------------------------------------------------------------------------- the Hub
def _run_dir(model, tmp_path: Path) -> Path:
    from melp.train.config import PretrainConfig, save_config

    run = tmp_path / "run"
    model.save_pretrained(run / "best_model")
    cfg = PretrainConfig()
    cfg.data.store, cfg.data.folds, cfg.trainer.max_steps = "stores/ptbxl-100", [1, 2, 3, 4, 5, 6, 7, 8], 176
    save_config(cfg, run / "config.yaml")
    summary = {"best_score": 0.8125, "global_step": 176, "total_steps": 176, "seconds": 355.0}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_prepared_upload_folder_holds_the_model_and_a_model_card(model, tmp_path):
    from melp.models.hub import prepare_upload

    run = _run_dir(model, tmp_path)
    results = tmp_path / "zeroshot_super_class.json"
    results.write_text(json.dumps({"method": "zero-shot", "task": "super_class", "macro_auroc": 0.8654}))
    up = prepare_upload(run / "best_model", tmp_path / "upload", results=[results], repo_id="me/melp-test")
    names = sorted(p.name for p in up.iterdir())
    assert names == ["README.md", "config.json", "model.safetensors", "text_config.json", "tokenizer"]
    assert (up / "model.safetensors").read_bytes() == (run / "best_model" / "model.safetensors").read_bytes()
    card = (up / "README.md").read_text()
    for needle in (
        "library_name: melp",
        "shape `(B, 12, 1000)`: 1000 samples = 10 s at 100 Hz",
        "leads, in this order: I, II, III, aVR, aVF, aVL, V1",
        "normalisation: `minmax`",
        "2 post-LN transformer layers, width 32",
        "store `stores/ptbxl-100`",
        "max_steps 176",
        "176 of 176 steps",
        "| pretraining validation | val/mean_auroc (zero-shot, best checkpoint) | 0.8125 |",
        "| zero-shot super_class | macro_auroc | 0.8654 |",
        "melp.load_model('me/melp-test')",
        f"parameters: {sum(p.numel() for p in model.parameters()):,}",
    ):
        assert needle in card, needle


def test_push_to_hub_uploads_the_prepared_folder_in_one_commit(model, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("create_repo", repo_id, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, revision=None, commit_message=None):
            files = sorted(p.name for p in Path(folder_path).iterdir())
            calls.append(("upload_folder", repo_id, files, commit_message))
            return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = model.push_to_hub("me/melp-test", private=True)
    assert url == "https://hub/me/melp-test/commit/1"
    assert calls[1] == ("create_repo", "me/melp-test", True, True)
    assert [c[0] for c in calls] == ["init", "create_repo", "upload_folder"]
    assert "README.md" in calls[2][2] and "model.safetensors" in calls[2][2]


def test_cli_push_prepare_only_and_download_error(model, tmp_path, capsys, no_hub):
    from melp.cli import main

    run = _run_dir(model, tmp_path)
    assert main(["push", str(run / "best_model"), "me/x", "--prepare-only", str(tmp_path / "up")]) == 0
    assert "nothing sent" in capsys.readouterr().out and (tmp_path / "up" / "README.md").is_file()
    _fake_hub_cache(run / "best_model", tmp_path / "cache", "me/cached")
    assert main(["download", "me/cached", "--cache-dir", str(tmp_path / "cache")]) == 0  # already cached
    assert capsys.readouterr().out.strip().endswith("snapshots/" + "a" * 40) and no_hub == []
