"""Depth descriptor networks: a depth map in, one unit descriptor per pixel out.

Input ``x: (B, 2, H, W)`` float, channels ``[normalised depth, foreground mask]``:

* channel 0: depth minus the person's median foreground depth, in network units, 0 on the
  background (done per image by the caller: :func:`bodycorr.models.inputs.depth_to_input`);
* channel 1: foreground mask, 1 on the person and 0 elsewhere (so a pixel at the median depth is not
  confused with background).

Output ``(B, D, H, W)``: L2-normalised descriptors at input resolution, any H, W (odd sizes too) above
the model's ``min_size``; D = ``descriptor_dim`` (16, as in the paper). Background pixels get
descriptors too; callers ignore them.

Architectures (both registered, see :mod:`bodycorr.models.registry`):

``wei_alexnet``
    Wei et al. 2016, Table 1: AlexNet tower (conv 11-4, max 3-2, conv 5-1, max 3-2, 2 x conv 3-1,
    conv 3-1, max 3-2, 2 x "fc" as 1x1 conv), interpolation back up and a final 3x3 conv to D.
    The paper keeps full density by shift-and-stitch ("num" copies 4/16/64 after each pooling), which
    is exactly a stride-1 pooling followed by layers dilated by 2/4/8 ("a trous"); ``output_stride``
    picks how many poolings get that treatment: 4 = the paper's stride-4 output (all three), 8, 16,
    or 32 = a plain strided FCN (default 8). Deviations, all documented in :class:`WeiAlexNetConfig`:
    channel widths scaled by ``width`` and ``fc_width`` (the paper's 96-256-384-384-256-4096-4096 is
    22 M parameters, 88 MB; default 24-64-96-96-64-512-512, 0.6 M); GroupNorm after every conv instead of LRN after the first two poolings (``norm="lrn"``
    restores the paper's); no ReLU on the descriptor layer (it would confine descriptors to the
    positive orthant); the last 3x3 conv runs on the stride-``output_stride`` grid and bilinear
    upsampling brings it to full resolution (the paper's "linear smoothing between the descriptors
    of neighbouring pixels").

``unet``
    Modern encoder-decoder: a stride-2 stem (descriptors computed at half resolution, then
    bilinearly upsampled; ``stem_stride=1`` for full resolution at 4x the cost), residual stages with
    GroupNorm, stride-2 conv downsampling, widths ``base_width * 2**i`` capped at ``max_width``
    (default 16-32-64-128-192, 1.8 M parameters), skip connections, and a global-context module at
    the bottleneck (``"attention"``: one transformer block over the bottleneck cells, or ``"pool"``:
    pooled features broadcast back), because left/right flips, the main failure mode, can only be
    settled by looking at the whole body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bodycorr.common.errors import BodycorrError
from bodycorr.models.blocks import (
    AttentionContext,
    ConvNormAct,
    GlobalPoolContext,
    ResBlock,
    SameMaxPool,
    UpBlock,
    upsample_aligned,
)
from bodycorr.models.heads import MultiTaskHeads
from bodycorr.models.registry import ModelConfig, make_config, register_model

__all__ = [
    "DescriptorConfig",
    "WeiAlexNetConfig",
    "UNetConfig",
    "DescriptorNet",
    "WeiAlexNet",
    "UNet",
]


# ----------------------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class DescriptorConfig(ModelConfig):
    """Fields shared by all descriptor networks.

    in_channels: input channels, 2 = [normalised depth, mask].
    descriptor_dim: D, descriptor length (paper: 16).
    num_segmentations, num_patches: training heads, one cosine head of ``num_patches`` classes per
        segmentation (paper: 100 segmentations x 500 patches). 0 segmentations = no such heads.
    num_keypoints: key-point head with ``num_keypoints + 1`` classes (last = background); 0 = none.
    head_scale: cosine-logit scale ``s`` of the heads.
    chirality_head: a training head on the backbone's pooled deepest features that tells whether
        the person's left side appears on the image's right (facing the camera) or left. The
        patch tasks alone leave that global bit unlearnt (descriptors then cannot tell left from
        right); this head gives it a direct gradient. Dropped with the other heads when shipped.
    num_dense: the dense head's template sample points (one unit embedding each); 0 = none.
    dense_scale: its cosine-logit scale (sharper than the patch heads': neighbours are a few cm apart).
    """

    in_channels: int = 2
    descriptor_dim: int = 16
    num_segmentations: int = 0
    num_patches: int = 500
    num_keypoints: int = 0
    head_scale: float = 16.0
    chirality_head: bool = False
    num_dense: int = 0
    dense_scale: float = 24.0

    def check(self) -> None:
        for name in ("in_channels", "descriptor_dim", "num_patches"):
            if getattr(self, name) < 1:
                self._fail(name, "must be >= 1")
        if self.dense_scale <= 0:
            self._fail("dense_scale", "must be > 0")
        for name in ("num_segmentations", "num_keypoints", "num_dense"):
            if getattr(self, name) < 0:
                self._fail(name, "must be >= 0")
        if self.head_scale <= 0:
            self._fail("head_scale", "must be > 0")


@dataclass(frozen=True)
class WeiAlexNetConfig(DescriptorConfig):
    """Wei et al. 2016 Table 1 tower.

    width: multiplier on the paper's conv channels (96, 256, 384, 384, 256), each rounded to a
        multiple of 8: 0.25 gives 24, 64, 96, 96, 64.
    fc_width: multiplier on the two 4096-channel "fc" (1x1) layers; None = ``width``. The paper's
        fc layers are 16x wider than conv 6 and, run on a dense grid, dominate the cost; the default
        0.125 (512 channels) keeps the model at 0.6 M parameters and about the compute of the default
        ``unet``. ``width=1, fc_width=None, output_stride=4, norm="lrn"`` is the paper's network
        (22 M parameters, 88 MB).
    output_stride: stride of the grid the descriptor layer runs on. 4 = the paper (shift-and-stitch
        over all three poolings, done as stride-1 pooling + dilation); 32 = no shift-and-stitch.
        Default 8: descriptors 2x coarser than the paper's for 1/4 of the compute.
    norm: "group"/"batch"/"none" after every conv, or "lrn" = the paper's local response
        normalisation after poolings 1 and 2 and no other normalisation.
    """

    width: float = 0.25
    fc_width: float | None = 0.125
    output_stride: Literal[4, 8, 16, 32] = 8
    norm: Literal["group", "batch", "lrn", "none"] = "group"

    def check(self) -> None:
        super().check()
        if self.width <= 0:
            self._fail("width", "must be > 0")
        if self.fc_width is not None and self.fc_width <= 0:
            self._fail("fc_width", "must be > 0 (or None = same as width)")


@dataclass(frozen=True)
class UNetConfig(DescriptorConfig):
    """Encoder-decoder with skips.

    stem_stride: stride of the first level. The stem is a ``(2 s + 1)``-wide conv of stride ``s``; the
        descriptor layer runs at stride ``s`` and is bilinearly upsampled to full size. 2 costs 1/4 of
        1 (every level runs on 4x fewer pixels) for descriptors still twice as dense as the paper's.
    base_width, max_width: level ``i`` has ``min(base_width * 2**i, max_width)`` channels.
    num_levels: resolution levels; the bottleneck has stride ``stem_stride * 2**(num_levels - 1)``
        (32 by default: 4x4 cells for a 128x128 input, which the attention block sees whole).
    blocks_per_level: residual blocks per encoder level (the first one of a level downsamples).
    norm, norm_groups: normalisation after each conv; GroupNorm uses up to ``norm_groups`` groups.
    global_context: bottleneck module: "attention" (one transformer block, 2-D sin/cos positions),
        "pool" (mean+max pooled features -> MLP -> added everywhere) or "none".
    attention_heads: heads of the attention block (the bottleneck width must be divisible by it and by 4).
    """

    stem_stride: Literal[1, 2, 4] = 2
    base_width: int = 16
    max_width: int = 192
    num_levels: int = 5
    blocks_per_level: int = 1
    norm: Literal["group", "batch", "none"] = "group"
    norm_groups: int = 8
    global_context: Literal["attention", "pool", "none"] = "attention"
    attention_heads: int = 4

    def check(self) -> None:
        super().check()
        for name in ("base_width", "max_width", "blocks_per_level", "norm_groups", "attention_heads"):
            if getattr(self, name) < 1:
                self._fail(name, "must be >= 1")
        if not 1 <= self.num_levels <= 8:
            self._fail("num_levels", "must be in 1..8")
        top = self.widths[-1]
        if self.global_context == "attention" and (top % self.attention_heads or top % 4):
            self._fail("attention_heads", f"must divide the bottleneck width {top}, which must be a multiple of 4")

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(min(self.base_width * 2**i, self.max_width) for i in range(self.num_levels))


# ----------------------------------------------------------------------------------------- backbones


def _ch(c: int, width: float) -> int:
    return max(8, int(round(c * width / 8)) * 8)


def global_layout(h: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) deepest features -> (B, 4 C): mean over each image quadrant.

    Quadrants, not one global mean: which side of the image a part is on is the chirality cue,
    and a plain mean would throw that layout away.
    """
    return F.adaptive_avg_pool2d(h, 2).flatten(1)


class WeiAlexNet(nn.Module):
    """Table 1 tower: x (B, C_in, H, W) -> raw (un-normalised) descriptors (B, D, H, W)."""

    PAPER_CHANNELS = (96, 256, 384, 384, 256, 4096, 4096)

    def __init__(self, cfg: WeiAlexNetConfig):
        super().__init__()
        c1, c3, c5a, c5b, c6 = (_ch(c, cfg.width) for c in self.PAPER_CHANNELS[:5])
        fc_width = cfg.width if cfg.fc_width is None else cfg.fc_width
        c8a, c8b = (_ch(c, fc_width) for c in self.PAPER_CHANNELS[5:])
        conv_norm = "none" if cfg.norm == "lrn" else cfg.norm
        # Poolings 1..3 that stay strided; the rest become stride-1 + dilation (= shift-and-stitch).
        n_strided = {4: 0, 8: 1, 16: 2, 32: 3}[cfg.output_stride]
        self.output_stride = cfg.output_stride
        self.min_size = 32

        def cna(ci: int, co: int, k: int, stride: int = 1, dilation: int = 1) -> nn.Module:
            return ConvNormAct(ci, co, k, stride=stride, dilation=dilation, norm=conv_norm)

        dil = 1

        def pool(i: int) -> list[nn.Module]:
            nonlocal dil
            if i < n_strided:
                layers: list[nn.Module] = [SameMaxPool(3, stride=2)]
            else:
                layers = [SameMaxPool(3, stride=1, dilation=dil)]
            if cfg.norm == "lrn" and i < 2:
                layers.append(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0))
            if i >= n_strided:
                dil *= 2
            return layers

        layers: list[nn.Module] = [cna(cfg.in_channels, c1, 11, stride=4)]  # 1: conv 11-4
        layers += pool(0)  # 2: max 3-2 (+ lrn)
        layers.append(cna(c1, c3, 5, dilation=dil))  # 3: conv 5-1
        layers += pool(1)  # 4: max 3-2 (+ lrn)
        layers += [cna(c3, c5a, 3, dilation=dil), cna(c5a, c5b, 3, dilation=dil)]  # 5: 2 x conv 3-1
        layers.append(cna(c5b, c6, 3, dilation=dil))  # 6: conv 3-1
        layers += pool(2)  # 7: max 3-2
        layers += [cna(c6, c8a, 1), cna(c8a, c8b, 1)]  # 8: 2 x conv 1-1 ("fc")
        self.features = nn.Sequential(*layers)
        # 9 "int" + 10 conv 3-1: 3x3 conv on the output grid, then bilinear upsampling to full size.
        self.descriptor = nn.Conv2d(c8b, cfg.descriptor_dim, 3, padding=1)
        self.global_width = 4 * c8b
        self.global_features: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        self.global_features = global_layout(f)  # read by the training-only chirality head
        return upsample_aligned(self.descriptor(f), x.shape[-2:], self.output_stride)


