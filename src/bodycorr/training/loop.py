"""The descriptor training loop: single process or torchrun DDP, resumable, with a live matching error."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bodycorr.body.template import get_template
from bodycorr.common.errors import BodycorrError
from bodycorr.common.fileio import clear_outputs, ensure_dir, save_npz_atomic, write_bytes_atomic, write_text_atomic
from bodycorr.data.datasets import OnTheFlyViews, ShardDataset, stack_views
from bodycorr.data.views import ViewGenerator
from bodycorr.models.inputs import depth_to_input
from bodycorr.models.io import read_torch_file, save_model_file
from bodycorr.models.registry import checkpoint_dict, create_model
from bodycorr.training.config import TrainConfig
from bodycorr.body.template import body_sides
from bodycorr.training.targets import Targets, build_targets

CHECKPOINT_FORMAT = 1


def _dist() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` (or constant)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    p = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def build_model(cfg: TrainConfig, targets: Targets) -> torch.nn.Module:
    return create_model(
        cfg.model,
        num_segmentations=targets.num_tasks,
        num_patches=targets.num_patches,
        num_keypoints=targets.num_landmarks,
        num_dense=targets.num_dense,
        **cfg.model_args,
    )


def process_tree_cpu_s() -> float:
    """CPU seconds (user + system) of this process and its children, live ones included (data
    workers), read from ``/proc`` where there is one; elsewhere this process's and its finished children's."""
    import resource

    total = time.process_time()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    total += ru.ru_utime + ru.ru_stime
    proc = Path("/proc")
    if not proc.is_dir():
        return total
    me, tick = os.getpid(), os.sysconf("SC_CLK_TCK")
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me:  # fields after the name: state, ppid, ..., utime (12), stime (13)
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def dense_loss(logits: torch.Tensor, geodesic: torch.Tensor, sigma: float) -> torch.Tensor:
    """Cross-entropy against geodesically softened targets.

    logits: (M, S) scores of M pixels against S template points; geodesic: (M, S) distance (m) from
    each pixel's true vertex to each point. Target weights are ``softmax(-g^2 / (2 sigma^2))`` per pixel.
    """
    if logits.shape != geodesic.shape:
        raise BodycorrError(f"dense_loss: logits {tuple(logits.shape)} and geodesic {tuple(geodesic.shape)} must match (M, S).")
    target = torch.softmax(-(geodesic.float() ** 2) / (2 * sigma**2), dim=1)
    return -(target * torch.log_softmax(logits, dim=1)).sum(1).mean()


def sample_pixels(vertex: torch.Tensor, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``n`` random pixels with truth per image.

    vertex: (B, H, W) int64, -1 = none. Returns flat pixel indices (M,) into B*H*W and image ids (M,).
    """
    b = vertex.shape[0]
    flat = vertex.reshape(b, -1)
    idx, img = [], []
    for i in range(b):
        fg = torch.nonzero(flat[i] >= 0, as_tuple=False)[:, 0]
        if fg.numel() == 0:
            continue
        pick = fg[torch.randperm(fg.numel(), generator=gen)[:n]]
        idx.append(pick + i * flat.shape[1])
        img.append(torch.full_like(pick, i))
    if not idx:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(idx), torch.cat(img)


