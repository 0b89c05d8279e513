"""Shared building blocks for the descriptor networks (plain torch).

Alignment convention used by every network here: a feature map at stride ``s`` has its cell ``i``
centred on input pixel ``s * i``. That holds for any chain of odd ``k x k`` convolutions or poolings
with padding ``k // 2`` (output size ``ceil(n / s)``), and :func:`upsample_aligned` inverts it exactly,
so descriptors are not shifted by a fraction of a cell when brought back to full resolution, for any
input size (odd sizes included).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bodycorr.common.errors import BodycorrError

Norm = Literal["group", "batch", "none"]


def make_norm(kind: str, channels: int, groups: int = 8) -> nn.Module:
    """Normalisation layer: ``"group"`` (GroupNorm, batch-size independent), ``"batch"`` or ``"none"``.

    For GroupNorm the group count is the largest divisor of ``channels`` that is ``<= groups``.
    """
    if kind == "group":
        g = max(d for d in range(1, min(groups, channels) + 1) if channels % d == 0)
        return nn.GroupNorm(g, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise BodycorrError(f"norm {kind!r}: unknown normalisation. Use 'group', 'batch' or 'none'.")


class ConvNormAct(nn.Sequential):
    """``conv(k, stride, dilation) -> norm -> ReLU``; 'same' padding ``dilation * (k // 2)``.

    x: (B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride)) for odd ``k``.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        k: int = 3,
        stride: int = 1,
        dilation: int = 1,
        norm: str = "group",
        groups: int = 8,
        act: bool = True,
    ):
        pad = dilation * (k // 2)
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, dilation=dilation, bias=norm == "none"),
            make_norm(norm, c_out, groups),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Basic residual block (post-activation, as in ResNet): ``relu(x + norm(conv(relu(norm(conv(x))))))``.

    A 1x1 projection is used on the shortcut when ``c_in != c_out`` or ``stride > 1``.
    x: (B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, norm: str = "group", groups: int = 8):
        super().__init__()
        self.conv1 = ConvNormAct(c_in, c_out, 3, stride=stride, norm=norm, groups=groups)
        self.conv2 = ConvNormAct(c_out, c_out, 3, norm=norm, groups=groups, act=False)
        if c_in != c_out or stride != 1:
            self.skip: nn.Module = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), make_norm(norm, c_out, groups)
            )
        else:
            self.skip = nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.skip(x) + self.conv2(self.conv1(x)))


class SameMaxPool(nn.Module):
    """Max pooling with 'same' padding ``dilation * (k // 2)`` for any dilation (odd ``k``).

    torch's MaxPool2d refuses padding above ``k // 2``, so dilated pooling pads with -inf here.
    x: (B, C, H, W) -> (B, C, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, k: int = 3, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.k, self.stride, self.dilation = k, stride, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.dilation * (self.k // 2)
        x = F.pad(x, (p, p, p, p), value=float("-inf"))
        return F.max_pool2d(x, self.k, stride=self.stride, dilation=self.dilation)

    def extra_repr(self) -> str:
        return f"k={self.k}, stride={self.stride}, dilation={self.dilation}"


def upsample_aligned(x: torch.Tensor, size: tuple[int, int], factor: int) -> torch.Tensor:
    """Bilinearly upsample a stride-``factor`` map to ``size``, honouring the alignment convention.

    Output pixel ``p`` samples the feature map at coordinate ``p / factor`` (cell ``i`` sits on pixel
    ``factor * i``). The map is edge-replicated by one cell so pixels past the last cell centre get
    the border value; then ``align_corners=True`` interpolation and a crop give the exact mapping.

    x: (B, C, h, w) with ``h >= ceil(H / factor)``; size: (H, W) -> (B, C, H, W).
    """
    if factor == 1:
        return x[..., : size[0], : size[1]]
    h, w = x.shape[-2:]
    xp = F.pad(x, (0, 1, 0, 1), mode="replicate")
    out = F.interpolate(xp, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
    return out[..., : size[0], : size[1]]


class UpBlock(nn.Module):
    """Decoder step of a U-Net: aligned x2 upsampling, concat with the skip, two conv-norm-relu.

    x: (B, C_in, h, w), skip: (B, C_skip, H, W) with ``h == ceil(H / 2)`` -> (B, C_out, H, W).
    """

    def __init__(self, c_in: int, c_skip: int, c_out: int, norm: str = "group", groups: int = 8):
        super().__init__()
        self.reduce = ConvNormAct(c_in, c_out, 1, norm=norm, groups=groups)
        self.fuse = nn.Sequential(
            ConvNormAct(c_out + c_skip, c_out, 3, norm=norm, groups=groups),
            ConvNormAct(c_out, c_out, 3, norm=norm, groups=groups),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # The 1x1 reduction runs before upsampling, on 4x fewer pixels.
        x = upsample_aligned(self.reduce(x), skip.shape[-2:], 2)
        return self.fuse(torch.cat([x, skip], dim=1))


class GlobalPoolContext(nn.Module):
    """Global context by pooling: ``x + MLP([mean_hw(x), max_hw(x)])`` broadcast over all positions.

    Gives every pixel a summary of the whole body (e.g. facing the camera or away), which is what
    left/right disambiguation needs. The last MLP layer starts at zero (identity at start).
    x: (B, C, h, w) -> (B, C, h, w).
    """

    def __init__(self, channels: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or channels
        self.mlp = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return x + self.mlp(g)[:, :, None, None]


def sincos_position_2d(h: int, w: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """Fixed 2-D sine/cosine position code on normalised coordinates in [-1, 1]: (h * w, dim).

    Normalised coordinates make the code independent of the input size. ``dim`` must be a multiple of 4.
    """
    if dim % 4:
        raise BodycorrError(f"position code: dim={dim} is not a multiple of 4. Use a width divisible by 4.")
    q = dim // 4
    freqs = math.pi * (2.0 ** torch.arange(q, device=device, dtype=torch.float32)) / 2.0
    ys = torch.linspace(-1.0, 1.0, h, device=device) if h > 1 else torch.zeros(1, device=device)
    xs = torch.linspace(-1.0, 1.0, w, device=device) if w > 1 else torch.zeros(1, device=device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    ay = yy.reshape(-1, 1) * freqs
    ax = xx.reshape(-1, 1) * freqs
    pe = torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1)
    return pe.to(dtype) if dtype is not None else pe


class AttentionContext(nn.Module):
    """One pre-norm transformer block over the bottleneck cells (global self-attention).

    Every cell attends to every other, with a fixed 2-D position code, so a pixel can relate itself to
    distant body parts (head vs. feet, the other arm) to settle left/right. The output projection and
    the last MLP layer start at zero, so the block starts as the identity.
    x: (B, C, h, w) -> (B, C, h, w); ``C`` divisible by ``heads`` and by 4.
    """

    def __init__(self, channels: int, heads: int = 4, mlp_ratio: float = 2.0):
        super().__init__()
        if channels % heads:
            raise BodycorrError(f"attention: {channels} channels not divisible by {heads} heads. Change the width.")
        self.heads = heads
        self.norm1 = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.norm2 = nn.LayerNorm(channels)
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))
        for lin in (self.proj, self.mlp[-1]):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, hw, C)
        u = self.norm1(t) + sincos_position_2d(h, w, c, device=x.device, dtype=x.dtype)
        q, k, v = self.qkv(u).reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, heads, hw, C / heads)
        t = t + self.proj(a.transpose(1, 2).reshape(b, h * w, c))
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)