class UNet(nn.Module):
    """Residual U-Net: x (B, C_in, H, W) -> raw (un-normalised) descriptors (B, D, H, W)."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        w = cfg.widths
        kw = dict(norm=cfg.norm, groups=cfg.norm_groups)
        self.stem_stride = cfg.stem_stride
        self.min_size = cfg.stem_stride * 2 ** (cfg.num_levels - 1)
        self.stem = ConvNormAct(cfg.in_channels, w[0], 2 * cfg.stem_stride + 1, stride=cfg.stem_stride, **kw)
        self.encoder = nn.ModuleList()
        for i, c in enumerate(w):
            c_prev = w[max(i - 1, 0)]
            blocks = [ResBlock(c_prev, c, stride=1 if i == 0 else 2, **kw)]
            blocks += [ResBlock(c, c, **kw) for _ in range(cfg.blocks_per_level - 1)]
            self.encoder.append(nn.Sequential(*blocks))
        if cfg.global_context == "attention":
            self.context: nn.Module = AttentionContext(w[-1], heads=cfg.attention_heads)
        elif cfg.global_context == "pool":
            self.context = GlobalPoolContext(w[-1])
        else:
            self.context = nn.Identity()
        self.decoder = nn.ModuleList(UpBlock(w[i + 1], w[i], w[i], **kw) for i in reversed(range(len(w) - 1)))
        self.head = nn.Conv2d(w[0], cfg.descriptor_dim, 1)
        self.global_width = 4 * w[-1]
        self.global_features: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = self.stem(x)
        for stage in self.encoder:
            h = stage(h)
            skips.append(h)
        h = self.context(skips.pop())
        self.global_features = global_layout(h)  # read by the training-only chirality head
        for up in self.decoder:
            h = up(h, skips.pop())
        return upsample_aligned(self.head(h), x.shape[-2:], self.stem_stride)


# ----------------------------------------------------------------------------------------- model


class DescriptorNet(nn.Module):
    """Backbone + training heads. ``forward(x) -> descriptors``; heads are used by the trainer.

    x: (B, in_channels, H, W) float, [normalised depth, mask] (module docstring), H, W >= min_size.
    Returns (B, D, H, W), unit L2 norm over D.
    Attributes: ``config``, ``model_name`` (set by create_model), ``descriptor_dim``, ``backbone``,
    ``heads`` (:class:`MultiTaskHeads` or None when the config has no heads).
    """

    def __init__(self, config: DescriptorConfig, backbone: nn.Module, model_name: str = ""):
        super().__init__()
        self.config = config
        self.model_name = model_name or type(backbone).__name__
        self.backbone = backbone
        self.descriptor_dim = config.descriptor_dim
        self.in_channels = config.in_channels
        self.min_size = int(getattr(backbone, "min_size", 1))
        if config.num_segmentations > 0 or config.num_keypoints > 0 or config.num_dense > 0:
            self.heads: MultiTaskHeads | None = MultiTaskHeads(
                config.descriptor_dim,
                config.num_segmentations,
                config.num_patches,
                config.num_keypoints,
                config.head_scale,
                global_dim=backbone.global_width if config.chirality_head else 0,
                num_dense=config.num_dense,
                dense_scale=config.dense_scale,
            )
        else:
            self.heads = None

    def check_input(self, x: torch.Tensor) -> None:
        """Raise one line unless x is a float (B, in_channels, H, W) with H, W >= min_size."""
        ok = isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] == self.in_channels
        if not ok or not x.is_floating_point() or min(x.shape[-2:]) < self.min_size:
            got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise BodycorrError(
                f"{self.model_name}: input must be float (B, {self.in_channels}, H, W) "
                f"[normalised depth, mask] with H, W >= {self.min_size}, got {got}. "
                "Build it with bodycorr.models.inputs.depth_to_input(depth)."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return F.normalize(self.backbone(x), dim=1)

    def chirality_logits(self) -> torch.Tensor:
        """(B, 2) logits of [left side on the image's left, on the image's right] for the last forward's batch."""
        if self.heads is None or self.heads.chirality is None or self.backbone.global_features is None:
            raise BodycorrError(f"{self.model_name}: no chirality head (build it with chirality_head=True) or no forward pass yet.")
        return self.heads.chirality(self.backbone.global_features)


# ----------------------------------------------------------------------------------------- registry


@register_model(
    "wei_alexnet",
    tiny={"width": 1 / 32, "fc_width": 1 / 32, "num_segmentations": 3, "num_patches": 7, "num_keypoints": 4},
)
def wei_alexnet(**overrides) -> DescriptorNet:
    """Wei et al. 2016 Table 1 tower (see module docstring); options: :class:`WeiAlexNetConfig`."""
    cfg = make_config(WeiAlexNetConfig, "wei_alexnet", overrides)
    return DescriptorNet(cfg, WeiAlexNet(cfg), "wei_alexnet")


@register_model(
    "unet",
    tiny={"base_width": 4, "max_width": 16, "num_segmentations": 3, "num_patches": 7, "num_keypoints": 4},
)
def unet(**overrides) -> DescriptorNet:
    """Residual U-Net with a global-context bottleneck; options: :class:`UNetConfig`."""
    cfg = make_config(UNetConfig, "unet", overrides)
    return DescriptorNet(cfg, UNet(cfg), "unet")
