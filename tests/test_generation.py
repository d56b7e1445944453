"""Report generation: KV-cached decoding equals recomputation; length and token rules."""

import copy

import pytest
import torch

import melp
from melp.models.generation import generate_ids


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return melp.create_model("melp-test").double()  # float64: cached/uncached agree to the last bit of argmax


@pytest.fixture(scope="module")
def ecg():
    return torch.randn(3, 12, 1000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    "strategy,kw",
    [("greedy", {}), ("beam", {"num_beams": 3}), ("top_k", {"top_k": 20}), ("top_p", {"top_p": 0.9})],
)
def test_cached_generation_equals_uncached(model, ecg, strategy, kw):
    runs = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(5)
        runs.append(generate_ids(model, ecg, strategy, max_length=16, use_cache=use_cache, generator=g, **kw))
    assert torch.equal(runs[0], runs[1])
    assert runs[0].shape[0] == 3 and (runs[0][:, 0] == model.bos_id).all()


def _teacher_forced_logprob(model, x, ids):
    """Sum of next-token log-probabilities of a sequence (1, t) for ECG x (1, L, T), full forward."""
    with torch.no_grad():
        ctx = model.caption_context(*model.ecg_tokens(x))
        feats = model.text(ids, torch.ones_like(ids))
        lp = model.decoder(feats, ctx).log_softmax(-1)[0, :-1]  # (t-1, V)
    return lp.gather(1, ids[0, 1:, None]).sum().item()


def test_greedy_picks_the_argmax_and_beam_of_one_is_greedy(model, ecg):
    greedy = generate_ids(model, ecg[:1], "greedy", max_length=12, min_length=1)
    beam1 = generate_ids(model, ecg[:1], "beam", num_beams=1, max_length=12, min_length=1)
    assert torch.equal(greedy, beam1)
    # every greedy token is the argmax of the (special-token-suppressed) next-token distribution
    model.eval()
    with torch.no_grad():
        ctx = model.caption_context(*model.ecg_tokens(ecg[:1]))
        ids = greedy[:, : int((greedy != model.pad_id).sum())]
        logits = model.decoder(model.text(ids, torch.ones_like(ids)), ctx)[0, :-1]
        logits[:, model.special_ids & (torch.arange(len(model.special_ids)) != model.eos_id)] = -float("inf")
    model.train()
    assert torch.equal(logits[:-1].argmax(-1), ids[0, 1:-1])  # the last token may be a forced EOS


def test_length_rules_and_special_tokens(model, ecg):
    ids = generate_ids(
        model, ecg, "top_k", top_k=50, max_length=10, min_length=6, generator=torch.Generator().manual_seed(0)
    )
    assert ids.shape[1] <= 10
    eos, pad = model.eos_id, model.pad_id
    for row in ids.tolist():
        end = row.index(eos)  # every sequence ends with EOS (forced at the last position)
        assert end >= 5  # [BOS] + at least 4 tokens before EOS (min_length=6 counts [BOS])
        assert all(t == pad for t in row[end + 1 :])
        special = set(model.tokenizer.all_special_ids)
        assert not special & set(row[1:end])


def _exhaustive_best(model, ctx, tokens, min_length, max_length, score):
    """Best complete sequence under ``score`` ("logprob" or "raw" logits), by enumeration, with the
    decoder run directly (independent of the stepper): EOS is banned before ``min_length`` and forced
    (log-prob 0) at the last position, as generation does; the value is divided by the number of
    generated tokens (length penalty 1)."""
    import itertools

    best, best_seq = -float("inf"), None
    for k in range(1, max_length - 1):  # number of ordinary tokens before EOS
        for body in itertools.product(tokens, repeat=k):
            seq = [model.bos_id, *body, model.eos_id]
            ids = torch.tensor([seq])
            with torch.no_grad():
                logits = model.decoder(model.text(ids, torch.ones_like(ids)), ctx)[0, :-1]  # (t-1, V)
            rows = logits.log_softmax(-1) if score == "logprob" else logits
            total = 0.0
            for pos, tok in enumerate(seq[1:]):
                cur_len = pos + 1
                if cur_len + 1 >= max_length:  # the last allowed position: EOS is forced
                    total += 0.0 if tok == model.eos_id else -float("inf")
                elif tok == model.eos_id and cur_len < min_length:
                    total = -float("inf")
                else:
                    total += float(rows[pos, tok])
            value = total / len(seq[1:])
            if value > best:
                best, best_seq = value, seq
    return best_seq


def test_beam_search_scores_are_log_probabilities(model, ecg):
    # A caption vocabulary of 5 words + [SEP] makes the hypothesis space small enough to enumerate;
    # a beam as wide as that space must return the exhaustive optimum of the length-normalised
    # LOG-PROBABILITY. Summing raw logits (D23) picks another sequence on this model.
    small = copy.deepcopy(model).eval()
    small.restrict_caption_vocab(["sinus rhythm normal ecg ."])
    small.double()
    words = [int(i) for i in small.decoder.vocab_ids if int(i) != small.eos_id]
    x = ecg[:1]
    with torch.no_grad():
        ctx = small.caption_context(*small.ecg_tokens(x))
    min_length, max_length = 2, 5  # [BOS] + 1..3 words + [SEP]
    want = _exhaustive_best(small, ctx, words, min_length, max_length, "logprob")
    raw = _exhaustive_best(small, ctx, words, min_length, max_length, "raw")
    assert want != raw  # the test can tell log-probabilities from raw logits on this model
    got = generate_ids(small, x, "beam", num_beams=160, min_length=min_length, max_length=max_length)[0]
    got = [int(t) for t in got if int(t) != small.pad_id]
    assert got == want


def test_generate_returns_strings_and_restores_train_mode(model, ecg):
    model.train()
    texts = model.generate(ecg[:2], strategy="greedy", max_length=8)
    assert isinstance(texts, list) and len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert model.training
    with pytest.raises(ValueError, match="strategy"):
        model.generate(ecg[:1], strategy="nucleus")
