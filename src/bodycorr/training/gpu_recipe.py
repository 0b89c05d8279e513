"""The GPU recipe: posed bodies packed here (Anny), then time-boxed, resumable training on a machine without Anny or warp.

    python -m bodycorr.training.gpu_recipe pack --out gpu/pack.npz [--bodies 720] [--config curve-dense-chiral]
    python -m bodycorr.training.gpu_recipe train --pack gpu/pack.npz --out OUT/run --minutes 8 [--config curve-dense-chiral]
    python -m bodycorr.training.gpu_recipe adopt FOLDER_THAT_CAME_BACK runs/gpu-curve-dense-chiral

``pack`` needs Anny: it poses the config's first N training bodies (``ViewGenerator(view, "train",
seed).body(b)``, never a validation or test person; a few validation bodies are added for a
held-out loss) and stores them quantised (:class:`bodycorr.data.packed_views.PackedBodies`) with
everything the config's training targets need on the template side. ``train`` imports only torch,
numpy and scipy: it renders random views of the packed bodies on the device, trains the config's
recipe (its model, losses and targets; bf16 autocast and a larger batch on CUDA), writes
``last.pt`` + ``optim.pt`` (resumable state), ``model.pt`` (the inference model, as
``bodycorr train`` writes it), ``log.jsonl``, ``summary.json`` (descriptor-extraction timings
included) and a few ``snapshots/gpu_<seconds>.pt``, stops by its wall-clock budget, and resumes
from the folder's checkpoint. ``adopt`` brings such a folder into ``runs/`` with what
``bodycorr release`` and the benchmarks read. See docs/gpu_recipe.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from bodycorr.common.errors import BodycorrError, check_readable
from bodycorr.common.fileio import clear_outputs, ensure_dir, file_sha256, save_npz_atomic, write_json_atomic
from bodycorr.data.packed_views import PACK_STEP_M, DeviceViews, PackedBodies
from bodycorr.models.inputs import depth_to_input
from bodycorr.models.io import read_torch_file, save_model_file
from bodycorr.models.registry import checkpoint_dict
from bodycorr.training.config import TrainConfig, load_config
from bodycorr.training.loop import (
    CHECKPOINT_FORMAT,
    _plain,
    build_model,
    lr_factor,
    losses,
    same_run_config,
    sample_pixels_batched,
    save_checkpoint,
    sigterm_as_interrupt,
    start_run_folder,
)
from bodycorr.training.targets import Targets

PACK_FORMAT = 1
DEFAULT_CONFIG = "curve-dense-chiral"
DEFAULT_BODIES = 720
#: Dense geodesics are stored up to this many sigmas (farther points get a target weight below e^-40 either way).
DENSE_CLAMP_SIGMAS = 9.0
#: What a run writes into its folder (all of it comes back from the device: keep it few and small).
RUN_FILES = ("last.pt", "optim.pt", "model.pt", "log.jsonl", "summary.json", "snapshots/gpu_*.pt")


# ------------------------------------------------------------------------------------------- pack


@dataclass(frozen=True, eq=False)
class Pack:
    """Everything ``train`` needs, in one ``.npz``.

    Attributes:
        train, val: posed bodies of the training and validation splits.
        faces: (F, 3) int32 the bodies' triangles (Anny's full topology, eyes and tongue included, as
            the view generator renders them); full_to_template: (V,) int32 template vertex of each vertex.
        sides: (Vt,) int8 +1 left / -1 right / 0 middle (:func:`bodycorr.body.template.body_sides`).
        symmetry: (Vt,) int32 mirror vertex of each template vertex.
        keypoints: (Vt,) int64 key-point labels; segmentations: (K', Vt) int64 patch labels
            (:class:`bodycorr.training.targets.Targets`); num_landmarks: key points (33).
        dense_vertices: (S,) int64; dense_geodesic_t: (S, Vt) float16 metres, clamped at ``dense_clamp_m``.
        targets: the ``TargetConfig`` (as a dict) the labels were built for; meta: how the pack was made.
        path, sha256: the file.
    """

    train: PackedBodies
    val: PackedBodies
    faces: np.ndarray
    full_to_template: np.ndarray
    sides: np.ndarray
    symmetry: np.ndarray
    keypoints: np.ndarray
    segmentations: np.ndarray
    num_landmarks: int
    dense_vertices: np.ndarray
    dense_geodesic_t: np.ndarray
    dense_clamp_m: float
    targets: dict
    meta: dict = field(default_factory=dict)
    path: str = ""
    sha256: str = ""

    def training_targets(self) -> Targets:
        """The labels as :class:`Targets` (dense geodesics as a (Vt, S) view of the stored (S, Vt))."""
        return Targets(segmentations=self.segmentations, keypoints=self.keypoints, num_landmarks=self.num_landmarks,
                       dense_vertices=self.dense_vertices, dense_geodesic=self.dense_geodesic_t.T)  # fmt: skip


def write_pack(path: str | Path, train: PackedBodies, val: PackedBodies, faces: np.ndarray, full_to_template: np.ndarray,
               sides: np.ndarray, symmetry: np.ndarray, targets: Targets, targets_config: dict, sigma: float,
               meta: dict | None = None) -> Path:  # fmt: skip
    """Write a pack (compressed ``.npz``, atomically). ``targets.dense_geodesic`` (Vt, S) is stored
    transposed and clamped at ``DENSE_CLAMP_SIGMAS * sigma`` (long runs of one value: small)."""
    vt = len(sides)
    if train.num_vertices != len(full_to_template) or len(val) and val.num_vertices != len(full_to_template):
        raise BodycorrError(f"pack: bodies have {train.num_vertices} vertices but full_to_template maps {len(full_to_template)}.")
    if targets.keypoints.shape != (vt,) or targets.dense_geodesic.shape[0] != vt or symmetry.shape != (vt,):
        raise BodycorrError(f"pack: template arrays disagree on the template's {vt} vertices.")
    clamp = float(DENSE_CLAMP_SIGMAS * sigma)
    geo_t = np.minimum(np.asarray(targets.dense_geodesic, np.float32).T, clamp).astype(np.float16)
    seg = np.asarray(targets.segmentations)
    arrays = {
        **train.to_arrays("train_"), **val.to_arrays("val_"),
        "faces": np.asarray(faces, np.int32), "full_to_template": np.asarray(full_to_template, np.int32),
        "sides": np.asarray(sides, np.int8), "symmetry": np.asarray(symmetry, np.int32),
        "keypoints": targets.keypoints.astype(np.int16), "segmentations": seg.astype(np.int16 if seg.size == 0 or seg.max() < 32767 else np.int32),
        "num_landmarks": np.int64(targets.num_landmarks), "dense_vertices": targets.dense_vertices.astype(np.int32),
        "dense_geodesic_t": np.ascontiguousarray(geo_t), "dense_clamp_m": np.float64(clamp),
        "format": np.int64(PACK_FORMAT), "targets_json": np.array(json.dumps(targets_config, sort_keys=True)),
        "meta_json": np.array(json.dumps(meta or {}, sort_keys=True)),
    }  # fmt: skip
    return save_npz_atomic(path, compressed=True, **arrays)


def load_pack(path: str | Path) -> Pack:
    """Read a pack written by :func:`write_pack`; one line for a missing, broken or foreign file."""
    p = check_readable(path, "pack")
    try:
        with np.load(p, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except Exception as e:  # a cut-short or foreign file
        raise BodycorrError(f"pack {p}: cannot be read ({type(e).__name__}). Build it again with "
                            "'python -m bodycorr.training.gpu_recipe pack'.") from None  # fmt: skip
    if int(a.get("format", -1)) != PACK_FORMAT:
        raise BodycorrError(f"pack {p}: not a format-{PACK_FORMAT} pack. Build it again with 'python -m bodycorr.training.gpu_recipe pack'.")
    return Pack(
        train=PackedBodies.from_arrays(a, "train_"), val=PackedBodies.from_arrays(a, "val_"), faces=a["faces"],
        full_to_template=a["full_to_template"], sides=a["sides"], symmetry=a["symmetry"], keypoints=a["keypoints"].astype(np.int64),
        segmentations=a["segmentations"].astype(np.int64), num_landmarks=int(a["num_landmarks"]),
        dense_vertices=a["dense_vertices"].astype(np.int64), dense_geodesic_t=a["dense_geodesic_t"], dense_clamp_m=float(a["dense_clamp_m"]),
        targets=json.loads(str(a["targets_json"])), meta=json.loads(str(a["meta_json"])), path=str(p), sha256=file_sha256(p),
    )  # fmt: skip


def check_pack_fits(pack: Pack, cfg: TrainConfig) -> None:
    """One line unless the pack's labels were built for ``cfg``'s targets."""
    want = _plain(dataclasses.asdict(cfg.targets))
    if _plain(pack.targets) != want:
        diff = sorted(k for k in set(want) | set(pack.targets) if want.get(k) != pack.targets.get(k))
        raise BodycorrError(f"pack {pack.path}: built for other training targets than config {cfg.name!r} (differ in {', '.join(diff)}). "
                            f"Build it with 'python -m bodycorr.training.gpu_recipe pack --config {cfg.name}'.")  # fmt: skip


def build_pack(cfg: TrainConfig, out: str | Path, bodies: int = DEFAULT_BODIES, val_bodies: int = 16, step: float = PACK_STEP_M) -> dict[str, Any]:
    """Pose the config's first ``bodies`` training bodies and ``val_bodies`` validation bodies with
    Anny and write the pack (needs Anny; the template's targets come from the on-disk cache or are
    built). Returns a summary: counts, size in MB, seconds."""
    from bodycorr.body.template import body_sides, get_template
    from bodycorr.data.views import ViewGenerator
    from bodycorr.training.targets import build_targets

    if getattr(cfg.view, "clothed_share", 0) > 0:
        raise BodycorrError(f"pack: config {cfg.name} dresses people; the device makes bare bodies only. Pack a config without clothing.")
    if bodies < 1 or val_bodies < 0:
        raise BodycorrError(f"pack: --bodies must be >= 1 and --val-bodies >= 0, got {bodies} and {val_bodies}.")
    t0 = time.time()
    template = get_template()
    targets = build_targets(template, cfg.targets)

    def posed(split: str, n: int) -> PackedBodies:
        gen = ViewGenerator(cfg.view, split, cfg.seed)  # type: ignore[arg-type]
        vs, ph, ids = [], [], []
        for b in range(n):  # in order: one Anny forward per block of bodies
            v, p, i = gen.body(b)
            vs.append(v)
            ph.append(p)
            ids.append(i)
        v0 = np.zeros((0, template.full_to_template.shape[0], 3), np.float32)
        return PackedBodies.encode(np.stack(vs) if vs else v0, np.array(ph, np.float32).reshape(n, 6), np.array(ids), np.arange(n), step)

    train, val = posed("train", bodies), posed("val", val_bodies)
    meta = {"config": cfg.name, "seed": cfg.seed, "population": cfg.view.population, "poses_per_identity": cfg.view.poses_per_identity,
            "bodies": bodies, "val_bodies": val_bodies, "step_m": step, "splits": ["train", "val"]}  # fmt: skip
    path = write_pack(out, train, val, template.full_faces, template.full_to_template, body_sides(template), template.symmetry, targets,
                      _plain(dataclasses.asdict(cfg.targets)), cfg.targets.dense_sigma, meta)  # fmt: skip
    return {"pack": str(path), "bodies": bodies, "val_bodies": val_bodies, "identities": int(len(np.unique(train.identity))),
            "size_mb": round(path.stat().st_size / 1e6, 2), "seconds": round(time.time() - t0, 1)}  # fmt: skip


# ------------------------------------------------------------------------------------------ train


@dataclass(frozen=True)
class GpuRunConfig:
    """How one time-boxed run on the device goes (the recipe itself is the :class:`TrainConfig`).

    Attributes:
        minutes: wall-clock budget of this invocation, start-up, timings and the last checkpoint included.
        batch_size: images per step; 0 = the config's on the CPU, 128 on CUDA.
        lr: peak learning rate; 0 = the config's, times sqrt(batch / config batch), at most twice it.
        precision: "bf16" (the backbone under bf16 autocast on CUDA; heads and losses in float32) or "fp32".
        decay: "time": after the warm-up steps, cosine decay to the config's ``min_lr_ratio`` over the
            planned training seconds (the budget is time, not steps); "config": the config's schedule.
        plan_minutes: the training time the decay spans; 0 = what this first invocation leaves for
            training (kept in the checkpoint: a resumed run goes on along the same plan).
        ckpt_minutes: checkpoint (and validation) interval.
        snapshots: inference models kept along the plan (``snapshots/gpu_<seconds>.pt``).
        max_steps: stop after this many steps in all (0 = by time only; for tests).
        val_views: fixed views of the pack's validation bodies for a held-out loss (0 = none).
        time_size, time_iters: descriptor-extraction timing at ``time_size``² (0 iterations = skip).
        device: "auto" (CUDA when there is one), "cpu" or "cuda".
        reserve_s: seconds kept back at the end for the last checkpoint and summary.
    """

    minutes: float = 8.0
    batch_size: int = 0
    lr: float = 0.0
    precision: Literal["bf16", "fp32"] = "bf16"
    decay: Literal["time", "config"] = "time"
    plan_minutes: float = 0.0
    ckpt_minutes: float = 1.0
    snapshots: int = 2
    max_steps: int = 0
    val_views: int = 64
    time_size: int = 512
    time_iters: int = 50
    device: Literal["auto", "cpu", "cuda"] = "auto"
    reserve_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.minutes > 0:
            raise BodycorrError(f"--minutes must be > 0, got {self.minutes}.")
        if self.batch_size < 0 or self.lr < 0 or self.snapshots < 0 or self.max_steps < 0 or self.val_views < 0:
            raise BodycorrError("--batch, --lr, --snapshots, --max-steps and --val-views must not be negative.")
        if self.time_iters and self.time_size < 32:
            raise BodycorrError(f"--time-size must be at least 32 pixels, got {self.time_size}.")


class AutocastForward(torch.nn.Module):
    """A descriptor network whose backbone runs under autocast (``dtype``); the descriptors and the
    chirality features come out in float32, so heads and losses stay in float32. ``module`` is the
    network (what :func:`bodycorr.training.loop.losses` reads the chirality head from)."""

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.module
        net.check_input(x)
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            raw = net.backbone(x)
        if getattr(net.backbone, "global_features", None) is not None:
            net.backbone.global_features = net.backbone.global_features.float()
        return F.normalize(raw.float(), dim=1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_extraction(model: torch.nn.Module, device: torch.device, size: int = 512, iters: int = 50, warmup: int = 10) -> dict[str, Any]:
    """Descriptor extraction of one ``size`` x ``size`` depth map (batch 1) after ``warmup`` passes.

    Returns milliseconds (median and mean over ``iters`` synchronised passes) of the network
    forward alone (``forward_ms``) and with the input normalisation (``extract_ms``: depth map to
    unit descriptors, what a caller pays), in float32 and, on CUDA, under bf16 autocast.
    """
    was_training = model.training
    model.eval()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    depth = torch.where(xx**2 / 0.16 + yy**2 / 0.8 < 1, 2.5 + 0.1 * xx**2, torch.zeros(())).to(device)[None]  # a body-sized blob
    out: dict[str, Any] = {"size": size, "batch": 1, "iters": iters, "warmup": warmup}
    precisions = ["fp32"] + (["bf16"] if device.type == "cuda" else [])
    with torch.inference_mode():
        for prec in precisions:
            net = AutocastForward(model) if prec == "bf16" else model
            x = depth_to_input(depth)
            for what, fn in (("forward", lambda: net(x)), ("extract", lambda: net(depth_to_input(depth)))):
                for _ in range(warmup):
                    fn()
                _sync(device)
                times = []
                for _ in range(iters):
                    t = time.perf_counter()
                    fn()
                    _sync(device)
                    times.append((time.perf_counter() - t) * 1000)
                out[f"{prec}_{what}_ms"] = round(float(np.median(times)), 4)
                out[f"{prec}_{what}_ms_mean"] = round(float(np.mean(times)), 4)
    model.train(was_training)
    return out


def _run_settings(cfg: TrainConfig, run: GpuRunConfig, device: torch.device) -> TrainConfig:
    batch = run.batch_size or (128 if device.type == "cuda" else cfg.batch_size)
    lr = run.lr or cfg.lr * min(2.0, math.sqrt(batch / cfg.batch_size))
    return cfg.replace(batch_size=batch, lr=lr, device=device.type, val_every=0, workers=0)


def _device(run: GpuRunConfig) -> torch.device:
    if run.device == "cuda" and not torch.cuda.is_available():
        raise BodycorrError("--device cuda: no CUDA device here. Use --device auto or cpu.")
    return torch.device("cuda" if run.device == "cuda" or (run.device == "auto" and torch.cuda.is_available()) else "cpu")


def train_on_device(pack_path: str | Path, out_dir: str | Path, cfg: TrainConfig, run: GpuRunConfig = GpuRunConfig(),
                    resume: bool = True, started: float | None = None, progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Train ``cfg``'s recipe on views rendered on the device from the pack, within ``run.minutes``.

    ``started`` (``time.monotonic()``) is when the budget began (default: now). Writes
    :data:`RUN_FILES` into ``out_dir`` and resumes from its ``last.pt`` (``resume``). Returns the summary.
    """
    t_start = started if started is not None else time.monotonic()
    deadline = t_start + run.minutes * 60 - run.reserve_s
    device = _device(run)
    out = ensure_dir(out_dir, "training output folder")
    pack = load_pack(pack_path)
    check_pack_fits(pack, cfg)
    if len(pack.train) == 0:
        raise BodycorrError(f"pack {pack.path}: holds no training bodies.")
    if getattr(cfg.view, "clothed_share", 0) > 0:
        raise BodycorrError(f"training config {cfg.name}: clothed people are not made on the device (the pack holds bare bodies). "
                            "Train clothed recipes with 'bodycorr train'.")  # fmt: skip
    cfg = _run_settings(cfg, run, device)
    if not (cfg.dense_weight > 0 and pack.dense_vertices.size) and not (cfg.seg_weight > 0 and pack.segmentations.size) \
            and not (cfg.targets.parts_task and cfg.parts_weight > 0) and not cfg.keypoint_weight > 0:  # fmt: skip
        raise BodycorrError(f"training config {cfg.name}: no loss is active. Give targets.dense_points with dense_weight > 0 or segmentations.")
    torch.set_num_threads(max(1, min(cfg.threads if device.type == "cpu" else 4, os.cpu_count() or 1)))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
        torch.backends.cuda.matmul.allow_tf32 = False  # the dense head's logits (16-D cosines x a large scale) stay in float32
    targets = pack.training_targets()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, targets).to(device)
    head_params = [p for n, p in model.named_parameters() if n.startswith("heads.")]
    body_params = [p for n, p in model.named_parameters() if not n.startswith("heads.")]
    opt = torch.optim.AdamW([{"params": body_params, "weight_decay": cfg.weight_decay},
                             {"params": head_params, "weight_decay": 0.0}], lr=cfg.lr, fused=device.type == "cuda")  # fmt: skip

    # ---- resume
    step, train_s, images, plan_s, note = 0, 0.0, 0, 0.0, ""
    ckpt_path, optim_path = out / "last.pt", out / "optim.pt"
    if resume and ckpt_path.exists():
        state = read_torch_file(ckpt_path, "training checkpoint")
        if not same_run_config(state.get("config"), cfg.to_dict()):
            raise BodycorrError(f"training checkpoint {ckpt_path}: made with a different config or batch size. Use another --out folder, "
                                "or --no-resume.")  # fmt: skip
        ex = state.get("extras", {})
        if ex.get("pack_sha256") not in (None, pack.sha256):
            raise BodycorrError(f"training checkpoint {ckpt_path}: made from another pack. Give that pack, another --out folder, or --no-resume.")
        try:
            model.load_state_dict(state["model"]["state_dict"])
        except (RuntimeError, KeyError):
            raise BodycorrError(f"training checkpoint {ckpt_path}: not weights of this config's model. Use another --out folder, "
                                "or --no-resume.") from None  # fmt: skip
        step, train_s, images, plan_s = int(state["step"]), float(ex.get("train_s", 0)), int(ex.get("images", 0)), float(ex.get("plan_s", 0))
        opt_state = read_torch_file(optim_path, "optimizer state") if optim_path.exists() else {}
        if int(opt_state.get("step", -1)) == step:
            opt.load_state_dict(opt_state["optimizer"])
        else:
            note = f"optim.pt missing or of another step: the optimizer restarts at step {step}"
    start_step = step
    if step == 0:
        clear_outputs(out, RUN_FILES)
    else:
        start_run_folder(out, step)  # drop log records after the checkpoint

    # ---- data on the device
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + step)
    cpu_gen = torch.Generator().manual_seed(cfg.seed * 1000 + step)
    views = DeviceViews(pack.train.vertices(device), pack.faces, pack.full_to_template, cfg.view)
    seg = torch.from_numpy(pack.segmentations).to(device)
    kp = torch.from_numpy(pack.keypoints).to(device)
    sides = torch.from_numpy(pack.sides.astype(np.int64)).to(device)
    dense_geo = torch.from_numpy(pack.dense_geodesic_t).to(device).t().contiguous() if pack.dense_vertices.size else None
    val_batch = None
    if run.val_views and len(pack.val):
        val_views = DeviceViews(pack.val.vertices(device), pack.faces, pack.full_to_template, cfg.view)
        vgen = torch.Generator(device=device).manual_seed(cfg.seed + 99_991)
        bodies = torch.arange(run.val_views, device=device) % len(pack.val)
        val_batch = {k: v for k, v in val_views.sample(run.val_views, vgen, bodies).items() if k in ("depth", "vertex")}
    fwd = AutocastForward(model) if device.type == "cuda" and run.precision == "bf16" else model
    summary: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__,
        "config": cfg.name, "batch_size": cfg.batch_size, "lr": cfg.lr, "precision": run.precision if device.type == "cuda" else "fp32",
        "pack": {"path": pack.path, "sha256": pack.sha256, "bodies": len(pack.train), "val_bodies": len(pack.val),
                 "identities": int(len(np.unique(pack.train.identity))), "mb": round(Path(pack.path).stat().st_size / 1e6, 2)},
        "run": dataclasses.asdict(run), "start_step": start_step, "note": note,
    }  # fmt: skip

    def say(msg: str) -> None:
        if progress:
            print(f"[{time.monotonic() - t_start:6.1f} s] {msg}", flush=True)

    say(f"{summary['device']}: {cfg.name}, batch {cfg.batch_size}, lr {cfg.lr:.2g}, {len(pack.train)} bodies, from step {step}"
        + (f" ({note})" if note else ""))  # fmt: skip
    if run.time_iters:
        try:
            summary["extraction"] = time_extraction(model, device, run.time_size, run.time_iters, warmup=min(10, run.time_iters))
            say("extraction at {size}² (batch 1): ".format(**summary["extraction"])
                + ", ".join(f"{k} {v} ms" for k, v in summary["extraction"].items() if k.endswith("_ms")))  # fmt: skip
        except (RuntimeError, torch.cuda.OutOfMemoryError) as e:  # the timing must not cost the training
            summary["extraction"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            say(f"extraction timing failed: {summary['extraction']['error']}")
    # how fast views are made (after one warm-up batch)
    views.sample(cfg.batch_size, gen)
    _sync(device)
    t = time.perf_counter()
    for _ in range(2):
        views.sample(cfg.batch_size, gen)
    _sync(device)
    summary["views_per_s"] = round(2 * cfg.batch_size / (time.perf_counter() - t), 1)
    say(f"views on the device: {summary['views_per_s']} views/s at {cfg.view.size}²")
    write_json_atomic(out / "summary.json", summary)

    if plan_s <= 0 or run.plan_minutes > 0:
        plan_s = run.plan_minutes * 60 if run.plan_minutes > 0 else max(1.0, deadline - time.monotonic())
    snap_at = [s for s in (plan_s * (k + 1) / (run.snapshots + 1) for k in range(run.snapshots)) if s > train_s]

    def lr_at(k: int, secs: float) -> float:
        if run.decay == "config":
            return lr_factor(k, cfg)
        warm = min(1.0, (k + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
        p = min(1.0, secs / plan_s)
        return warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))

    @torch.no_grad()
    def validate() -> dict[str, float]:
        if val_batch is None:
            return {}
        model.eval()
        ls = losses(fwd, model.heads, val_batch, seg, kp, cfg, torch.Generator().manual_seed(12345), sides, dense_geo,
                    sampler=sample_pixels_batched)  # fmt: skip
        model.train()
        return {f"val_{k}": float(v) for k, v in ls.items()}

    def checkpoint() -> None:
        extras = {"train_s": train_s, "images": images, "plan_s": plan_s, "pack_sha256": pack.sha256, "recipe": "gpu",
                  "run": dataclasses.asdict(run)}  # fmt: skip
        save_checkpoint(optim_path, {"step": step, "optimizer": opt.state_dict()})
        save_checkpoint(ckpt_path, {"format": CHECKPOINT_FORMAT, "step": step, "config": _plain(cfg.to_dict()),
                                    "model": checkpoint_dict(model), "extras": extras})  # fmt: skip
        save_model_file(model, out / "model.pt", meta={"step": step, "config": cfg.name, "size": cfg.view.size, "train_s": round(train_s, 1),
                                                       "images": images, "device": summary["device"]})  # fmt: skip

    def record(ls: dict[str, torch.Tensor], n_img: int, secs: float, extra: dict | None = None) -> dict[str, Any]:
        r = {"step": step, "wall_s": round(time.monotonic() - t_start, 2), "train_s": round(train_s, 2), "images": images,
             "lr": cfg.lr * lr_at(max(step - 1, 0), train_s), "img_per_s": round(n_img / max(secs, 1e-9), 1),
             **{k: float(v.detach()) for k, v in ls.items()}, **(extra or {})}  # fmt: skip
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(r) + "\n")
        return r

    model.train()
    last: dict[str, Any] = {}
    ls: dict[str, torch.Tensor] = {}
    t_ckpt = t_log = t_said = time.monotonic()
    n_img_log, run_images, run_t0 = 0, 0, time.monotonic()
    with sigterm_as_interrupt():
        try:
            while time.monotonic() < deadline and not (run.max_steps and step >= run.max_steps):
                t_step = time.monotonic()
                batch = views.sample(cfg.batch_size, gen)
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * lr_at(step, train_s)
                ls = losses(fwd, model.heads, batch, seg, kp, cfg, cpu_gen, sides, dense_geo, sampler=sample_pixels_batched)
                opt.zero_grad(set_to_none=True)
                ls["total"].backward()
                opt.step()
                step += 1
                images += cfg.batch_size
                run_images += cfg.batch_size
                n_img_log += cfg.batch_size
                now = time.monotonic()
                train_s += now - t_step
                if step % cfg.log_every == 0:
                    last = record(ls, n_img_log, now - t_log)
                    t_log, n_img_log = time.monotonic(), 0
                    if t_log - t_said >= 15 or step == cfg.log_every:
                        say(f"step {step}: loss {last['total']:.3f}, {last['img_per_s']:.0f} img/s")
                        t_said = t_log
                if snap_at and train_s >= snap_at[0]:
                    s = int(round(snap_at.pop(0)))
                    save_model_file(model, ensure_dir(out / "snapshots", "snapshot folder") / f"gpu_{s:06d}.pt",
                                    meta={"step": step, "config": cfg.name, "size": cfg.view.size, "train_s": round(train_s, 1)})  # fmt: skip
                if now - t_ckpt >= run.ckpt_minutes * 60:
                    checkpoint()
                    if val_batch is not None:
                        last = record(ls, n_img_log, time.monotonic() - t_log, validate())
                    t_ckpt = time.monotonic()
        finally:
            if step > start_step or not ckpt_path.exists():
                checkpoint()  # first: whatever else fails below, the run can resume
            try:
                if ls:
                    last = record(ls, n_img_log, time.monotonic() - t_log, validate())
            finally:
                wall = time.monotonic() - run_t0
                summary.update(steps=step, images=images, train_s=round(train_s, 1), plan_s=round(plan_s, 1),
                               this_run={"steps": step - start_step, "images": run_images, "seconds": round(wall, 1),
                                         "img_per_s": round(run_images / max(wall, 1e-9), 1)},
                               total_wall_s=round(time.monotonic() - t_start, 1), last=last)  # fmt: skip
                write_json_atomic(out / "summary.json", summary)
                say(f"stopped at step {step} ({run_images} images in {wall:.0f} s); wrote {out}")
    return summary


