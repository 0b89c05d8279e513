"""Training of image-to-surface networks (BodyMap): colour-code classification, silhouette, geodesic and consistency losses."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from bodycorr.body.surface_code import SurfaceCode, get_surface_code
from bodycorr.body.template import Template, get_template
from bodycorr.common.errors import BodycorrError
from bodycorr.common.fileio import ensure_dir, save_npz_atomic
from bodycorr.data.images import ImageConfig, ImageShardDataset, ImageViewGenerator, generate_image_shards
from bodycorr.models.io import save_model_file
from bodycorr.models.registry import checkpoint_dict, create_model, model_task
from bodycorr.training.config import config_from_dict
from bodycorr.training.loop import StepLog, _plain, restore_checkpoint, save_checkpoint, sigterm_as_interrupt, start_run_folder
from bodycorr.training.surface_losses import (
    GeodesicTable,
    colour_cross_entropy,
    consistency_loss,
    geodesic_loss,
    part_weights,
    silhouette_iou_loss,
)

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class SurfaceTrainConfig:
    """Everything a surface (BodyMap) training run depends on (stored in every checkpoint).

    Attributes:
        model: a registered "surface" model (``list_models("surface")``); ``model_args`` its overrides.
        image: how the RGB training views are made (:class:`ImageConfig`).
        train_images: size of the pre-rendered training set (shards in ``<out>/data``), reused
            over epochs with random left/right flips (labels mirrored through the symmetry map).
        pixels_per_image: foreground pixels sampled per image for the colour and geodesic losses.
        weights: lambda of each loss (cls, sil, geo, con) as in BodyMap Eq. 3; ``stage1_weight``
            scales the same losses on the first-stage (appearance-only) prediction.
        hands_head_weight: per-pixel weight of hand and head pixels in the colour loss.
        empty_share: share of each batch replaced by scenes with nobody in them (procedural
            backgrounds, colour-jittered): the silhouette must learn that people are not everywhere.
        code: the surface colour code (``bodycorr.body.surface_code``).
    """

    name: str = "custom"
    task: Literal["surface"] = "surface"
    model: str = "bodymap_vit"
    model_args: dict = field(default_factory=dict)
    image: ImageConfig = ImageConfig()
    code: str = "position"
    train_images: int = 4096
    batch_size: int = 16
    steps: int = 3000
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 150
    min_lr_ratio: float = 0.02
    pixels_per_image: int = 512
    geo_pixels_per_image: int = 64
    w_cls: float = 1.0
    w_sil: float = 1.0
    w_geo: float = 2.0
    w_con: float = 0.1
    con_pairs: int = 4
    stage1_weight: float = 0.5
    hands_head_weight: float = 2.0
    flip: bool = True
    empty_share: float = 0.0
    num_anchors: int = 1024
    workers: int = 0
    threads: int = 2
    seed: int = 0
    log_every: int = 25
    val_every: int = 250
    ckpt_every: int = 50
    val_images: int = 32
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.steps < 0 or self.train_images < self.batch_size:
            raise BodycorrError("surface training config: need batch_size >= 1, steps >= 0 and train_images >= batch_size.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "SurfaceTrainConfig":
        return config_from_dict(SurfaceTrainConfig, d, "surface training config", {"image": ImageConfig})


def lr_factor(step: int, cfg: SurfaceTrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    p = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return float(cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + np.cos(np.pi * p)))


def flip_batch(rgb: torch.Tensor, vertex: torch.Tensor, symmetry: torch.Tensor, which: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror the images ``which`` (B,) bool left-right; their labels become the mirror vertices.

    rgb: (B, 3, H, W); vertex: (B, H, W) int64 (-1 = none); symmetry: (Vt,) int64.
    """
    if not bool(which.any()):
        return rgb, vertex
    rgb, vertex = rgb.clone(), vertex.clone()
    rgb[which] = rgb[which].flip(-1)
    v = vertex[which].flip(-1)
    vertex[which] = torch.where(v >= 0, symmetry[v.clamp(min=0)], v)
    return rgb, vertex


