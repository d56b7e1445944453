"""Loss values checked by hand and against plain-loop references."""

import math

import pytest
import torch
import torch.nn.functional as F

from melp.losses import MELPLoss, all_gather_with_grad, beat_loss, caption_loss, clip_loss
from melp.losses.beat import pad_ragged

# ----------------------------------------------------------------------------- CLIP


def test_clip_loss_uniform_logits_is_log_n():
    n = 5
    z = F.normalize(torch.ones(n, 8), dim=-1)  # all pairs have the same similarity
    loss = clip_loss(z, z, torch.tensor(math.exp(2.659)))
    assert loss.item() == pytest.approx(math.log(n), abs=1e-6)


def test_clip_loss_hand_checked_2x2():
    ze = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    zt = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    s = 2.0
    # logits_e = s * ze zt^T = [[2, 1.2], [0, 1.6]]; logits_t = s * zt ze^T = [[2, 0], [1.2, 1.6]]
    ce_e = -math.log(math.exp(2) / (math.exp(2) + math.exp(1.2))) - math.log(
        math.exp(1.6) / (1 + math.exp(1.6))
    )
    ce_t = -math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(
        math.exp(1.6) / (math.exp(1.2) + math.exp(1.6))
    )
    expected = 0.5 * (ce_e / 2 + ce_t / 2)
    assert clip_loss(ze, zt, torch.tensor(s)).item() == pytest.approx(expected, abs=1e-6)


def test_gather_is_identity_without_process_group():
    x = torch.randn(3, 4, requires_grad=True)
    y = all_gather_with_grad(x)
    y.sum().backward()
    assert torch.equal(y, x) and torch.equal(x.grad, torch.ones(3, 4))


# ----------------------------------------------------------------------------- caption


def test_caption_loss_ignores_padding_and_equals_hand_ce():
    pad = 7
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]]])  # (1, 3, V=3)
    logits = torch.cat([logits, torch.zeros(1, 3, 5)], dim=-1)  # V = 8
    targets = torch.tensor([[0, 1, pad]])
    lse0 = math.log(math.exp(2) + 7)
    lse1 = math.log(math.exp(1) + 7)
    expected = ((lse0 - 2) + (lse1 - 1)) / 2
    assert caption_loss(logits, targets, pad).item() == pytest.approx(expected, abs=1e-6)
    changed = logits.clone()
    changed[0, 2] = torch.randn(8) * 10  # logits at the pad position
    assert caption_loss(changed, targets, pad).item() == caption_loss(logits, targets, pad).item()


# ----------------------------------------------------------------------------- beat


def _loop_beat_loss(beats, sent_list, t1=4.0, t2=5.0, t3=10.0):
    """Plain per-pair implementation of spec §4.3; reports without sentences are left out."""
    keep = [i for i, e in enumerate(sent_list) if e.shape[0] > 0]
    n = len(keep)
    if n == 0:
        return beats.sum() * 0
    rows = []
    for j in keep:
        row = []
        for i in keep:
            v, e = beats[j], sent_list[i]  # (Q, D), (n_i, D)
            a = v @ e.T  # (Q, n_i)
            a = torch.softmax(a, dim=1)
            beta = torch.softmax(t1 * a.T, dim=1)  # (n_i, Q)
            c = beta @ v  # (n_i, D)
            cos = torch.stack([F.cosine_similarity(e[s], c[s], dim=0) for s in range(e.shape[0])])
            row.append(t3 * torch.log(torch.exp(t2 * cos).sum()))
        rows.append(torch.stack(row))
    sim = torch.stack(rows)
    target = torch.arange(n)
    return 0.5 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target))


@pytest.mark.parametrize("seed", [0, 1])
def test_beat_loss_equals_loop_on_ragged_inputs_with_empty_reports(seed):
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor([3, 0, 1, 4, 2, 0])
    b, q, d = len(counts), 5, 16
    beats = torch.randn(b, q, d, generator=g, dtype=torch.float64, requires_grad=True)
    flat = torch.randn(int(counts.sum()), d, generator=g, dtype=torch.float64, requires_grad=True)
    padded, mask = pad_ragged(flat, counts, max_len=6)
    vec = beat_loss(beats, padded, mask)
    gb, gs = torch.autograd.grad(vec, (beats, flat))
    sent_list = list(torch.split(flat, counts.tolist()))
    ref = _loop_beat_loss(beats, sent_list)
    rb, rs = torch.autograd.grad(ref, (beats, flat))
    assert vec.item() == pytest.approx(ref.item(), abs=1e-10)
    torch.testing.assert_close(gb, rb, atol=1e-10, rtol=0)
    torch.testing.assert_close(gs, rs, atol=1e-10, rtol=0)
    # ECGs whose report has no sentence take no part at all
    assert torch.all(gb[1] == 0) and torch.all(gb[5] == 0)