def adopt_run(src: str | Path, dest: str | Path, validate: bool = True) -> dict[str, Any]:
    """Bring a device run home: copy its files from ``src`` (the folder that came back) into ``dest``
    (e.g. ``runs/gpu-curve-dense-chiral``), write ``config.json`` as ``bodycorr train`` does and, with
    ``validate`` (needs Anny), append the pixel-matching validation the CPU loop logs
    (:class:`bodycorr.training.loop.PixelMatchValidator`: ``val_mean_cm`` ...) at the run's last step,
    so ``bench/bench_learning_curve.py``, ``bodycorr benchmark`` and ``bodycorr release`` take the folder."""
    import shutil

    from bodycorr.models.io import load_model_file
    from bodycorr.training.loop import PixelMatchValidator

    src, dest = Path(src), Path(dest)
    check_readable(src / "last.pt", "device run checkpoint")
    if dest.exists() and any(dest.iterdir()) and dest.resolve() != src.resolve():
        raise BodycorrError(f"adopt: {dest} is not empty. Give a new folder under runs/.")
    ensure_dir(dest, "run folder")
    copied = []
    for pattern in RUN_FILES:
        for f in sorted(src.glob(pattern)):
            target = dest / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
            copied.append(str(f.relative_to(src)))
    state = read_torch_file(dest / "last.pt", "training checkpoint")
    cfg = TrainConfig.from_dict(state["config"])
    (dest / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    out: dict[str, Any] = {"run": str(dest), "step": int(state["step"]), "files": copied}
    if validate:
        model = load_model_file(dest / "last.pt")
        rec = {"step": int(state["step"]), "time": time.time(), **PixelMatchValidator(cfg, dest)(model, torch.device("cpu")),
               "adopted_from": str(src)}  # fmt: skip
        with open(dest / "log.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        out.update({k: round(v, 2) for k, v in rec.items() if k.startswith("val_")})
    return out


# -------------------------------------------------------------------------------------------- cli


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    ap = argparse.ArgumentParser(prog="python -m bodycorr.training.gpu_recipe", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="pose training bodies with Anny and write the pack (here, not on the device)")
    p.add_argument("--out", required=True, help="the pack file, e.g. gpu/pack.npz")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="training config whose targets and bodies the pack serves")
    p.add_argument("--bodies", type=int, default=DEFAULT_BODIES, help="training bodies (about 46 KB each)")
    p.add_argument("--val-bodies", type=int, default=16, help="validation bodies for the held-out loss")
    p.add_argument("--step-mm", type=float, default=PACK_STEP_M * 1000, help="vertex quantisation step in mm")
    ad = sub.add_parser("adopt", help="bring a device run home into runs/ (config.json; validation, which needs Anny)")
    ad.add_argument("src", help="the run folder that came back from the device")
    ad.add_argument("dest", help="e.g. runs/gpu-curve-dense-chiral")
    ad.add_argument("--no-validate", action="store_true", help="skip the pixel-matching validation (no Anny here)")
    t = sub.add_parser("train", help="train on views rendered on the device (imports no Anny or warp)")
    t.add_argument("--pack", required=True)
    t.add_argument("--out", required=True, help="run folder (resumed if it holds a checkpoint)")
    t.add_argument("--config", default=DEFAULT_CONFIG)
    d = GpuRunConfig()
    t.add_argument("--minutes", type=float, default=d.minutes, help="wall-clock budget of this invocation, everything included")
    t.add_argument("--batch", type=int, default=d.batch_size, help="images per step (0: the config's on CPU, 128 on CUDA)")
    t.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (0: the config's, scaled with the batch)")
    t.add_argument("--precision", choices=["bf16", "fp32"], default=d.precision)
    t.add_argument("--decay", choices=["time", "config"], default=d.decay)
    t.add_argument("--plan-minutes", type=float, default=d.plan_minutes, help="training minutes the decay spans (0: this run's)")
    t.add_argument("--ckpt-minutes", type=float, default=d.ckpt_minutes)
    t.add_argument("--snapshots", type=int, default=d.snapshots)
    t.add_argument("--max-steps", type=int, default=d.max_steps)
    t.add_argument("--val-views", type=int, default=d.val_views)
    t.add_argument("--time-size", type=int, default=d.time_size, help="descriptor-extraction timing size (pixels)")
    t.add_argument("--time-iters", type=int, default=d.time_iters, help="timed passes (0: no timing)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d.device)
    t.add_argument("--no-resume", action="store_true")
    t.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "adopt":
            print(json.dumps(adopt_run(a.src, a.dest, validate=not a.no_validate)))
            return 0
        cfg = load_config(a.config)
        if not isinstance(cfg, TrainConfig):
            raise BodycorrError(f"config {a.config}: an image (surface) config; the GPU recipe trains depth descriptor configs.")
        if a.cmd == "pack":
            info = build_pack(cfg, a.out, a.bodies, a.val_bodies, a.step_mm / 1000)
            print(json.dumps(info))
            return 0
        run = GpuRunConfig(minutes=a.minutes, batch_size=a.batch, lr=a.lr, precision=a.precision, decay=a.decay, plan_minutes=a.plan_minutes,
                           ckpt_minutes=a.ckpt_minutes, snapshots=a.snapshots, max_steps=a.max_steps, val_views=a.val_views,
                           time_size=a.time_size, time_iters=a.time_iters, device=a.device)  # fmt: skip
        train_on_device(a.pack, a.out, cfg, run, resume=not a.no_resume, started=started, progress=not a.quiet)
    except BodycorrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the checkpoint was saved", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
