"""Released weights load into melp: MELP_Encoder (golden outputs), its full-size layout, weight-norm
namings, ECG-FM backbones, and .pt files read without running pickled code."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import melp
from melp.cli import main
from melp.models.convert import (
    DROPPED,
    ECG_FM_LEADS,
    UnsafeCheckpoint,
    convert_ecg_fm,
    convert_melp_encoder,
    parse_conv_layers,
    read_checkpoint,
)

GOLDEN = Path(__file__).parents[1] / "data" / "golden"
GOLDEN_JSON = json.loads((GOLDEN / "melp_encoder_small.json").read_text())
ATOL = 1e-4  # an independent fp32 port (golden JSON, tolerances)


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the golden was computed single-threaded
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def small_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "small_config.json"
    path.write_text(json.dumps(GOLDEN_JSON["small_config"]))  # saved as it is
    return path


def _outputs(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every output the golden describes, through melp's public API."""
    with torch.no_grad():
        tokens, mask = model.ecg_tokens(x)
        emb = model.embed(x)
        return {
            "features": tokens,
            "beats": model.beat_embeddings(tokens, mask)[0],  # pre-P beats (golden 'beats')
            "beat_embedding": emb["beats"],
            "proj_ecg_emb": emb["rhythm"],
            "zeroshot_embedding": model.encode_ecg(x),
            "probe_feature": emb["probe"],
            "caption_tokens": model.caption_context(tokens),
        }


def _max_errors(model) -> dict[str, float]:
    io = load_file(str(GOLDEN / "melp_encoder_small_io.safetensors"))
    out = _outputs(model, io["input"])
    return {k: float((v - io[k]).abs().max()) for k, v in out.items()}


def test_golden_melp_encoder_every_output_matches_through_the_cli(tmp_path, small_config, one_thread, capsys):
    dst = tmp_path / "converted"
    args = ["convert", "melp-encoder", str(GOLDEN / "melp_encoder_small.safetensors"), "--out", str(dst)]
    assert main([*args, "--config", str(small_config), "--sample-rate", "100", "--n-samples", "1000"]) == 0
    assert "12 pretraining-only tensors dropped, initialised here: logit_scale" in capsys.readouterr().out
    for where in (dst, dst / "model.safetensors"):  # the folder or its weights file
        model = melp.load_model(where)
        errors = _max_errors(model)
        assert all(e <= ATOL for e in errors.values()), errors
    assert not model.has_text
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["ecg"]["sample_rate"] == 100 and cfg["ecg"]["n_samples"] == 1000
    assert cfg["ecg"]["leads"] == ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert cfg["ecg"]["normalize"] == "minmax" and cfg["heads"]["n_beat_queries"] == 5
    report = json.loads((dst / "conversion.json").read_text())
    assert set(report["mapped"].values()) | set(report["dropped"]) == set(
        load_file(str(GOLDEN / "melp_encoder_small.safetensors"))
    )


def test_hub_folder_layout_and_zeroshot_are_the_released_normalised_projection(tmp_path, one_thread):
    hub = tmp_path / "MELP_Encoder"
    hub.mkdir()
    (hub / "model.safetensors").write_bytes((GOLDEN / "melp_encoder_small.safetensors").read_bytes())
    (hub / "config.json").write_text(json.dumps(GOLDEN_JSON["small_config"]))  # the folder carries its config
    convert_melp_encoder(hub, tmp_path / "out", sample_rate=100, n_samples=1000)
    model = melp.load_model(tmp_path / "out")
    io = load_file(str(GOLDEN / "melp_encoder_small_io.safetensors"))
    with torch.no_grad():
        z = model.encode_ecg(io["input"])
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))
    assert float((z - io["proj_ecg_emb"] / io["proj_ecg_emb"].norm(dim=1, keepdim=True)).abs().max()) < ATOL