def test_beat_loss_padding_values_do_not_matter_and_no_sentence_gives_zero():
    g = torch.Generator().manual_seed(3)
    beats = torch.randn(3, 4, 8, generator=g)
    sents = torch.randn(3, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    noisy = torch.where(mask[..., None], sents, torch.randn(3, 5, 8, generator=g) * 100)
    assert beat_loss(beats, sents * mask[..., None], mask).item() == pytest.approx(
        beat_loss(beats, noisy, mask).item(), abs=1e-5
    )
    empty = torch.zeros(3, 5, dtype=torch.bool)
    beats.requires_grad_(True)
    loss = beat_loss(beats, sents, empty)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(beats.grad == 0)


# ----------------------------------------------------------------------------- total


def _outputs(b=4, q=3, d=8, m=4, s=6, v=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "ecg_latent": F.normalize(torch.randn(b, d, generator=g), dim=-1),
        "text_latent": F.normalize(torch.randn(b, d, generator=g), dim=-1),
        "logit_scale": torch.tensor(10.0),
        "beats": torch.randn(b, q, d, generator=g),
        "sentences": torch.randn(b, m, d, generator=g),
        "sentence_mask": torch.rand(b, m, generator=g) > 0.3,
        "caption_logits": torch.randn(b, s, v, generator=g),
        "caption_targets": torch.randint(0, v, (b, s), generator=g),
        "pad_id": 0,
    }


def test_melp_loss_weights_terms_and_sums():
    out = _outputs()
    losses = MELPLoss(clip=1.0, caption=2.0, beat=0.2)(**out)
    clip = clip_loss(out["ecg_latent"], out["text_latent"], out["logit_scale"])
    cap = caption_loss(out["caption_logits"], out["caption_targets"], 0)
    beat = beat_loss(out["beats"], out["sentences"], out["sentence_mask"])
    assert losses["clip"].item() == pytest.approx(clip.item(), rel=1e-6)
    assert losses["caption"].item() == pytest.approx(2.0 * cap.item(), rel=1e-6)
    assert losses["beat"].item() == pytest.approx(0.2 * beat.item(), rel=1e-6)
    assert losses["total"].item() == pytest.approx(clip.item() + 2 * cap.item() + 0.2 * beat.item(), rel=1e-6)


def test_melp_loss_zero_weight_skips_the_term():
    out = _outputs()
    out["caption_logits"] = None  # would crash if the caption term were computed
    out["beats"] = None
    losses = MELPLoss(clip=1.0, caption=0.0, beat=0.0)(**out)
    assert losses["caption"].item() == 0.0 and losses["beat"].item() == 0.0
    assert losses["total"].item() == pytest.approx(losses["clip"].item())
    with pytest.raises(ValueError, match="caption"):
        MELPLoss(caption=-1.0)


def test_losses_stay_fp32_inside_bf16_autocast():
    g = torch.Generator().manual_seed(4)
    beats, sents = torch.randn(6, 4, 16, generator=g), torch.randn(6, 5, 16, generator=g)
    mask = torch.rand(6, 5, generator=g) > 0.4
    ze = F.normalize(torch.randn(6, 16, generator=g), dim=-1)
    zt = F.normalize(torch.randn(6, 16, generator=g), dim=-1)
    ref_beat, ref_clip = beat_loss(beats, sents, mask), clip_loss(ze, zt, torch.tensor(50.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got_beat, got_clip = beat_loss(beats, sents, mask), clip_loss(ze, zt, torch.tensor(50.0))
    assert got_beat.dtype == torch.float32 and got_clip.dtype == torch.float32
    assert got_beat.item() == pytest.approx(ref_beat.item(), rel=1e-6)  # bf16 matmuls are off by ~5e-4
    assert got_clip.item() == pytest.approx(ref_clip.item(), rel=1e-6)


def test_clip_soft_duplicate_targets_by_hand():
    """Identical reports are not negatives: rows spread their target over equal report ids."""
    from melp.losses.clip import clip_loss, duplicate_targets

    torch.manual_seed(0)
    ze = F.normalize(torch.randn(4, 5, dtype=torch.float64), dim=-1)
    zt = F.normalize(torch.randn(4, 5, dtype=torch.float64), dim=-1)
    s = torch.tensor(2.0, dtype=torch.float64)
    unique = torch.tensor([1, 2, 3, 4])
    torch.testing.assert_close(clip_loss(ze, zt, s, text_ids=unique), clip_loss(ze, zt, s))
    ids = torch.tensor([1, 2, 1, 1])  # reports 0, 2, 3 identical
    t = duplicate_targets(ids, ids)
    torch.testing.assert_close(t[:2], torch.tensor([[1 / 3, 0, 1 / 3, 1 / 3], [0, 1, 0, 0]]))
    # by hand: -sum_j t_ij log softmax_j(s * z_i . Z_j), both directions, averaged
    le, lt = (s * ze @ zt.T).log_softmax(1), (s * zt @ ze.T).log_softmax(1)
    expected = 0.5 * (-(t * le).sum(1).mean() - (t * lt).sum(1).mean())
    torch.testing.assert_close(clip_loss(ze, zt, s, text_ids=ids), expected)


def test_beat_soft_duplicate_targets_match_explicit_soft_ce():
    from melp.losses.beat import beat_loss, beat_similarity

    torch.manual_seed(1)
    beats = torch.randn(4, 3, 6, dtype=torch.float64)
    sent = torch.randn(4, 2, 6, dtype=torch.float64)
    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1]], dtype=torch.bool)
    torch.testing.assert_close(
        beat_loss(beats, sent, mask, text_ids=torch.arange(4)), beat_loss(beats, sent, mask)
    )
    ids = torch.tensor([3, 8, 3, 9])
    sim = 10.0 * beat_similarity(beats, sent, mask)
    t = torch.tensor([[0.5, 0, 0.5, 0], [0, 1, 0, 0], [0.5, 0, 0.5, 0], [0, 0, 0, 1]], dtype=torch.float64)
    expected = 0.5 * (-(t * sim.log_softmax(1)).sum(1).mean() - (t * sim.T.log_softmax(1)).sum(1).mean())
    torch.testing.assert_close(beat_loss(beats, sent, mask, text_ids=ids), expected)


