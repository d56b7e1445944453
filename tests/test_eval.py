"""Evaluation: zero-shot classifier, probe, retrieval, generation scoring, embed export."""

from __future__ import annotations

import pytest
import torch

from melp.eval.zeroshot import build_classifier, zero_shot_logits


class _LookupModel(torch.nn.Module):
    """Text latents looked up from a table; ECG latents are the (normalised) first D samples."""

    def __init__(self, table: dict[str, list[float]]):
        super().__init__()
        self.table = table
        self.calls: list[list[str]] = []

    def encode_text(self, texts):
        self.calls.append(list(texts))
        return torch.nn.functional.normalize(torch.tensor([self.table[t] for t in texts]), dim=1)

    def encode_ecg(self, ecg):
        return torch.nn.functional.normalize(ecg[:, 0, :2], dim=1)


def test_build_classifier_ensembles_prompts_by_value():
    table = {"a one.": [1.0, 0.0], "a two.": [0.0, 1.0], "b.": [3.0, -3.0]}
    model = _LookupModel(table)
    model.train()
    prompts = {"A": ["A one.", "a two."], "B": ["b."]}  # upper case is lowered before encoding
    w = build_classifier(model, ["B", "A"], prompts)
    s = 2**-0.5
    torch.testing.assert_close(w, torch.tensor([[s, s], [-s, s]]))  # (D=2, K=2), columns B, A
    assert model.training  # mode restored
    ecg = torch.zeros(2, 12, 5)
    ecg[0, 0, :2] = torch.tensor([1.0, 0.0])
    ecg[1, 0, :2] = torch.tensor([0.0, 2.0])
    torch.testing.assert_close(zero_shot_logits(model, ecg, w), torch.tensor([[s, s], [-s, s]]))


def test_build_classifier_names_missing_class():
    with pytest.raises(KeyError, match="ZZZ"):
        build_classifier(_LookupModel({}), ["NORM", "ZZZ"])
