"""The beat alignment loss reproduces the paper implementation's numbers (data/golden)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from melp.losses.beat import beat_loss, pad_ragged

GOLDEN = Path(__file__).parents[1] / "data" / "golden" / "beat_alignment_loss.npz"


@pytest.mark.parametrize("case", [0, 1, 2])
def test_beat_loss_matches_golden_loss_and_gradients(case):
    z = np.load(GOLDEN)
    beats = torch.tensor(z[f"case{case}_beats"], dtype=torch.float64, requires_grad=True)
    flat = torch.tensor(z[f"case{case}_sentences"], dtype=torch.float64, requires_grad=True)
    counts = torch.tensor(z[f"case{case}_sentence_counts"])
    sentences, mask = pad_ragged(flat, counts)
    loss = beat_loss(beats, sentences, mask, tau1=4.0, tau2=5.0, tau3=10.0)
    loss.backward()
    assert loss.dtype == torch.float64
    assert abs(loss.item() - float(z[f"case{case}_loss"])) < 1e-9
    np.testing.assert_allclose(beats.grad.numpy(), z[f"case{case}_grad_beats"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(flat.grad.numpy(), z[f"case{case}_grad_sentences"], rtol=0, atol=1e-9)
