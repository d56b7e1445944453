"""Signal layer: lead map, resampling, crop/pad, normalisation and checks, by value."""

import numpy as np
import pytest

from melp.data import signal as sig


def _sine(freq, rate, seconds=10.0, amp=1.0):
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def _spectrum_peak(x, rate):
    spec = np.abs(np.fft.rfft(x)) / (len(x) / 2)
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return freqs, spec


def test_canonical_names_case_and_aliases():
    assert sig.CANONICAL_LEADS == ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
    assert sig.canonical_lead_name("AVR") == "aVR"
    assert sig.canonical_lead_name(" avl ") == "aVL"
    assert sig.canonical_lead_name("Lead II") == "II"
    assert sig.canonical_lead_name("D3") == "III"
    assert sig.canonical_lead_name("v6") == "V6"
    assert sig.canonical_lead_name("MLII") is None  # modified limb lead: not the same lead
    assert sig.canonical_lead_name("RESP") is None


def test_reorder_by_name_on_permuted_fixture():
    # PTB-XL order (I, II, III, AVR, AVL, AVF, V1..V6): each lead holds its canonical index as value
    ptbxl = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    canon_idx = [sig.CANONICAL_LEADS.index(sig.canonical_lead_name(n)) for n in ptbxl]
    data = np.repeat(np.array(canon_idx, dtype=float)[:, None], 5, axis=1)
    out, missing = sig.reorder_leads(data, ptbxl)
    assert missing == []
    np.testing.assert_array_equal(out[:, 0], np.arange(12))
    # a random permutation with an extra channel
    rng = np.random.default_rng(0)
    perm = rng.permutation(12)
    names = [sig.CANONICAL_LEADS[k].lower() for k in perm] + ["resp"]
    data = np.vstack([perm[:, None] * np.ones((12, 3)), 99 * np.ones((1, 3))])
    out, _ = sig.reorder_leads(data, names)
    np.testing.assert_array_equal(out[:, 1], np.arange(12))


def test_reorder_missing_and_duplicate_leads():
    names = ["I", "II", "III", "aVR", "aVF", "aVL"]
    data = np.ones((6, 4))
    with pytest.raises(ValueError, match="missing leads V1, V2, V3, V4, V5, V6"):
        sig.reorder_leads(data, names)
    out, missing = sig.reorder_leads(data, names, missing="zero")
    assert missing == ["V1", "V2", "V3", "V4", "V5", "V6"]
    assert out[:6].sum() == 24 and out[6:].sum() == 0
    with pytest.raises(ValueError, match="appears twice"):
        sig.reorder_leads(np.ones((2, 3)), ["avr", "AVR"])


@pytest.mark.parametrize(
    ("rate_in", "rate_out", "ratio"),
    [
        (500, 100, (1, 5)),
        (257, 100, (100, 257)),
        (400, 500, (5, 4)),
        (1000, 100, (1, 10)),
        (250, 100, (2, 5)),
        (100, 500, (5, 1)),
    ],
)
def test_resample_ratio(rate_in, rate_out, ratio):
    assert sig.resample_ratio(rate_in, rate_out) == ratio


def test_resample_sine_keeps_amplitude_and_frequency():
    x = _sine(5.0, 500, amp=2.0)[None]  # (1, 5000): 5 Hz, amplitude 2
    y = sig.resample(x, 500, 100)
    assert y.shape == (1, 1000)
    t = np.arange(1000) / 100
    interior = slice(50, 950)  # away from the filter's edge transients
    np.testing.assert_allclose(y[0, interior], 2.0 * np.sin(2 * np.pi * 5.0 * t[interior]), atol=0.02)
    freqs, spec = _spectrum_peak(y[0], 100)
    assert freqs[np.argmax(spec)] == pytest.approx(5.0)
    assert spec.max() == pytest.approx(2.0, abs=0.05)


def test_resample_removes_component_above_new_nyquist():
    # 5 Hz (kept) + 70 Hz (above the 50 Hz Nyquist of 100 Hz): a naive x[::5] would alias 70 Hz to 30 Hz
    x = (_sine(5.0, 500) + _sine(70.0, 500))[None]
    naive = x[0, ::5]
    freqs, spec_naive = _spectrum_peak(naive, 100)
    assert spec_naive[np.argmin(np.abs(freqs - 30))] > 0.9  # aliasing present without filtering
    y = sig.resample(x, 500, 100)[0]
    freqs, spec = _spectrum_peak(y[50:950], 100)
    assert spec[np.argmin(np.abs(freqs - 30))] < 0.01
    assert spec[np.argmin(np.abs(freqs - 5))] == pytest.approx(1.0, abs=0.05)


def test_resample_up_and_identity():
    x = _sine(2.0, 100, amp=1.5)[None]
    y = sig.resample(x, 100, 500)
    assert y.shape == (1, 5000)
    t = np.arange(5000) / 500
    np.testing.assert_allclose(y[0, 250:4750], 1.5 * np.sin(2 * np.pi * 2.0 * t[250:4750]), atol=0.01)
    np.testing.assert_array_equal(sig.resample(x, 100, 100), x)
    assert sig.resample(np.ones((2, 257)), 257, 100).shape == (2, 100)


def test_crop_or_pad():
    x = np.arange(10, dtype=float).reshape(2, 5)
    out, n = sig.crop_or_pad(x, 3)
    assert n == 3
    np.testing.assert_array_equal(out, [[0, 1, 2], [5, 6, 7]])
    out, n = sig.crop_or_pad(x, 7)
    assert n == 5
    np.testing.assert_array_equal(out, [[0, 1, 2, 3, 4, 0, 0], [5, 6, 7, 8, 9, 0, 0]])
    np.testing.assert_array_equal(sig.valid_mask(7, 5), [1, 1, 1, 1, 1, 0, 0])


def test_minmax_hand_example_ignores_padding():
    x = np.array([[1.0, 3.0, 100.0], [-1.0, 2.0, -100.0]])  # last sample is padding
    out = sig.normalize_minmax(x, length=2)
    # min -1, max 3 over the valid samples: (x + 1) / 4
    np.testing.assert_allclose(out, [[0.5, 1.0, 0.0], [0.0, 0.75, 0.0]], atol=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_allclose(sig.normalize_minmax(np.full((2, 3), 7.0)), 0.0)  # constant -> 0, no NaN


def test_zscore_per_lead():
    x = np.array([[1.0, 3.0, 0.0], [2.0, 2.0, 0.0]])
    out = sig.normalize_zscore(x, length=2)
    np.testing.assert_allclose(out, [[-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], atol=1e-6)
    with pytest.raises(ValueError, match="unknown normalisation"):
        sig.normalize(x, 2, "l2")


def test_check_signal_reasons():
    good = np.random.default_rng(0).normal(size=(12, 100))
    assert sig.check_signal(good) is None
    bad = good.copy()
    bad[3, 5] = np.nan
    bad[4, 6] = np.inf
    assert sig.check_signal(bad) == "non-finite: 1 NaN and 1 Inf samples"
    assert sig.check_signal(np.zeros((12, 100))) == "flat record: every sample equals 0"
    flat = good.copy()
    flat[6] = 0.25
    assert sig.check_signal(flat, list(sig.CANONICAL_LEADS)) == "flat lead: lead(s) V1 constant"
    assert sig.check_signal(flat, allow_flat_leads=True) is None
    assert sig.check_signal(np.zeros((12, 0))).startswith("empty")
