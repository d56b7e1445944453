"""ResNet-1d-18 ECG encoder (MERL-style baseline), returning a token sequence (B, N, C).

Stem Conv1d(k=``stem_kernel``, stride 2) -> BN -> ReLU -> MaxPool(3, 2), then four stages of basic
blocks ([2, 2, 2, 2] by default, channels 64-512, strides 1, 2, 2, 2). The final feature map
(B, 512, N) is returned transposed as tokens (B, N, 512) so the same attentional poolers apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from melp.config import ConfigError
from melp.models.encoders import ECGInputConfig, register_encoder


@dataclass
class ResNet1dConfig(ECGInputConfig):
    """``ecg`` section of the ResNet-1d encoder (defaults = ResNet-18-1d)."""

    type: str = "resnet1d"
    channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    blocks: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    stem_kernel: int = 7


def _check(ecg: dict, source: str) -> None:
    if len(ecg["channels"]) != len(ecg["blocks"]) or not ecg["channels"]:
        raise ConfigError(
            f"{source}: ecg.channels {ecg['channels']} and ecg.blocks {ecg['blocks']} must have the same length"
        )
    if min(ecg["channels"] + ecg["blocks"]) < 1 or ecg["stem_kernel"] < 1:
        raise ConfigError(f"{source}: ecg.channels, ecg.blocks and ecg.stem_kernel must be positive")


class BasicBlock1d(nn.Module):
    """Two 3-tap convs with BN/ReLU and an identity (or 1x1 strided) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (
            nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, N) -> (B, C_out, N / stride)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


@register_encoder("resnet1d", config=ResNet1dConfig, test_size={"channels": [8, 8, 16, 16]}, check=_check)
class ResNet1dEncoder(nn.Module):
    """ResNet-1d encoder. Config keys: ``in_leads``, ``channels``, ``blocks``, ``stem_kernel``."""

    def __init__(self, cfg: dict):
        super().__init__()
        chans, blocks = cfg["channels"], cfg["blocks"]
        k = cfg["stem_kernel"]
        self.stem = nn.Sequential(
            nn.Conv1d(cfg["in_leads"], chans[0], k, stride=2, padding=k // 2, bias=False),
            nn.BatchNorm1d(chans[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        stages, c_in = [], chans[0]
        for i, (c, n) in enumerate(zip(chans, blocks)):
            layers = [BasicBlock1d(c_in, c, 1 if i == 0 else 2)]
            layers += [BasicBlock1d(c, c, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.width = c_in
        self.stride = 4 * 2 ** (len(chans) - 1)
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Tokens (B,) that overlap the ``lengths`` (B,) valid samples (each strided layer with
        padding: floor((n + 2p - k) / s) + 1)."""
        k = self.stem[0].kernel_size[0]
        n = torch.div(lengths + 2 * (k // 2) - k, 2, rounding_mode="floor") + 1  # stem conv
        n = torch.div(n + 2 - 3, 2, rounding_mode="floor") + 1  # max pool
        for _ in range(1, len(self.stages)):
            n = torch.div(n + 2 - 3, 2, rounding_mode="floor") + 1  # first conv of stages 2.. (stride 2)
        return n.clamp_min(1)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ECG (B, L, T) -> ``(tokens (B, N, C), valid (B, N) bool or None)`` with N ~ T / 32.

        With ``lengths`` (B,) the samples beyond each length are zeroed first (the padding content
        never reaches the encoder) and tokens that overlap no valid sample are marked invalid."""
        mask = None
        if lengths is not None:
            t = torch.arange(x.shape[-1], device=x.device)
            x = x * (t[None, :] < lengths[:, None]).to(x.dtype)[:, None, :]
        tokens = self.stages(self.stem(x)).transpose(1, 2)  # (B, C, N) -> (B, N, C)
        if lengths is not None:
            n = torch.arange(tokens.shape[1], device=x.device)
            mask = n[None, :] < self.output_lengths(lengths)[:, None]
        return tokens, mask