def test_beat_diversity_by_hand_and_in_melp_loss():
    from melp.losses import MELPLoss
    from melp.losses.beat import beat_diversity

    b = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]])  # cosines: 1/sqrt2, 0, 1/sqrt2
    assert float(beat_diversity(b)) == pytest.approx((0.5 + 0 + 0.5) * 2 / 6)
    assert float(beat_diversity(torch.ones(2, 4, 3))) == pytest.approx(1.0)
    assert float(beat_diversity(torch.eye(3)[None])) == 0.0
    out = {
        "ecg_latent": torch.nn.functional.normalize(torch.randn(2, 4), dim=-1),
        "text_latent": torch.nn.functional.normalize(torch.randn(2, 4), dim=-1),
        "logit_scale": torch.tensor(10.0),
        "beats": torch.randn(2, 3, 4),
        "sentences": torch.randn(2, 2, 4),
        "sentence_mask": torch.ones(2, 2, dtype=torch.bool),
        "caption_logits": torch.randn(2, 3, 5),
        "caption_targets": torch.randint(0, 5, (2, 3)),
        "pad_id": 0,
    }
    plain = MELPLoss()(**out)
    assert "diversity" not in plain  # off by default: the paper's objective
    with_div = MELPLoss(diversity=0.5)(**out)
    assert float(with_div["diversity"]) == pytest.approx(0.5 * float(beat_diversity(out["beats"])))
    assert float(with_div["total"]) == pytest.approx(float(plain["total"] + with_div["diversity"]))
    with pytest.raises(ValueError, match="diversity"):
        MELPLoss(diversity=-1)
