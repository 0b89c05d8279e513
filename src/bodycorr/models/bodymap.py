"""Image-to-surface networks (BodyMap): a DPT-style two-stream vision transformer and the U-Net baseline.

(Written by the lead engineer for the training run; the surface code module is separate.)

Both map an RGB image to per-pixel features from which :meth:`SurfaceNet.classify` gives 3 x 256
scores (one 256-way classification per channel of the surface colour code) and a silhouette.
Full-resolution scores (768 x H x W) are never made for a whole batch: training classifies sampled
pixels, :meth:`SurfaceNet.predict` works in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bodycorr.common.errors import BodycorrError
from bodycorr.models.blocks import ResBlock, make_norm
from bodycorr.models.registry import ModelConfig, make_config, register_model

LEVELS = 256
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, eq=False)
class SurfaceOutput:
    """features: (B, C, H, W); silhouette: (B, 1, H, W) logits; stage1: the first-stage output or None."""

    features: torch.Tensor
    silhouette: torch.Tensor
    stage1: "SurfaceOutput | None" = None


@dataclass(frozen=True, eq=False)
class SurfacePrediction:
    """colour: (B, H, W, 3) float32 code in [0, 255]; confidence: (B, H, W) in [0, 1]; silhouette: (B, H, W) probability."""

    colour: torch.Tensor
    confidence: torch.Tensor
    silhouette: torch.Tensor


@dataclass(frozen=True)
class SurfaceNetConfig(ModelConfig):
    """Shared head options. ``features``: per-pixel feature width C; ``hidden``: classifier MLP width."""

    features: int = 32
    hidden: int = 96

    def check(self) -> None:
        if self.features < 4:
            self._fail("features", "must be at least 4")


@dataclass(frozen=True)
class BodyMapViTConfig(SurfaceNetConfig):
    """DPT-style two-stream ViT.

    Attributes:
        patch: token patch size (pixels). dim/depth/heads: appearance transformer.
        corr_dim/corr_depth/corr_heads: correspondence transformer (coarse map stream).
        two_stream: False = the paper's "RGB-only" ablation (one stage, no coarse input).
        fusion: width of the reassembled maps and fusion blocks.
        pos_grid: side of the learned positional-embedding grid (interpolated for other sizes).
    """

    patch: int = 8
    dim: int = 96
    depth: int = 4
    heads: int = 3
    mlp_ratio: float = 2.0
    corr_dim: int = 48
    corr_depth: int = 1
    corr_heads: int = 2
    two_stream: bool = True
    fusion: int = 32
    pos_grid: int = 16
    final_stride: int = 4

    def check(self) -> None:
        super().check()
        if self.patch not in (4, 8, 16):
            self._fail("patch", "must be 4, 8 or 16")
        if self.dim % self.heads or self.corr_dim % self.corr_heads:
            raise BodycorrError("BodyMapViTConfig: dim must be divisible by heads and corr_dim by corr_heads.")
        if self.depth < 4:
            self._fail("depth", "must be at least 4 (features are read from 4 layers)")
        if self.final_stride not in (2, 4):
            self._fail("final_stride", "must be 2 or 4")


@dataclass(frozen=True)
class BodyMapUNetConfig(SurfaceNetConfig):
    """U-Net baseline: ``base`` channels doubled over ``levels`` downsamplings; ``stem_stride`` 2 works at
    half resolution (features upsampled bilinearly), 1 at full resolution."""

    base: int = 16
    levels: int = 4
    stem_stride: int = 2


class SurfaceNet(nn.Module):
    """Common heads: per-pixel classifier of the 3 colour channels, expectations and chunked prediction."""

    config: SurfaceNetConfig

    def _make_heads(self, c: int) -> None:
        self.classifier = nn.Sequential(nn.Linear(c, self.config.hidden), nn.GELU(), nn.Linear(self.config.hidden, 3 * LEVELS))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (N, 3, 256) or (B, C, H, W) -> (B, 3, 256, H, W) raw scores."""
        if features.ndim in (2, 4) and features.shape[1] != self.config.features:
            raise BodycorrError(
                f"classify: features must have C = {self.config.features} channels (N, C) or (B, C, H, W), got {tuple(features.shape)}."
            )
        if features.ndim == 2:
            return self.classifier(features).view(-1, 3, LEVELS)
        if features.ndim == 4:
            b, c, h, w = features.shape
            out = self.classifier(features.permute(0, 2, 3, 1).reshape(-1, c)).view(b, h, w, 3, LEVELS)
            return out.permute(0, 3, 4, 1, 2)
        raise BodycorrError(f"classify: features must be (N, C) or (B, C, H, W), got {tuple(features.shape)}.")

    def expected_colour(self, features: torch.Tensor) -> torch.Tensor:
        """Softmax-expected colour in [0, 255]: (N, C) -> (N, 3); (B, C, H, W) -> (B, 3, H, W)."""
        logits = self.classify(features)
        levels = torch.arange(LEVELS, device=logits.device, dtype=logits.dtype)
        if logits.ndim == 3:
            return (logits.softmax(-1) * levels).sum(-1)
        return (logits.softmax(2) * levels[:, None, None]).sum(2)

    @staticmethod
    def _check_rgb(rgb: torch.Tensor) -> None:
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise BodycorrError(f"surface network: expected rgb (B, 3, H, W), got {tuple(rgb.shape)}.")
        if not rgb.is_floating_point():
            raise BodycorrError(f"surface network: rgb must be float in [0, 1], got {rgb.dtype}. Divide uint8 images by 255.")
        if min(rgb.shape[-2:]) < 8:
            raise BodycorrError(f"surface network: image {tuple(rgb.shape[-2:])} is too small (at least 8x8).")

    @staticmethod
    def _normalise(rgb: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(_MEAN, device=rgb.device, dtype=rgb.dtype)[:, None, None]
        std = torch.tensor(_STD, device=rgb.device, dtype=rgb.dtype)[:, None, None]
        return (rgb - mean) / std

    @torch.no_grad()
    def predict(self, rgb: torch.Tensor, chunk: int = 16384, window: int = 4, foreground: float | None = None,
                dilate: int = 2) -> SurfacePrediction:  # fmt: skip
        """Colour code, confidence and silhouette per pixel (no grad, memory-bounded).

        rgb: (B, 3, H, W) in [0, 1]. The colour is the argmax level of each channel refined by the
        expectation over ``argmax +- window`` levels; the confidence is the probability mass in that
        window, averaged over the three channels. With ``foreground`` set, only pixels whose
        silhouette probability exceeds it (grown by ``dilate`` pixels, so resampling near the
        outline stays exact) are classified, the rest get colour 0 and confidence 0: the per-pixel
        3 x 256-way classification costs more than the network on a CPU, and people rarely fill
        the frame.
        """
        was = self.training
        self.eval()
        out = self(rgb)
        if was:
            self.train()
        b, c, h, w = out.features.shape
        sil = out.silhouette[:, 0].float().sigmoid()
        flat = out.features.permute(0, 2, 3, 1).reshape(-1, c)
        keep = None
        if foreground is not None:
            m = (sil > foreground).float()[:, None]
            if dilate > 0:
                m = F.max_pool2d(m, 2 * dilate + 1, stride=1, padding=dilate)
            keep = m.reshape(-1).nonzero()[:, 0]
            flat = flat[keep]
        cols, confs = [], []
        offsets = torch.arange(-window, window + 1, device=flat.device)
        for i in range(0, flat.shape[0], chunk):
            # Only the 2 * window + 1 levels around the argmax are needed: gather them and normalise by
            # the log-sum-exp instead of materialising the full (n, 3, 256) softmax (10x less memory traffic).
            logits = self.classify(flat[i : i + chunk]).float()  # (n, 3, 256)
            lse = logits.logsumexp(-1, keepdim=True)
            idx = logits.argmax(-1, keepdim=True) + offsets  # (n, 3, 2w+1)
            inside = (idx >= 0) & (idx < LEVELS)
            idx = idx.clamp(0, LEVELS - 1)
            p = (logits.gather(-1, idx) - lse).exp() * inside
            mass = p.sum(-1)
            cols.append((p * idx).sum(-1) / mass.clamp_min(1e-12))
            confs.append(mass.mean(-1))
        col = torch.cat(cols) if cols else flat.new_zeros(0, 3)
        con = torch.cat(confs) if confs else flat.new_zeros(0)
        if keep is not None:
            colour = col.new_zeros(b * h * w, 3).index_copy_(0, keep, col)
            conf = con.new_zeros(b * h * w).index_copy_(0, keep, con)
        else:
            colour, conf = col, con
        return SurfacePrediction(colour=colour.view(b, h, w, 3), confidence=conf.view(b, h, w), silhouette=sil)


# ---------------------------------------------------------------- ViT parts


class Block(nn.Module):
    """Pre-norm transformer block (scaled-dot-product attention + MLP)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.n1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.n2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(a)
        return x + self.mlp(self.n2(x))


class ViTStream(nn.Module):
    """Patch embedding + class token + learned positions + blocks; returns tokens after chosen layers."""

    def __init__(self, in_ch: int, patch: int, dim: int, depth: int, heads: int, mlp_ratio: float, pos_grid: int):
        super().__init__()
        self.patch = patch
        self.embed = nn.Conv2d(in_ch, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, dim, pos_grid, pos_grid) * 0.02)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, hooks: tuple[int, ...]) -> tuple[list[torch.Tensor], tuple[int, int]]:
        t = self.embed(x)  # (B, D, h, w)
        b, d, h, w = t.shape
        pos = F.interpolate(self.pos_embed, size=(h, w), mode="bilinear", align_corners=False) if self.pos_embed.shape[-2:] != (h, w) else self.pos_embed
        t = (t + pos).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(b, -1, -1), t], 1)
        outs = []
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i in hooks:
                outs.append(self.norm(t) if i == len(self.blocks) - 1 else t)
        return outs, (h, w)


class Reassemble(nn.Module):
    """DPT reassemble: read out the class token ("project"), tokens -> map, resample to a scale."""

    def __init__(self, dim: int, out: int, factor: float):
        super().__init__()
        self.readout = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())
        self.proj = nn.Conv2d(dim, out, 1)
        if factor == 4:
            self.resample = nn.Sequential(nn.ConvTranspose2d(out, out, 4, stride=4))
        elif factor == 2:
            self.resample = nn.ConvTranspose2d(out, out, 2, stride=2)
        elif factor == 1:
            self.resample = nn.Identity()
        else:  # 0.5
            self.resample = nn.Conv2d(out, out, 3, stride=2, padding=1)

    def forward(self, tokens: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        cls, t = tokens[:, :1], tokens[:, 1:]
        t = self.readout(torch.cat([t, cls.expand_as(t)], -1))
        b, n, d = t.shape
        return self.resample(self.proj(t.transpose(1, 2).reshape(b, d, *hw)))


class RCU(nn.Module):
    """Residual convolutional unit."""

    def __init__(self, c: int):
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1)
        self.c2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(F.relu(self.c1(F.relu(x))))


class Fusion(nn.Module):
    """DPT fusion block: add the skip (through an RCU), refine, upsample 2x."""

    def __init__(self, c: int, upsample: bool = True):
        super().__init__()
        self.skip = RCU(c)
        self.refine = RCU(c)
        self.out = nn.Conv2d(c, c, 1)
        self.upsample = upsample

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.skip(skip)
        x = self.refine(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.out(x)


class BodyMapViT(SurfaceNet):
    """Two-stream DPT: appearance (RGB) and correspondence (coarse code map) transformers, fused, decoded.

    ``forward(rgb, coarse=None)``: with ``coarse=None`` the appearance stream alone is decoded first
    (stage 1); its expected colours and silhouette (at 1/4 resolution, detached) become the coarse
    input of the correspondence stream, and the fused tokens are decoded again (stage 2). The
    appearance transformer runs once.
    """

    def __init__(self, config: BodyMapViTConfig):
        super().__init__()
        self.config = cfg = config
        self.app = ViTStream(3, cfg.patch, cfg.dim, cfg.depth, cfg.heads, cfg.mlp_ratio, cfg.pos_grid)
        self.hooks = tuple(int(round(x)) for x in torch.linspace(cfg.depth / 4 - 1, cfg.depth - 1, 4).tolist())
        if cfg.two_stream:
            self.corr = ViTStream(4, cfg.patch, cfg.corr_dim, cfg.corr_depth, cfg.corr_heads, cfg.mlp_ratio, cfg.pos_grid)
            self.corr_proj = nn.ModuleList([nn.Linear(cfg.corr_dim, cfg.dim) for _ in range(4)])
            for p in self.corr_proj:
                nn.init.zeros_(p.weight)
                nn.init.zeros_(p.bias)
        # reassemble to strides patch/4 .. patch*2 (for patch 8: 2, 4, 8, 16), fuse coarse to fine
        factors = (4, 2, 1, 0.5) if cfg.final_stride == 2 else (2, 2, 1, 0.5)
        self.reassemble = nn.ModuleList([Reassemble(cfg.dim, cfg.fusion, f) for f in factors])
        # reassembled maps at strides (patch 8) 2|4, 4, 8, 16; fused coarse to fine down to ``final_stride``
        self.fusion = nn.ModuleList([Fusion(cfg.fusion, upsample=i >= 2 or (i == 1 and cfg.final_stride == 2)) for i in range(4)])
        self.head = nn.Sequential(nn.Conv2d(cfg.fusion, cfg.features, 3, padding=1), nn.ReLU(), nn.Conv2d(cfg.features, cfg.features, 3, padding=1))
        self.sil = nn.Conv2d(cfg.features, 1, 1)
        self._make_heads(cfg.features)

    def _decode(self, tokens: list[torch.Tensor], hw: tuple[int, int], size: tuple[int, int]) -> SurfaceOutput:
        maps = [r(t, hw) for r, t in zip(self.reassemble, tokens)]
        x = self.fusion[3](maps[3])
        x = self.fusion[2](x, maps[2])
        x = self.fusion[1](x, maps[1])
        x = self.fusion[0](x, maps[0])
        f = F.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False)
        return SurfaceOutput(features=f, silhouette=self.sil(f))

    def forward(self, rgb: torch.Tensor, coarse: torch.Tensor | None = None) -> SurfaceOutput:
        """rgb: (B, 3, H, W) in [0, 1]; coarse: (B, 4, H, W) code / 255 and person probability, or None."""
        self._check_rgb(rgb)
        cfg = self.config
        h, w = rgb.shape[-2:]
        m = cfg.patch * 2
        ph, pw = (-h) % m, (-w) % m
        x = F.pad(self._normalise(rgb), (0, pw, 0, ph))
        size = x.shape[-2:]
        tokens, hw = self.app(x, self.hooks)
        crop = (slice(None), slice(None), slice(0, h), slice(0, w))
        if not cfg.two_stream:
            o = self._decode(tokens, hw, size)
            return SurfaceOutput(o.features[crop], o.silhouette[crop])
        stage1 = None
        if coarse is None:
            o1 = self._decode(tokens, hw, size)
            stage1 = SurfaceOutput(o1.features[crop], o1.silhouette[crop])
            with torch.no_grad():
                small = F.avg_pool2d(o1.features.detach(), 4)
                col = self.expected_colour(small) / (LEVELS - 1)
                prob = F.avg_pool2d(o1.silhouette.detach(), 4).sigmoid()
                coarse_p = F.interpolate(torch.cat([col, prob], 1), size=size, mode="nearest")
        else:
            if coarse.shape != (rgb.shape[0], 4, h, w):
                raise BodycorrError(f"surface network: coarse must be (B, 4, H, W) = {(rgb.shape[0], 4, h, w)}, got {tuple(coarse.shape)}.")
            coarse_p = F.pad(coarse, (0, pw, 0, ph))
        ctoks, _ = self.corr(coarse_p * 2 - 1, (cfg.corr_depth - 1,))
        c = ctoks[-1]
        fused = [t + p(c) for t, p in zip(tokens, self.corr_proj)]
        o2 = self._decode(fused, hw, size)
        return SurfaceOutput(o2.features[crop], o2.silhouette[crop], stage1)


class BodyMapUNet(SurfaceNet):
    """The U-Net baseline of the BodyMap ablation: RGB -> features, silhouette."""

    def __init__(self, config: BodyMapUNetConfig):
        super().__init__()
        self.config = cfg = config
        chans = [cfg.base * 2**i for i in range(cfg.levels + 1)]
        self.stem = nn.Sequential(nn.Conv2d(3, chans[0], 3, stride=cfg.stem_stride, padding=1), make_norm("group", chans[0]), nn.ReLU())
        self.down = nn.ModuleList([ResBlock(chans[i], chans[i + 1], stride=2) for i in range(cfg.levels)])
        self.up = nn.ModuleList([nn.Conv2d(chans[i + 1] + chans[i], chans[i], 3, padding=1) for i in reversed(range(cfg.levels))])
        self.up_norm = nn.ModuleList([make_norm("group", chans[i]) for i in reversed(range(cfg.levels))])
        self.head = nn.Conv2d(chans[0], cfg.features, 3, padding=1)
        self.sil = nn.Conv2d(cfg.features, 1, 1)
        self._make_heads(cfg.features)

    def forward(self, rgb: torch.Tensor, coarse: torch.Tensor | None = None) -> SurfaceOutput:
        self._check_rgb(rgb)
        x = self.stem(self._normalise(rgb))
        skips = [x]
        for d in self.down:
            x = d(x)
            skips.append(x)
        skips.pop()
        for conv, norm in zip(self.up, self.up_norm):
            s = skips.pop()
            x = F.interpolate(x, size=s.shape[-2:], mode="bilinear", align_corners=False)
            x = F.relu(norm(conv(torch.cat([x, s], 1))))
        f = self.head(x)
        if f.shape[-2:] != rgb.shape[-2:]:
            f = F.interpolate(f, size=rgb.shape[-2:], mode="bilinear", align_corners=False)
        return SurfaceOutput(features=f, silhouette=self.sil(f))


@register_model("bodymap_vit", tiny={"dim": 16, "depth": 4, "heads": 2, "corr_dim": 8, "corr_depth": 1, "corr_heads": 1,
                                      "fusion": 8, "features": 8, "hidden": 16, "pos_grid": 4}, task="surface")  # fmt: skip
def bodymap_vit(**overrides) -> BodyMapViT:
    return BodyMapViT(make_config(BodyMapViTConfig, "bodymap_vit", overrides))


@register_model("bodymap_unet", tiny={"base": 4, "levels": 2, "features": 8, "hidden": 16}, task="surface")
def bodymap_unet(**overrides) -> BodyMapUNet:
    return BodyMapUNet(make_config(BodyMapUNetConfig, "bodymap_unet", overrides))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["BodyMapUNet", "BodyMapViT", "SurfaceNet", "SurfaceOutput", "SurfacePrediction", "count_parameters"]
