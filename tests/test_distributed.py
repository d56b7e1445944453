"""Two-process gloo run: the gathered CLIP loss and its gradients equal the single-process ones."""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from melp.losses.clip import clip_loss

WORLD, B, D = 2, 3, 8
# report ids with duplicates inside a rank and across ranks (soft duplicate-aware targets)
IDS = torch.tensor([5, 7, 5, 7, 9, 5])


def _data():
    g = torch.Generator().manual_seed(0)
    ze = F.normalize(torch.randn(WORLD * B, D, generator=g, dtype=torch.float64), dim=-1)
    zt = F.normalize(torch.randn(WORLD * B, D, generator=g, dtype=torch.float64), dim=-1)
    return ze, zt, torch.tensor(3.0, dtype=torch.float64)


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        for tag, ids in (("plain", None), ("soft", IDS[rank * B : (rank + 1) * B])):
            ze, zt, s = _data()
            ze = ze[rank * B : (rank + 1) * B].clone().requires_grad_(True)
            zt = zt[rank * B : (rank + 1) * B].clone().requires_grad_(True)
            s = s.clone().requires_grad_(True)
            loss = clip_loss(ze, zt, s, text_ids=ids)
            loss.backward()
            torch.save(
                {"loss": loss.detach(), "ge": ze.grad, "gt": zt.grad, "gs": s.grad},
                f"{out_dir}/{tag}{rank}.pt",
            )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gathered_clip_loss_equals_single_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for tag, ids in (("plain", None), ("soft", IDS)):
        _check_against_single_process([torch.load(tmp_path / f"{tag}{r}.pt") for r in range(WORLD)], ids)


def _check_against_single_process(res, ids):
    ze, zt, s = _data()
    ze.requires_grad_(True)
    zt.requires_grad_(True)
    s.requires_grad_(True)
    ref = clip_loss(ze, zt, s, gather=False, text_ids=ids)  # global batch of WORLD * B pairs
    ref.backward()

    # DDP averages over ranks: mean of rank losses / grads == the global loss / its gradients
    assert abs(sum(r["loss"] for r in res).item() / WORLD - ref.item()) < 1e-12
    for r in range(WORLD):
        rows = slice(r * B, (r + 1) * B)
        torch.testing.assert_close(res[r]["ge"] / WORLD, ze.grad[rows], atol=1e-12, rtol=0)
        torch.testing.assert_close(res[r]["gt"] / WORLD, zt.grad[rows], atol=1e-12, rtol=0)
    # the logit scale is replicated: DDP's average of its per-rank gradients is the global gradient
    torch.testing.assert_close(sum(r["gs"] for r in res) / WORLD, s.grad, atol=1e-12, rtol=0)