def test_legacy_weight_norm_names_convert_to_the_same_model(tmp_path, small_config, one_thread):
    state = load_file(str(GOLDEN / "melp_encoder_small.safetensors"))
    prefix = "ecg_encoder.ecg_encoder.conv_pos.pos_conv.0."
    legacy = dict(state)
    legacy[prefix + "weight_g"] = legacy.pop(prefix + "parametrizations.weight.original0")
    legacy[prefix + "weight_v"] = legacy.pop(prefix + "parametrizations.weight.original1")
    save_file(legacy, str(tmp_path / "legacy.safetensors"))
    convert_melp_encoder(tmp_path / "legacy.safetensors", tmp_path / "a", small_config, 100, 1000)
    convert_melp_encoder(GOLDEN / "melp_encoder_small.safetensors", tmp_path / "b", small_config, 100, 1000)
    a, b = (
        load_file(str(tmp_path / "a" / "model.safetensors")),
        load_file(str(tmp_path / "b" / "model.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    errors = _max_errors(melp.load_model(tmp_path / "a"))
    assert all(e <= ATOL for e in errors.values()), errors
    both = {**state, prefix + "weight_g": legacy[prefix + "weight_g"].clone()}
    save_file(both, str(tmp_path / "both.safetensors"))
    with pytest.raises(ValueError, match="filled twice"):
        convert_melp_encoder(tmp_path / "both.safetensors", tmp_path / "c", small_config, 100, 1000)


def test_unknown_missing_or_misshapen_keys_are_errors_naming_them(tmp_path, small_config):
    state = load_file(str(GOLDEN / "melp_encoder_small.safetensors"))
    cases = {
        "unknown": (
            {**state, "ecg_encoder.ecg_encoder.target_glu.0.weight": torch.zeros(2)},
            "target_glu.0.weight",
        ),
        "missing": (
            {k: v for k, v in state.items() if not k.endswith("ln_caption.bias")},
            "caption_norm.bias",
        ),
        "shape": (
            {**state, "ecg_encoder.proj_contrast": torch.zeros(31, 32)},
            r"ecg_encoder.proj_contrast: shape \(31, 32\) does not fit melp's beat_proj",
        ),
    }
    for name, (bad, message) in cases.items():
        save_file(bad, str(tmp_path / f"{name}.safetensors"))
        with pytest.raises(ValueError, match=message):
            convert_melp_encoder(tmp_path / f"{name}.safetensors", tmp_path / name, small_config, 100, 1000)
    heads4 = json.loads(small_config.read_text())
    heads4["MELPEncoderConfig"]["layer_norm_first"] = True  # not a head field: reported, not applied
    heads4["Wav2Vec2CMSCConfig"]["layer_norm_first"] = True
    (tmp_path / "preln.json").write_text(json.dumps(heads4))
    with pytest.raises(ValueError, match="layer_norm_first"):
        convert_melp_encoder(
            GOLDEN / "melp_encoder_small.safetensors", tmp_path / "x", tmp_path / "preln.json", 100, 1000
        )


def test_full_size_released_layout_maps_every_key(tmp_path):
    """A random state dict with the real checkpoint's 180 keys and shapes (bf16, as released) converts
    with the released config's defaults: every key mapped (values carried over exactly) or dropped."""
    layout = GOLDEN_JSON["released_layout"]
    assert len(layout) == 180
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in layout:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.int64)
        else:
            state[key] = torch.randn(shape, generator=g).to(torch.bfloat16)
    assert sum(v.numel() for k, v in state.items() if ".bn." not in k) == 65_593_857  # the release's count
    hub = tmp_path / "MELP_Encoder"  # the Hub repository's layout: weights + transformers' flat config.json
    hub.mkdir()
    save_file(state, str(hub / "model.safetensors"))
    flat = {
        "architectures": ["MELPEncoderModel"],
        "auto_map": {"AutoModel": "modeling_MELP_Encoder.MELPEncoderModel"},
        "model_type": "melp",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.47.0",
        "model_size": "small",
        "shared_emb_dim": 256,
        "embed_dim_caption": 768,
        "use_attentional_pool_contrast": True,
        "use_attentional_pool_caption": True,
        "n_queries_contrast": 14,
        "n_queries_caption": 128,
        "attn_pooler_heads": 8,
        "proj": "linear",
        "drop": 0.0,
        "proj_bias": False,
        "num_leads": 12,
    }
    (hub / "config.json").write_text(json.dumps(flat))
    report = convert_melp_encoder(hub, tmp_path / "out")
    assert report.notes[0] == f"config: {hub / 'config.json'}"
    assert {"architectures", "auto_map", "model_type", "torch_dtype", "transformers_version"} <= set(
        report.config_ignored
    )
    dropped = {
        k.split("ecg_encoder.", 2)[-1] if k.startswith("ecg_encoder.ecg_encoder.") else k[12:]
        for k in report.dropped
    }
    assert dropped == set(DROPPED) and len(report.dropped) == 12
    assert set(report.mapped.values()) | set(report.dropped) == set(state)
    assert report.initialised == ["logit_scale"]
    converted = load_file(str(tmp_path / "out" / "model.safetensors"))
    for ours, theirs in report.mapped.items():
        src = state[theirs].float()
        if "in_proj" in theirs:  # packed (3d, ...) -> q / k / v blocks
            d = src.shape[0] // 3
            src = src[{"q": 0, "k": 1, "v": 2}[ours.split(".")[-2][0]] * d :][:d]
        assert torch.equal(converted[ours], src), ours
    model = melp.load_model(tmp_path / "out")
    n_params = sum(p.numel() for p in model.parameters())
    assert (
        n_params == 65_593_857 - 509_824
    )  # minus mask_emb, quantizer, project_q, final_proj (logit scale kept)
    assert model.config["ecg"]["layers"] == 8 and model.config["heads"]["n_beat_queries"] == 14
    assert model.config["ecg"]["sample_rate"] == 500 and model.config["ecg"]["n_samples"] == 5000
    with torch.no_grad():
        assert model.embed(torch.rand(1, 12, 5000))["beats"].shape == (1, 14, 256)


def test_parse_conv_layers_reads_fairseq_strings_without_eval():
    assert parse_conv_layers("[(256, 2, 2)] * 4") == [[256, 2, 2]] * 4
    assert parse_conv_layers("[(64, 4, 2)] + [(128, 2, 2)] * 2") == [[64, 4, 2], [128, 2, 2], [128, 2, 2]]
    with pytest.raises(ValueError, match="cannot parse"):
        parse_conv_layers("__import__('os').system('true')")


# ------------------------------------------------------------------------------------------- .pt
class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # our hand-made pickle
def test_pt_files_are_read_with_weights_only(tmp_path):
    state = load_file(str(GOLDEN / "melp_encoder_small.safetensors"))
    torch.save({"model": state, "optimizer_history": [{"lr": 0.1}]}, tmp_path / "plain.pt")
    got, _ = read_checkpoint(tmp_path / "plain.pt")
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in got)

    import argparse

    torch.save({"args": argparse.Namespace(arch="wav2vec2_cmsc"), "model": state}, tmp_path / "fairseq.pt")
    with pytest.raises(UnsafeCheckpoint, match=r"argparse\.Namespace.*weights_only=True.*docs/model.md"):
        read_checkpoint(tmp_path / "fairseq.pt")

    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"model": state, "x": _Evil(marker)}, f)  # a legacy (non-zip) pickle that runs code
    with pytest.raises(UnsafeCheckpoint):
        read_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    assert main(["convert", "ecg-fm", str(tmp_path / "fairseq.pt"), "--out", str(tmp_path / "o")]) == 2


