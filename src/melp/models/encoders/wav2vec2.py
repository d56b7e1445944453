"""wav2vec 2.0-style ECG encoder (spec §3.1-3.2).

Dimensions: ``B`` batch, ``L`` leads, ``T`` samples, ``N`` frames (ECG tokens), ``C`` stem
channels, ``D`` transformer width. Input (B, L, T) -> output tokens (B, N, D).

Padding mask: with ``lengths`` (B,) valid samples per record, the samples beyond each length are
zeroed, the first block's GroupNorm takes its statistics over valid frames only, padded frames are
zeroed before the positional convolution and masked as attention keys. The valid frames then
depend only on the valid samples (whatever the padding holds). A frame is valid when its whole
receptive field lies inside the valid samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from melp.config import ConfigError
from melp.models.attention import MultiHeadAttention
from melp.models.encoders import ECGInputConfig, register_encoder


@dataclass
class Wav2Vec2Config(ECGInputConfig):
    """``ecg`` section of a wav2vec2 encoder (defaults = the paper's "small" encoder, spec §3)."""

    type: str = "wav2vec2"
    conv_layers: list[list[int]] = field(
        default_factory=lambda: [[256, 2, 2]] * 4
    )  # [channels, kernel, stride]
    width: int = 768
    layers: int = 8
    heads: int = 12
    ffn: int = 3072
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    dropout_input: float = 0.1
    conv_grad_scale: float = 0.1


def _check(ecg: dict, source: str) -> None:
    for layer in ecg["conv_layers"]:
        if len(layer) != 3 or min(layer) < 1:
            raise ConfigError(
                f"{source}: ecg.conv_layers entries must be [channels, kernel, stride] >= 1, got {layer!r}"
            )
    if not ecg["conv_layers"]:
        raise ConfigError(f"{source}: ecg.conv_layers needs at least one block")
    for key in ("width", "layers", "heads", "ffn", "pos_conv_kernel", "pos_conv_groups"):
        if ecg[key] < (0 if key == "layers" else 1):
            raise ConfigError(f"{source}: ecg.{key} must be positive, got {ecg[key]!r}")
    if ecg["width"] % ecg["heads"] or ecg["width"] % ecg["pos_conv_groups"]:
        raise ConfigError(
            f"{source}: ecg.width {ecg['width']} must be divisible by ecg.heads and ecg.pos_conv_groups"
        )


class _GradScale(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Return ``x`` unchanged; gradients flowing back through it are multiplied by ``scale``."""
    return x if scale == 1.0 else _GradScale.apply(x, scale)


class _Fp32GroupNorm(nn.GroupNorm):
    """GroupNorm computed in float32 (stable under bf16 autocast); with ``mask`` (B, N) the
    statistics of each sample are taken over its valid frames only."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        if mask is None:
            return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).type_as(x)
        b, c, n = x.shape
        g = self.num_groups
        xf = x.float().view(b, g, c // g, n)  # (B, G, C/G, N)
        m = mask.to(xf.dtype)[:, None, None, :]  # (B, 1, 1, N)
        count = (m.sum(dim=(2, 3), keepdim=True) * (c // g)).clamp_min(1.0)
        mean = (xf * m).sum(dim=(2, 3), keepdim=True) / count
        var = (((xf - mean) * m) ** 2).sum(dim=(2, 3), keepdim=True) / count
        out = ((xf - mean) / torch.sqrt(var + self.eps)).view(b, c, n)
        if weight is not None:
            out = out * weight[None, :, None] + bias[None, :, None]
        return out.type_as(x)


def frame_mask(lengths: torch.Tensor, n: int) -> torch.Tensor:
    """Bool (B, n): True on the first ``lengths[b]`` positions (at least one, never a sync)."""
    return torch.arange(n, device=lengths.device)[None, :] < lengths.clamp_min(1)[:, None]


class ConvStem(nn.Module):
    """Stack of Conv1d(no bias, Kaiming-normal) -> GELU blocks; GroupNorm(C groups) in the first block.

    Args:
        in_channels: number of leads L.
        layers: list of (channels, kernel, stride).
    """

    def __init__(self, in_channels: int, layers: list[list[int]]):
        super().__init__()
        blocks = []
        c_in = in_channels
        for i, (c, k, s) in enumerate(layers):
            conv = nn.Conv1d(c_in, c, kernel_size=k, stride=s, bias=False)
            nn.init.kaiming_normal_(conv.weight)
            mods = [conv] + ([_Fp32GroupNorm(c, c, affine=True)] if i == 0 else []) + [nn.GELU()]
            blocks.append(nn.Sequential(*mods))
            c_in = c
        self.blocks = nn.ModuleList(blocks)
        self.kernels_strides = [(k, s) for _, k, s in layers]
        self.out_channels = c_in
        self.stride = math.prod(s for _, _, s in layers)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid frames (B,) after the stem for ``lengths`` (B,) valid samples (floor((n - k) / s) + 1
        per block: frames whose receptive field lies inside the valid samples)."""
        for k, s in self.kernels_strides:
            lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
        return lengths.clamp_min(0)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, T) -> (B, C, N); ``lengths`` (B,) valid samples masks the first block's GroupNorm."""
        for i, block in enumerate(self.blocks):
            if lengths is None or i > 0:
                x = block(x)
                continue
            conv, norm, act = block
            k, s = self.kernels_strides[0]
            x = conv(x)
            valid = torch.div(lengths - k, s, rounding_mode="floor") + 1
            x = act(norm(x, frame_mask(valid, x.shape[-1])))
        return x


class ConvPositionalEncoding(nn.Module):
    """Weight-normed grouped Conv1d relative position encoding followed by GELU (spec §3.2 step 2)."""

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        if dim % groups:
            raise ValueError(f"positional conv: width {dim} is not divisible by {groups} groups")
        conv = nn.Conv1d(dim, dim, kernel_size=kernel, padding=kernel // 2, groups=groups)
        nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(4.0 / (kernel * dim)))
        nn.init.zeros_(conv.bias)
        # one magnitude per kernel position; the norm is taken over the two channel axes
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.trim = 1 if kernel % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, D) positional signal (to be added to the input)."""
        y = self.conv(x.transpose(1, 2))  # (B, D, N + trim)
        if self.trim:
            y = y[:, :, : -self.trim]
        return F.gelu(y).transpose(1, 2)


class PostLNLayer(nn.Module):
    """Post-LN transformer layer: x = LN(x + Drop(MHA(x))); x = LN(x + Drop(W2 GELU(W1 x)))."""

    def __init__(
        self, dim: int, heads: int, ffn: int, dropout: float, attention_dropout: float, act_dropout: float
    ):
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, dropout=attention_dropout)
        gain = 1.0 / math.sqrt(2.0)
        for lin in (self.attn.q_proj, self.attn.k_proj, self.attn.v_proj):
            nn.init.xavier_uniform_(lin.weight, gain=gain)
        nn.init.xavier_uniform_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)
        self.norm1 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.act_drop = nn.Dropout(act_dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, D) -> (B, N, D); ``key_mask`` (B, 1, 1, N) bool: True = a valid frame to attend to."""
        x = self.norm1(x + self.drop(self.attn(x, attn_mask=key_mask)))
        h = F.gelu(self.fc1(x).float()).type_as(x)  # GELU in fp32
        return self.norm2(x + self.drop(self.fc2(self.act_drop(h))))


@register_encoder(
    "wav2vec2",
    config=Wav2Vec2Config,
    test_size={"conv_layers": [[16, 4, 4], [16, 2, 2]], "width": 32, "layers": 1, "heads": 2, "ffn": 32,
               "pos_conv_kernel": 8, "pos_conv_groups": 4},
    check=_check,
)  # fmt: skip
class Wav2Vec2Encoder(nn.Module):
    """ECG transformer encoder: conv stem -> LN + Linear -> conv pos. enc. -> LN -> post-LN layers.

    Config keys (``ecg`` section, type ``wav2vec2``): ``in_leads``, ``conv_layers`` [[C, k, s], ...],
    ``width``, ``layers``, ``heads``, ``ffn``, ``pos_conv_kernel``, ``pos_conv_groups``,
    ``dropout``, ``attention_dropout``, ``activation_dropout``, ``dropout_input``, ``conv_grad_scale``.
    """

    def __init__(self, cfg: dict):
        super().__init__()
        self.stem = ConvStem(cfg["in_leads"], cfg["conv_layers"])
        c, d = self.stem.out_channels, cfg["width"]
        self.width = d
        self.stride = self.stem.stride
        self.conv_grad_scale = float(cfg["conv_grad_scale"])
        self.feature_norm = nn.LayerNorm(c)
        self.input_proj = nn.Linear(c, d)
        self.dropout_input = nn.Dropout(cfg["dropout_input"])
        self.pos_conv = ConvPositionalEncoding(d, cfg["pos_conv_kernel"], cfg["pos_conv_groups"])
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg["dropout"])
        self.layers = nn.ModuleList(
            PostLNLayer(
                d,
                cfg["heads"],
                cfg["ffn"],
                cfg["dropout"],
                cfg["attention_dropout"],
                cfg["activation_dropout"],
            )
            for _ in range(cfg["layers"])
        )

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid tokens (B,) for ``lengths`` (B,) valid samples."""
        return self.stem.output_lengths(lengths)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ECG (B, L, T) -> ``(tokens (B, N, D), valid (B, N) bool or None)``, N = frames of the stem.

        ``lengths`` (B,): valid samples per record (None = all valid, no mask)."""
        mask = None
        if lengths is not None:
            samples = frame_mask(lengths, x.shape[-1])  # (B, T)
            x = x * samples[:, None, :].to(x.dtype)  # padding content never reaches the encoder
        feats = grad_scale(self.stem(x, lengths), self.conv_grad_scale)  # (B, C, N)
        feats = self.feature_norm(feats.transpose(1, 2))  # (B, N, C)
        h = self.dropout_input(self.input_proj(feats))  # (B, N, D)
        key_mask = None
        if lengths is not None:
            mask = frame_mask(self.output_lengths(lengths), h.shape[1])  # (B, N)
            h = h * mask[..., None].to(h.dtype)  # padded frames are zero for the positional conv
            key_mask = mask[:, None, None, :]  # (B, 1, 1, N)
        h = h + self.pos_conv(h)
        h = self.dropout(self.norm(h))
        for layer in self.layers:
            h = layer(h, key_mask)
        return h, mask