def sample_pixels_batched(vertex: torch.Tensor, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sample_pixels` without its per-image loop: up to ``n`` distinct random pixels with truth
    per image, uniformly, in image order (the random stream differs).

    vertex: (B, H, W) int64, -1 = none, on any device. The scores are drawn on ``vertex``'s device
    by a generator seeded from ``gen`` (so ``gen`` may stay on the CPU). Returns flat pixel
    indices (M,) into B*H*W and image ids (M,), on ``vertex``'s device.
    """
    b = vertex.shape[0]
    flat = vertex.reshape(b, -1)
    if gen.device == flat.device:
        g = gen
    else:
        g = torch.Generator(device=flat.device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
    scores = torch.rand(flat.shape, generator=g, device=flat.device)
    scores = torch.where(flat >= 0, scores, torch.full_like(scores, -1.0))
    top, idx = scores.topk(min(n, flat.shape[1]), dim=1)
    keep = top >= 0
    img = torch.arange(b, device=flat.device)[:, None].expand_as(idx)
    return (idx + img * flat.shape[1])[keep], img[keep]


def losses(
    model: torch.nn.Module,
    heads: Any,
    batch: dict[str, torch.Tensor],
    seg: torch.Tensor,
    kp: torch.Tensor,
    cfg: TrainConfig,
    gen: torch.Generator,
    sides: torch.Tensor | None = None,
    dense_geo: torch.Tensor | None = None,
    sampler: Callable[[torch.Tensor, int, torch.Generator], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> dict[str, torch.Tensor]:
    """Classification losses of one batch.

    batch: ``depth`` (B, 1, H, W) metres, ``vertex`` (B, H, W). seg: (K', Vt) labels per task (the
    last one the body parts when ``targets.parts_task``), kp: (Vt,) key-point labels. sides: (Vt,)
    +1 left / -1 right / 0 middle (:func:`body_sides`), for models with a chirality head.
    dense_geo: (Vt, S) geodesic distances to the dense points (``Targets.dense_geodesic``), for the dense loss.
    sampler: picks the pixels the losses see (default :func:`sample_pixels`; :func:`sample_pixels_batched`
        draws the same distribution without a per-image loop, for large batches on a GPU).
    """
    x = depth_to_input(batch["depth"])
    desc = model(x)  # (B, D, H, W)
    b, d = desc.shape[:2]
    pix, img = (sampler or sample_pixels)(batch["vertex"], cfg.pixels_per_image, gen)
    flat = desc.permute(0, 2, 3, 1).reshape(-1, d)[pix.to(desc.device)]
    verts = batch["vertex"].reshape(-1)[pix].to(desc.device)
    n_seg = cfg.targets.num_segmentations
    out: dict[str, torch.Tensor] = {}
    if n_seg > 0 and cfg.seg_weight > 0:
        # Each image gets `heads_per_image` random segmentation tasks; each of its pixels is classified under all of them.
        tasks = torch.stack([torch.randperm(n_seg, generator=gen)[: cfg.heads_per_image] for _ in range(b)]).to(desc.device)
        h = tasks.shape[1]
        task_ids = tasks[img.to(desc.device)].reshape(-1)  # (M*h,)
        rep = flat.repeat_interleave(h, dim=0)
        labels = seg[task_ids, verts.repeat_interleave(h)]
        out["seg"] = F.cross_entropy(heads.logits(rep, task_ids), labels)
    if cfg.dense_weight > 0 and dense_geo is not None and dense_geo.shape[1] > 0:
        out["dense"] = dense_loss(heads.dense_logits(flat), dense_geo[verts], cfg.targets.dense_sigma)
    if cfg.targets.parts_task and cfg.parts_weight > 0:
        pt = torch.full_like(verts, seg.shape[0] - 1)
        out["parts"] = F.cross_entropy(heads.logits(flat, pt), seg[pt, verts])
    if cfg.keypoint_weight > 0:
        out["keypoint"] = F.cross_entropy(heads.keypoint_logits(flat), kp[verts])
    net = getattr(model, "module", model)  # under DDP the heads live on the wrapped module
    if sides is not None and cfg.chirality_weight > 0 and getattr(net.config, "chirality_head", False):
        label, weight = chirality_labels(batch["vertex"].to(desc.device), sides)
        logits = net.chirality_logits()
        out["chirality"] = (F.cross_entropy(logits, label, reduction="none") * weight).sum() / weight.sum().clamp(min=1e-6)
        with torch.no_grad():  # logged, not optimised
            hit = (logits.argmax(1) == label).float()
            out["chirality_acc"] = (hit * weight).sum() / weight.sum().clamp(min=1e-6)
    out["total"] = (cfg.seg_weight * out.get("seg", 0) + cfg.dense_weight * out.get("dense", 0)
                    + cfg.parts_weight * out.get("parts", 0) + cfg.keypoint_weight * out.get("keypoint", 0)
                    + cfg.chirality_weight * out.get("chirality", 0))  # fmt: skip
    return out


def chirality_labels(vertex: torch.Tensor, sides: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether each image shows the person's left side on the image's right, and how clearly.

    vertex: (B, H, W) true template vertex per pixel (-1 = none); sides: (Vt,) from :func:`body_sides`.
    Returns label (B,) int64 (1 = left side to the right of the silhouette's centre, as when the
    person faces the camera) and weight (B,) in [0, 1]: the mean signed column offset of the
    side-labelled pixels, saturating at 1/32 of the width (side-on views, one side hidden, weigh little).
    """
    valid = vertex >= 0
    s = torch.where(valid, sides[vertex.clamp(min=0)].float(), torch.zeros((), device=vertex.device))
    cols = torch.arange(vertex.shape[-1], device=vertex.device, dtype=torch.float32)
    n = valid.sum((1, 2)).clamp(min=1)
    centre = (valid * cols).sum((1, 2)) / n
    score = (s * (cols - centre[:, None, None])).sum((1, 2)) / s.abs().sum((1, 2)).clamp(min=1)
    weight = (score.abs() / (vertex.shape[-1] / 32)).clamp(max=1.0)
    return (score > 0).long(), weight


class PixelMatchValidator:
    """Inter-subject matching error on fixed validation views, in cm.

    Views are paired (view i with a view of another identity); every pixel of A is matched to its
    nearest pixel of B in descriptor space, and the error is the template geodesic distance between
    their true points. Only A pixels whose true point B also sees (within 3 cm) count.
    """

    def __init__(self, cfg: TrainConfig, out_dir: Path):
        from bodycorr.geometry.geodesic import all_pairs_geodesics

        path = out_dir / "val_views.npz"
        if path.exists():
            with np.load(path) as z:
                self.depth, self.vertex = z["depth"], z["vertex"]
        else:
            gen = ViewGenerator(replace(cfg.view, views_per_body=1, poses_per_identity=1), "val", cfg.seed)
            views = [gen.views_of_body(b)[0] for b in range(cfg.val_views)]
            batch = stack_views(views)
            self.depth, self.vertex = batch["depth"].numpy(), batch["vertex"].numpy()
            save_npz_atomic(path, depth=self.depth, vertex=self.vertex)
        template = get_template()
        self.geo = all_pairs_geodesics(template.mesh)
        self.symmetry = template.symmetry

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        model.eval()
        desc = []
        for i in range(0, len(self.depth), 8):
            desc.append(model(depth_to_input(torch.from_numpy(self.depth[i : i + 8]).to(device))).cpu())
        desc = torch.cat(desc)
        model.train()
        errs, flips = [], []
        n = len(self.depth)
        for i in range(n):
            j = (i + 1) % n
            va, vb = self.vertex[i].ravel(), self.vertex[j].ravel()
            ia, ib = np.flatnonzero(va >= 0), np.flatnonzero(vb >= 0)
            if not len(ia) or not len(ib):
                continue
            da = desc[i].reshape(desc.shape[1], -1)[:, ia].T
            db = desc[j].reshape(desc.shape[1], -1)[:, ib].T
            nn_idx = torch.cdist(da, db).argmin(1).numpy()
            ta, tb = va[ia], vb[ib]
            seen = self.geo[np.ix_(np.unique(ta), np.unique(tb))].astype(np.float32).min(1) < 0.03
            keep = np.isin(ta, np.unique(ta)[seen])
            e = self.geo[ta[keep], tb[nn_idx[keep]]].astype(np.float32)
            errs.append(e)
            flips.append(self.geo[ta[keep], self.symmetry[tb[nn_idx[keep]]]].astype(np.float32) < e)
        e = np.concatenate(errs) * 100 if errs else np.zeros(1)
        gross = e > 20
        flipped = np.concatenate(flips) if flips else np.zeros(1, bool)
        return {"val_mean_cm": float(e.mean()), "val_median_cm": float(np.median(e)), "val_gross_pct": float(gross.mean() * 100),
                "val_flip_pct": float((gross & flipped).sum() / max(1, gross.sum()) * 100)}  # fmt: skip


RUNTIME_FIELDS = ("steps", "threads", "workers", "device", "log_every", "val_every", "ckpt_every", "max_cpu_s", "snapshot_cpu_s")


def same_run_config(saved: dict | None, current: dict) -> bool:
    """Whether a checkpoint's config and ``current`` describe the same run.

    Fields that only say how or how long to run (step count, threads, workers, device, logging
    and checkpoint intervals) may change on resume; everything else must match.
    """
    a, b = _plain(saved or {}), _plain(current)
    for k in RUNTIME_FIELDS:
        a.pop(k, None)
        b.pop(k, None)
    # fields added to the config after the checkpoint was written may be set when resuming
    # (e.g. a data recipe for the last steps); the card records the config of the final run
    for k in set(b) - set(a):
        b.pop(k)
    return a == b


def check_ranks_agree(model: torch.nn.Module, rtol: float = 1e-5) -> None:
    """Under DDP, raise if the ranks' weights differ (compares a float64 checksum across ranks)."""
    with torch.no_grad():
        s = torch.stack([sum(p.double().abs().sum() for p in model.parameters()), sum(p.double().sum() for p in model.parameters())])
    gathered = [torch.zeros_like(s) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, s)
    for g in gathered[1:]:
        if not torch.allclose(g, gathered[0], rtol=rtol, atol=0):
            raise BodycorrError("DDP training: the ranks' weights diverged. Check that every rank runs the same config and code.")


def _plain(d: dict) -> dict:
    """JSON-normalised copy (tuples become lists), so configs compare equal after a round trip."""
    return json.loads(json.dumps(d))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes_atomic(path, buf.getvalue())


def restore_checkpoint(ckpt_path: Path, cfg: Any, model: torch.nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator,
                       extras: dict | None = None) -> int:  # fmt: skip
    """Load a run's ``last.pt`` into ``model``, ``opt`` and ``gen``; returns its step. ``extras``, when
    given, receives the checkpoint's ``extras`` (e.g. the CPU seconds used so far).

    The step count and other runtime fields may change on resume (see :func:`same_run_config`);
    a checkpoint of another config or architecture raises one line naming the file and the fix.
    """
    state = read_torch_file(ckpt_path, "training checkpoint")
    if not same_run_config(state.get("config"), cfg.to_dict()):
        raise BodycorrError(f"training checkpoint {ckpt_path}: made with a different config. Use another --out folder, or --no-resume.")
    try:
        model.load_state_dict(state["model"]["state_dict"])
    except RuntimeError:
        raise BodycorrError(
            f"training checkpoint {ckpt_path}: made by another version of the {cfg.model} architecture. "
            "Use another --out folder, or --no-resume."
        ) from None
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    if extras is not None:
        extras.update(state.get("extras", {}))
    return int(state["step"])


def init_weights(path: Path, cfg: Any, model: torch.nn.Module) -> None:
    """Start ``model`` from the weights in ``path`` (a run's ``last.pt`` or a model file saved with heads).

    Only a chirality head may be missing from ``path`` (it then starts fresh)."""
    state = read_torch_file(path, "init checkpoint")
    sd = state.get("model", state)
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    try:
        missing, unexpected = model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=False)
        if unexpected or any(not k.startswith("heads.chirality.") for k in missing):
            raise RuntimeError
    except (RuntimeError, AttributeError):
        raise BodycorrError(
            f"init checkpoint {path}: not weights of the {cfg.model} architecture with these training heads. "
            "Give a last.pt of a run with the same model and targets."
        ) from None


def start_run_folder(out: Path, step: int) -> None:
    """Make a run folder hold one run: keep ``log.jsonl``'s records up to ``step`` (where a resumed
    run continues; records logged after its last checkpoint are dropped, so none is repeated), and
    on a fresh start (``step`` 0) delete an earlier run's log, checkpoint and model."""
    if step == 0:
        clear_outputs(out, ("log.jsonl", "last.pt", "model.pt"))
        return
    log = out / "log.jsonl"
    if not log.exists():
        return
    keep = []
    for line in log.read_text().splitlines():
        try:
            if int(json.loads(line)["step"]) <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):  # a half-written last line of an interrupted run
            continue
    write_text_atomic(log, "".join(k + "\n" for k in keep))


class StepLog:
    """The training loops' per-step bookkeeping: a tqdm bar, throughput, and ``log.jsonl`` records.

    Every ``cfg.log_every`` steps (and at the last) one record is appended: step, time, learning
    rate (``lr_at(step)``), images/s since the last record and every loss; on ``cfg.val_every``
    steps ``validate()`` adds its fields and ``summary(step, record)`` is printed above the bar.
    ``write=False`` (DDP ranks other than 0) counts nothing and writes nothing.
    """

    def __init__(self, path: Path, cfg: Any, start_step: int, lr_at: Callable[[int], float], validate: Callable[[], dict] | None,
                 summary: Callable[[int, dict], str], progress: bool = True, write: bool = True):  # fmt: skip
        self.path, self.cfg, self.lr_at, self.validate, self.summary, self.write = path, cfg, lr_at, validate, summary, write
        self.bar = None
        if progress and write:
            from tqdm import tqdm

            self.bar = tqdm(total=cfg.steps, initial=start_step, desc=cfg.name, unit="step", dynamic_ncols=True)
        self.record: dict[str, Any] = {}
        self.t0, self.n_img = time.time(), 0

    def update(self, step: int, images: int, ls: dict[str, torch.Tensor], force: bool = False, **fields: Any) -> None:
        """After optimiser step ``step`` (1-based) on ``images`` images with losses ``ls``; ``force``
        writes a record (with validation) whatever the step; ``fields`` are added to the record."""
        if not self.write:
            return
        cfg = self.cfg
        self.n_img += images
        if self.bar:
            self.bar.update()
            self.bar.set_postfix(loss=f"{ls['total'].item():.3f}")
        if force or step % cfg.log_every == 0 or step == cfg.steps:
            el = time.time() - self.t0
            record = {"step": step, "time": time.time(), "lr": cfg.lr * self.lr_at(step), "img_per_s": self.n_img / max(el, 1e-9),
                      **fields, **{k: float(v.detach()) for k, v in ls.items()}}  # fmt: skip
            if self.validate and (force or step % cfg.val_every == 0 or step == cfg.steps):
                record.update(self.validate())
                if self.bar:
                    self.bar.write(self.summary(step, record))
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
            self.record = record
            self.t0, self.n_img = time.time(), 0

    def close(self) -> None:
        if self.bar:
            self.bar.close()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM (kill, job schedulers) stops like Ctrl-C, so the loop's ``finally`` saves a checkpoint."""

    def _stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop) if threading.current_thread() is threading.main_thread() else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train a descriptor network; returns the last log record.

    Writes ``out_dir/last.pt`` (full state, atomically, every ``ckpt_every`` steps and on exit),
    ``out_dir/model.pt`` (inference weights), ``out_dir/log.jsonl`` and ``out_dir/config.json``.
    Rerunning with the same ``out_dir`` resumes where it stopped.
    """
    if not ((cfg.targets.num_segmentations and cfg.seg_weight > 0) or (cfg.targets.dense_points and cfg.dense_weight > 0)
            or (cfg.targets.parts_task and cfg.parts_weight > 0) or cfg.keypoint_weight > 0):  # fmt: skip
        raise BodycorrError(f"training config {cfg.name}: no loss is active. Give segmentations with seg_weight > 0 or "
                            "targets.dense_points with dense_weight > 0.")  # fmt: skip
    rank, world = _dist()
    if world > 1:
        torch.distributed.init_process_group("gloo" if not torch.cuda.is_available() else "nccl")
    torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
    out = ensure_dir(out_dir, "training output folder")
    torch.manual_seed(cfg.seed + rank)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)

    template = get_template()
    targets = build_targets(template, cfg.targets)
    seg = torch.from_numpy(targets.segmentations).to(device)
    kp = torch.from_numpy(targets.keypoints).to(device)
    sides = torch.from_numpy(body_sides(template).astype(np.int64)).to(device)
    dense_geo = torch.from_numpy(targets.dense_geodesic).to(device) if targets.num_dense else None
    model = build_model(cfg, targets).to(device)
    heads = model.heads
    # no weight decay on the cosine heads: shrinking their norm would silently raise their step size
    head_params = [p for n, p in model.named_parameters() if n.startswith("heads.")]
    body_params = [p for n, p in model.named_parameters() if not n.startswith("heads.")]
    opt = torch.optim.AdamW([{"params": body_params, "weight_decay": cfg.weight_decay},
                             {"params": head_params, "weight_decay": 0.0}], lr=cfg.lr)  # fmt: skip
    step = 0
    extras: dict[str, Any] = {"cpu_s": 0.0}
    ckpt_path = out / "last.pt"
    if resume and ckpt_path.exists():
        step = restore_checkpoint(ckpt_path, cfg, model, opt, gen, extras)
    elif cfg.init:
        init_weights(Path(cfg.init), cfg, model)
    if rank == 0:
        start_run_folder(out, step)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    if cfg.data == "shards":
        ds = ShardDataset(Path(cfg.shards))
        sampler = torch.utils.data.DistributedSampler(ds, world, rank, seed=cfg.seed) if world > 1 else None
        loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                            num_workers=cfg.workers, drop_last=True, persistent_workers=cfg.workers > 0)  # fmt: skip

        def batches():
            epoch = 0
            while True:
                if sampler is not None:
                    sampler.set_epoch(epoch)
                yield from loader
                epoch += 1
    else:
        bodies_done = step * cfg.batch_size * world // cfg.view.views_per_body
        ds = OnTheFlyViews(cfg.view, "train", cfg.seed, start_body=bodies_done + rank * 10_000_000)
        loader = DataLoader(ds, batch_size=cfg.batch_size, num_workers=cfg.workers, prefetch_factor=4 if cfg.workers else None)

        def batches():
            yield from loader

    validator = PixelMatchValidator(cfg, out) if rank == 0 and cfg.val_every > 0 else None
    log = StepLog(out / "log.jsonl", cfg, step, lambda k: lr_factor(k, cfg), (lambda: validator(model, device)) if validator else None,
                  lambda k, r: (f"step {k}: val mean {r['val_mean_cm']:.1f} cm, median {r['val_median_cm']:.1f} cm, "
                                f"gross {r['val_gross_pct']:.1f} % ({r['val_flip_pct']:.0f} % of them flips)"),
                  progress=progress, write=rank == 0)  # fmt: skip
    it = batches()
    cpu_base, cpu_start = float(extras.get("cpu_s", 0.0)), process_tree_cpu_s()

    def cpu_used() -> float:
        return cpu_base + process_tree_cpu_s() - cpu_start

    def snapshot(cpu: float) -> None:
        if rank == 0:
            save_model_file(model, ensure_dir(out / "snapshots", "snapshot folder") / f"cpu_{int(round(cpu)):07d}.pt",
                            meta={"step": step, "config": cfg.name, "size": cfg.view.size, "cpu_s": cpu})  # fmt: skip

    next_snap = (math.floor(cpu_base / cfg.snapshot_cpu_s) + 1) * cfg.snapshot_cpu_s if cfg.snapshot_cpu_s > 0 else math.inf

    def checkpoint() -> None:
        if world > 1:  # every rank must hold the same weights; a silent divergence would waste the run
            check_ranks_agree(model)
        if rank != 0:
            return
        save_checkpoint(ckpt_path, {"format": CHECKPOINT_FORMAT, "step": step, "config": _plain(cfg.to_dict()),
                                    "model": checkpoint_dict(model), "optimizer": opt.state_dict(),
                                    "generator": gen.get_state(), "extras": {"cpu_s": cpu_used()}})  # fmt: skip
        save_model_file(model, out / "model.pt", meta={"step": step, "config": cfg.name, "size": cfg.view.size})

    with sigterm_as_interrupt():
        try:
            while step < cfg.steps:
                batch = {k: v.to(device) for k, v in next(it).items()}
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * lr_factor(step, cfg)
                ls = losses(ddp, heads, batch, seg, kp, cfg, gen, sides, dense_geo)
                opt.zero_grad(set_to_none=True)
                ls["total"].backward()
                opt.step()
                step += 1
                cpu = cpu_used() if (cfg.max_cpu_s > 0 or cfg.snapshot_cpu_s > 0 or step % cfg.log_every == 0) else 0.0
                over = cfg.max_cpu_s > 0 and cpu >= cfg.max_cpu_s
                if world > 1 and cfg.max_cpu_s > 0:  # every rank stops at the same step, or DDP hangs
                    flag = torch.tensor([float(over)], device=device)
                    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                    over = bool(flag.item() > 0)
                log.update(step, batch["depth"].shape[0] * world, ls, force=over, cpu_s=round(cpu, 1))
                if cpu >= next_snap or (over and cfg.snapshot_cpu_s > 0):
                    snapshot(cpu)
                    next_snap = (math.floor(cpu / cfg.snapshot_cpu_s) + 1) * cfg.snapshot_cpu_s
                if over:
                    break
                if step % cfg.ckpt_every == 0:
                    checkpoint()
        finally:
            checkpoint()
            log.close()
            if world > 1:
                torch.distributed.destroy_process_group()
    return log.record