# ------------------------------------------------------------------------------------------ ECG-FM
def _to_fairseq(state: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """melp Wav2Vec2Encoder state -> the fairseq-signals wav2vec2_cmsc key layout (legacy weight norm)."""
    ren = {
        "feature_norm.": "layer_norm.",
        "input_proj.": "post_extract_proj.",
        "pos_conv.conv.bias": "conv_pos.pos_conv.0.bias",
        "pos_conv.conv.parametrizations.weight.original0": "conv_pos.pos_conv.0.weight_g",
        "pos_conv.conv.parametrizations.weight.original1": "conv_pos.pos_conv.0.weight_v",
        "norm.": "encoder.layer_norm.",
    }
    out = {}
    for k, v in state.items():
        new = k
        if k.startswith("stem.blocks."):
            i, j, rest = k.split(".")[2:5]
            new = f"feature_extractor.conv_layers.{i}.{2 if j == '1' else 0}.{rest}"
        elif k.startswith("layers."):
            new = "encoder." + k.replace(".attn.", ".self_attn.").replace(".norm1.", ".self_attn_layer_norm.")
            new = new.replace(".norm2.", ".final_layer_norm.")
        else:
            for a, b in ren.items():
                if k.startswith(a):
                    new = b + k[len(a) :]
        out[new] = v.clone()
    d = state["norm.weight"].shape[0]
    out.update(
        {
            "mask_emb": torch.rand(d),
            "quantizer.vars": torch.randn(1, 16, 8),
            "quantizer.weight_proj.weight": torch.randn(16, 32),
            "quantizer.weight_proj.bias": torch.randn(16),
            "project_q.weight": torch.randn(16, 16),
            "project_q.bias": torch.randn(16),
            "final_proj.weight": torch.randn(16, d),
            "final_proj.bias": torch.randn(16),
        }
    )
    assert sum(k.startswith(f"encoder.layers.{layers - 1}.") for k in out) == 16
    return out


def test_ecg_fm_backbone_converts_with_its_lead_order(tmp_path, one_thread):
    from melp.models.config import resolve_config
    from melp.models.encoders.wav2vec2 import Wav2Vec2Encoder

    fairseq_cfg = {  # a fairseq model config (cfg["model"]), 12 layers like ECG-FM, small widths
        "_name": "wav2vec2_cmsc",
        "encoder_layers": 12,
        "encoder_embed_dim": 32,
        "encoder_ffn_embed_dim": 64,
        "encoder_attention_heads": 4,
        "conv_feature_layers": "[(16, 2, 2)] * 4",
        "conv_pos": 8,
        "conv_pos_groups": 4,
        "in_d": 12,
        "dropout_input": 0.1,
        "feature_grad_mult": 0.1,
        "mask_prob": 0.65,
        "normalize": "${task.normalize}",
    }
    ecg = {"conv_layers": [[16, 2, 2]] * 4, "width": 32, "layers": 12, "heads": 4, "ffn": 64}
    ecg.update(pos_conv_kernel=8, pos_conv_groups=4, sample_rate=500, n_samples=2500)
    torch.manual_seed(3)
    ref = Wav2Vec2Encoder(resolve_config({"ecg": ecg})["ecg"]).eval()  # stands for ECG-FM, ECG-FM lead order
    save_file(_to_fairseq(ref.state_dict(), 12), str(tmp_path / "ecg_fm.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps(fairseq_cfg))
    args = ["convert", "ecg-fm", str(tmp_path / "ecg_fm.safetensors"), "--out", str(tmp_path / "m")]
    assert main([*args, "--config", str(tmp_path / "cfg.json")]) == 0
    model = melp.load_model(tmp_path / "m")
    report = json.loads((tmp_path / "m" / "conversion.json").read_text())
    assert (
        len(report["dropped"]) == 8
        and "ecg_encoder.pos_conv.conv.parametrizations.weight.original0" in report["mapped"]
    )
    assert all(k.startswith(("beat_", "caption_", "logit_scale")) for k in report["initialised"])
    assert (
        report["config_ignored"]["mask_prob"].startswith("wav2vec 2.0")
        and "_name" in report["config_ignored"]
    )
    assert model.config["ecg"]["normalize"] == "zscore" and model.config["ecg"]["n_samples"] == 2500
    x = torch.randn(2, 12, 2500)  # melp's canonical order (aVF before aVL)
    perm = [melp.models.convert.CANONICAL_LEADS.index(n) for n in ECG_FM_LEADS]
    with torch.no_grad():
        expected, _ = ref(x[:, perm])  # ECG-FM order (aVL before aVF)
        got, _ = model.ecg_tokens(x)
        swapped, _ = model.ecg_tokens(x[:, perm])
    assert float((got - expected).abs().max()) < 1e-5
    assert float((swapped - expected).abs().max()) > 1e-2  # the permutation matters
    g = model.ecg_encoder.pos_conv.conv.parametrizations.weight.original0
    assert torch.equal(g, ref.pos_conv.conv.parametrizations.weight.original0)
    assert math.isclose(model.config["ecg"]["conv_grad_scale"], 0.1)
    with pytest.raises(ValueError, match="12 standard leads"):
        convert_ecg_fm(
            tmp_path / "ecg_fm.safetensors", tmp_path / "n", tmp_path / "cfg.json", leads=["I"] * 12
        )