def sample_foreground(vertex: torch.Tensor, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random pixels with truth per image (with replacement when fewer exist).

    vertex: (B, H, W) int64. Returns flat indices (M,) into B*H*W and image ids (M,).
    """
    b = vertex.shape[0]
    flat = vertex.reshape(b, -1)
    idx, img = [], []
    for i in range(b):
        fg = torch.nonzero(flat[i] >= 0, as_tuple=False)[:, 0]
        if fg.numel() == 0:
            continue
        pick = fg[torch.randint(fg.numel(), (n,), generator=gen)]
        idx.append(pick + i * flat.shape[1])
        img.append(torch.full_like(pick, i))
    if not idx:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(idx), torch.cat(img)


def add_empty_scenes(rgb: torch.Tensor, vertex: torch.Tensor, share: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace about ``share`` of the images by person-free procedural scenes (labels all -1).

    rgb: (B, 3, H, W) in [0, 1]; vertex: (B, H, W) int64.
    """
    from bodycorr.render.appearance import colour_jitter, sample_background

    which = torch.nonzero(torch.rand(rgb.shape[0], generator=gen) < share)[:, 0]
    if not len(which):
        return rgb, vertex
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    rgb, vertex = rgb.clone(), vertex.clone()
    h, w = rgb.shape[-2:]
    for i in which.tolist():
        bg = colour_jitter(sample_background(rng, max(h, w))[:h, :w], rng)
        rgb[i] = torch.from_numpy(bg).permute(2, 0, 1).float().to(rgb.device) / 255
        vertex[i] = -1
    return rgb, vertex


class SurfaceLosses:
    """BodyMap's training objective on one batch (both stages of a two-stage model)."""

    def __init__(self, cfg: SurfaceTrainConfig, template: Template, code: SurfaceCode, device: torch.device):
        self.cfg = cfg
        self.template = template
        self.colours = torch.from_numpy(code.colours.astype(np.int64)).to(device)
        self.table = GeodesicTable.build(code, num_anchors=cfg.num_anchors)
        self.weights = torch.as_tensor(part_weights(torch.arange(template.num_vertices), template, cfg.hands_head_weight), dtype=torch.float32).to(device)

    def stage(self, net: torch.nn.Module, out: Any, vertex: torch.Tensor, pix: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        b, c, h, w = out.features.shape
        feats = out.features.permute(0, 2, 3, 1).reshape(-1, c)[pix]
        verts = vertex.reshape(-1)[pix]
        logits = net.classify(feats)  # (M, 3, 256)
        ls = {"cls": colour_cross_entropy(logits, self.colours[verts], self.weights[verts])}
        fg = (vertex >= 0).float()[:, None]
        ls["sil"] = silhouette_iou_loss(out.silhouette, fg) + F.binary_cross_entropy_with_logits(out.silhouette, fg)
        if cfg.w_geo > 0:
            m = min(len(pix), cfg.geo_pixels_per_image * b)
            sub = torch.randperm(len(pix), generator=gen)[:m].to(pix.device)
            ls["geo"] = geodesic_loss(logits[sub], verts[sub], self.table)
        if cfg.w_con > 0:
            expected = (logits.softmax(-1) * torch.arange(256, device=logits.device, dtype=logits.dtype)).sum(-1)
            ls["con"] = consistency_loss(expected, verts, self.table, num_pairs=cfg.con_pairs, generator=gen)
        ls["total"] = sum(getattr(cfg, f"w_{k}") * v for k, v in ls.items())
        return ls

    def __call__(self, net: torch.nn.Module, rgb: torch.Tensor, vertex: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        out = net(rgb)
        pix, _ = sample_foreground(vertex, self.cfg.pixels_per_image, gen)
        pix = pix.to(rgb.device)
        ls = self.stage(net, out, vertex, pix, gen)
        total = ls["total"]
        if out.stage1 is not None and self.cfg.stage1_weight > 0:
            s1 = self.stage(net, out.stage1, vertex, pix, gen)
            total = total + self.cfg.stage1_weight * s1["total"]
            ls.update({f"s1_{k}": v for k, v in s1.items() if k != "total"})
        ls["total"] = total
        return ls


class SurfaceValidator:
    """Window accuracy and template-geodesic error of the predicted point on fixed val-identity views."""

    def __init__(self, cfg: SurfaceTrainConfig, out_dir: Path, code: SurfaceCode):
        path = out_dir / "val_images.npz"
        if path.exists():
            with np.load(path) as z:
                self.rgb, self.vertex = z["rgb"], z["vertex"]
        else:
            gen = ImageViewGenerator(replace(cfg.image, views_per_body=1, poses_per_identity=1), "val", cfg.seed)
            views = [gen.views_of_body(b)[0] for b in range(cfg.val_images)]
            self.rgb = np.stack([v.rgb for v in views])
            self.vertex = np.stack([np.where(v.instance == 0, v.template_vertex, -1) for v in views]).astype(np.int32)
            save_npz_atomic(path, rgb=self.rgb, vertex=self.vertex)
        self.code = code
        self.points = get_template().mesh.vertices

    @torch.no_grad()
    def __call__(self, net: torch.nn.Module, device: torch.device) -> dict[str, float]:
        from bodycorr.geometry.geodesic import all_pairs_geodesics

        net.eval()
        preds = []
        for i in range(0, len(self.rgb), 8):
            x = torch.from_numpy(self.rgb[i : i + 8]).to(device).permute(0, 3, 1, 2).float() / 255
            preds.append(net.predict(x, foreground=0.5, dilate=0))
        net.train()
        geo = all_pairs_geodesics(get_template().mesh)
        errs, acc = [], []
        k = 0
        for p in preds:
            for j in range(p.colour.shape[0]):
                tv = self.vertex[k]
                k += 1
                fg = tv >= 0
                if not fg.any():
                    continue
                dec = self.code.decode(p.colour[j].cpu().numpy()[fg].reshape(-1, 3))
                e = geo[dec.vertex, tv[fg]].astype(np.float32) * 100
                errs.append(e)
                sil = p.silhouette[j].cpu().numpy() > 0.5
                acc.append(float((sil == fg).mean()))
        e = np.concatenate(errs) if errs else np.zeros(1)
        return {"val_geo_mean_cm": float(e.mean()), "val_geo_median_cm": float(np.median(e)),
                "val_within_5cm_pct": float((e <= 5).mean() * 100), "val_sil_acc_pct": float(np.mean(acc) * 100)}  # fmt: skip


class InMemoryImages:
    """The training views of an image shard folder held in memory (RGB uint8 and truth vertex int32 only).

    Random access across compressed shards would decompress a shard per sample; 4096 views at
    128x128 take about 0.5 GB this way.
    """

    def __init__(self, folder: Path, progress: bool = True):
        ds = ImageShardDataset(folder)  # validates the shards
        rgb, vert = [], []
        paths = ds.paths
        if progress:
            from tqdm import tqdm

            paths = tqdm(paths, desc="loading views", unit="shard", leave=False)
        for p in paths:
            with np.load(p) as z:
                rgb.append(z["rgb"])
                vert.append(z["template_vertex"].astype(np.int32))
        self.rgb = np.concatenate(rgb)
        self.vertex = np.concatenate(vert)

    def __len__(self) -> int:
        return len(self.rgb)

    def batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """rgb: (B, 3, H, W) float32 in [0, 1]; template_vertex: (B, H, W) int64 (-1 = none)."""
        rgb = torch.from_numpy(self.rgb[idx]).permute(0, 3, 1, 2).float() / 255
        return {"rgb": rgb, "template_vertex": torch.from_numpy(self.vertex[idx].astype(np.int64))}


def load_surface_config(d: dict[str, Any]) -> SurfaceTrainConfig:
    return SurfaceTrainConfig.from_dict(d)


def train_surface(cfg: SurfaceTrainConfig, out_dir: str | Path, resume: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train a surface network; returns the last log record.

    Renders ``cfg.train_images`` training views once into ``out_dir/data`` (resumable), then trains.
    Writes ``last.pt`` (full state, atomically, every ``ckpt_every`` steps and on exit), ``model.pt``
    (inference weights, float16, heads kept), ``log.jsonl`` and ``config.json``. Rerunning with the
    same ``out_dir`` resumes where it stopped (the step count may change).
    """
    if model_task(cfg.model) != "surface":
        raise BodycorrError(f"surface training: model {cfg.model!r} is not an image-to-surface model. Pick one of the 'surface' models.")
    torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
    out = ensure_dir(out_dir, "training output folder")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + 7)

    template = get_template()
    code = get_surface_code(cfg.code)
    data_dir = generate_image_shards(cfg.image, "train", cfg.train_images, cfg.seed, out / "data", progress=progress)
    ds = InMemoryImages(data_dir, progress=progress)
    net = create_model(cfg.model, **cfg.model_args).to(device)
    decay = [p for n, p in net.named_parameters() if p.ndim >= 2 and "pos" not in n and "token" not in n]
    no_decay = [p for n, p in net.named_parameters() if not (p.ndim >= 2 and "pos" not in n and "token" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    step = 0
    ckpt_path = out / "last.pt"
    if resume and ckpt_path.exists():
        step = restore_checkpoint(ckpt_path, cfg, net, opt, gen)
    start_run_folder(out, step)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    objective = SurfaceLosses(cfg, template, code, device)
    symmetry = torch.from_numpy(template.symmetry.astype(np.int64)).to(device)
    validator = SurfaceValidator(cfg, out, code) if cfg.val_every > 0 else None

    def batches():
        epoch = step * cfg.batch_size // len(ds)
        while True:
            order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(cfg.seed + 7919 * epoch))
            for i in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
                yield ds.batch(order[i : i + cfg.batch_size].numpy())
            epoch += 1

    log = StepLog(out / "log.jsonl", cfg, step, lambda k: lr_factor(k, cfg), (lambda: validator(net, device)) if validator else None,
                  lambda k, r: (f"step {k}: val geodesic mean {r['val_geo_mean_cm']:.1f} cm, median {r['val_geo_median_cm']:.1f} cm, "
                                f"{r['val_within_5cm_pct']:.0f} % within 5 cm, silhouette {r['val_sil_acc_pct']:.1f} %"),
                  progress=progress)  # fmt: skip
    it = batches()
    # skip the batches of the current epoch already used, so a resumed run sees the same data order
    for _ in range((step * cfg.batch_size % len(ds)) // cfg.batch_size):
        next(it)

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, {"format": CHECKPOINT_FORMAT, "step": step, "config": _plain(cfg.to_dict()),
                                    "model": checkpoint_dict(net), "optimizer": opt.state_dict(), "generator": gen.get_state()})  # fmt: skip
        save_model_file(net, out / "model.pt", include_heads=True, meta={"step": step, "config": cfg.name, "size": cfg.image.size, "code": code.method})

    with sigterm_as_interrupt():
        try:
            while step < cfg.steps:
                batch = next(it)
                rgb, vertex = batch["rgb"].to(device), batch["template_vertex"].to(device)
                if cfg.flip:
                    which = torch.rand(rgb.shape[0], generator=gen) < 0.5
                    rgb, vertex = flip_batch(rgb, vertex, symmetry, which.to(device))
                if cfg.empty_share > 0:
                    rgb, vertex = add_empty_scenes(rgb, vertex, cfg.empty_share, gen)
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * lr_factor(step, cfg)
                ls = objective(net, rgb, vertex, gen)
                opt.zero_grad(set_to_none=True)
                ls["total"].backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                step += 1
                log.update(step, rgb.shape[0], ls)
                if step % cfg.ckpt_every == 0:
                    checkpoint()
        finally:
            checkpoint()
            log.close()
    return log.record
