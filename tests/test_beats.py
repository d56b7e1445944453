"""Beat-level diagnostics by hand: R-peak finding, half-mass spread, per-record summaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from melp.eval.beats import half_mass_frames, r_peaks, record_diagnostics


def _spikes(rate: float, seconds: float, beats_at: list[float], sign: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.05 * np.sin(2 * np.pi * 0.3 * t)  # baseline wander
    for b in beats_at:
        x += sign * np.exp(-((t - b) ** 2) / (2 * 0.012**2))  # an R wave of ~25 ms
        x -= sign * 0.2 * np.exp(-((t - b - 0.25) ** 2) / (2 * 0.05**2))  # a wide, small opposite wave
    return x


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_r_peaks_on_a_synthetic_lead(sign):
    beats = [0.4, 1.2, 2.0, 2.75, 3.6]
    found = r_peaks(_spikes(500, 4.0, beats, sign), 500)
    np.testing.assert_array_equal(found, np.round(np.array(beats) * 500).astype(int))
    assert len(r_peaks(np.zeros(1000), 500)) == 0


def test_half_mass_frames_by_hand():
    w = np.array([[0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25], [0.1, 0.4, 0.2, 0.3]])
    np.testing.assert_array_equal(half_mass_frames(w), [1, 2, 2])


def test_record_diagnostics_by_hand():
    rate, frame_rate, n = 100.0, 10.0, 20  # 2 s, 20 frames of 0.1 s
    peaks = np.array([45, 145])  # R peaks at 0.45 s and 1.45 s: frames 4 (0.45 s centre) and 14
    bt = np.full((3, n), 1e-3)
    bt[0, 4] = bt[1, 14] = bt[2, 9] = 1.0  # two queries at a QRS, one between beats
    bt /= bt.sum(1, keepdims=True)
    sb = np.array([[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]])
    beats = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    d = record_diagnostics(
        {"beat_time": bt, "sentence_beat": sb, "frame_rate": frame_rate}, beats, peaks, rate, 200
    )
    assert d["beat_cosine"] == pytest.approx((1 + 0 + 0) * 2 / 6)  # pairs (0,1)=0, (0,2)=1, (1,2)=0
    ent0 = -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)) / np.log(3)
    assert d["attention_entropy"] == pytest.approx((ent0 + 1.0) / 2)
    assert d["attention_ratio"] == pytest.approx(2.0)
    assert d["half_mass_frames"] == 1 and d["frames"] == 20
    assert d["qrs_hit"] == pytest.approx(2 / 3)
    assert d["qrs_chance"] == pytest.approx(2 / 20)  # frames 4 and 14 lie within 50 ms of a peak


def test_beat_diagnostics_on_a_store(tmp_path):
    import torch

    import melp
    from melp.data.readers.ptbxl import subset_root
    from melp.data.store import ECGStore, prepare
    from melp.eval.beats import beat_diagnostics

    root = subset_root(Path(__file__).parents[1] / "data" / "ptbxl-mini", tmp_path / "r", 2)
    prepare("ptbxl", root, tmp_path / "s", progress=False)
    store = ECGStore(tmp_path / "s")
    torch.manual_seed(0)
    d = beat_diagnostics(melp.create_model("melp-test").eval(), store, np.arange(len(store)))
    assert d["n_records"] == len(store) and 0 <= d["attention_entropy"] <= 1 and d["attention_ratio"] >= 1
    assert -1 <= d["beat_cosine"] <= 1 and 0 <= d["qrs_chance"] <= 1 and d["frames"] == 125
