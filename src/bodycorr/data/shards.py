"""On-disk shards of views: deterministic bytes per seed, atomic, resumable, parallel over processes."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import zipfile
from pathlib import Path

import numpy as np

from bodycorr.body.shape import Split
from bodycorr.common.errors import BodycorrError
from bodycorr.common.fileio import ensure_dir, save_npz_atomic, write_json_atomic
from bodycorr.data.views import View, ViewConfig, ViewGenerator, view_config_dict

SHARD_FORMAT = 1
_KEYS = ("depth", "template_vertex", "template_face", "template_bary", "K", "R", "t", "phenotypes", "identity", "body", "noisy")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.npz"


def pack_views(views: list[View]) -> dict[str, np.ndarray]:
    """Stack views into shard arrays (compact dtypes: depth float32, vertex int16, bary float16)."""
    k = [v.camera.intrinsics for v in views]
    return {
        "depth": np.stack([v.depth for v in views]).astype(np.float32),
        "template_vertex": np.stack([v.template_vertex for v in views]).astype(np.int16),
        "template_face": np.stack([v.template_face for v in views]).astype(np.int32),
        "template_bary": np.stack([v.template_bary for v in views]).astype(np.float16),
        "K": np.array([[i.fx, i.fy, i.cx, i.cy] for i in k], dtype=np.float64),
        "R": np.stack([v.camera.R for v in views]),
        "t": np.stack([v.camera.t for v in views]),
        "phenotypes": np.stack([v.phenotypes for v in views]),
        "identity": np.array([v.identity for v in views], dtype=np.int64),
        "body": np.array([v.body for v in views], dtype=np.int64),
        "noisy": np.array([v.noisy for v in views], dtype=bool),
    }


def _make_shard(args: tuple) -> str:
    out, split, seed, config_dict, index, first, count, pose_kind = args
    gen = _worker_generator(split, seed, config_dict, pose_kind)
    views = collect_views(gen, first, count)
    path = Path(out) / shard_name(index)
    save_npz_atomic(path, **pack_views(views))
    return str(path)


_GEN: dict = {}


def _worker_generator(split, seed, config_dict, pose_kind) -> ViewGenerator:
    key = (split, seed, json.dumps(config_dict, sort_keys=True), pose_kind)
    if key not in _GEN:
        _GEN.clear()
        _GEN[key] = ViewGenerator(ViewConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config_dict.items()}), split, seed, pose_kind)
    return _GEN[key]


def shard_is_valid(path: Path, keys: tuple[str, ...] = _KEYS) -> bool:
    """A shard counts as written only if it is a complete, readable npz with every key in ``keys``."""
    try:
        with zipfile.ZipFile(path) as z:
            names = {n[:-4] for n in z.namelist()}
            return set(keys) <= names and z.testzip() is None
    except (zipfile.BadZipFile, OSError):
        return False


def collect_views(gen, first: int, count: int) -> list:
    """Views ``first .. first + count - 1`` of a generator whose body ``b`` gives views
    ``b * views_per_body ..`` (:class:`ViewGenerator`, :class:`~bodycorr.data.images.ImageViewGenerator`)."""
    vpb = gen.config.views_per_body
    views: list = []
    b = first // vpb
    while len(views) < count:
        lo = max(0, first - b * vpb)
        views += gen.views_of_body(b)[lo : lo + count - len(views)]
        b += 1
    return views


def generate_shards(
    out: str | Path,
    split: Split,
    count: int,
    config: ViewConfig = ViewConfig(),
    seed: int = 0,
    shard_size: int = 64,
    workers: int = 1,
    pose_kind: str = "sampler",
    progress: bool = True,
) -> list[Path]:
    """Write ``count`` views of ``split`` as shards under ``out/split``; rerunning continues.

    The same (seed, split, config) gives the same bytes, whatever ``workers`` is. A shard that is
    missing or invalid (an interrupted run) is (re)made; valid ones are kept.
    """
    if count < 1:
        raise BodycorrError(f"generate: --count must be at least 1, got {count}.")
    folder = ensure_dir(Path(out) / split)
    meta = {"format": SHARD_FORMAT, "split": split, "seed": seed, "count": count, "shard_size": shard_size,
            "pose_kind": pose_kind, "config": view_config_dict(config)}  # fmt: skip
    meta_path = folder / "meta.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if {k: old.get(k) for k in meta} != json.loads(json.dumps(meta)):
            raise BodycorrError(
                f"generate: {folder} holds shards made with other settings (see {meta_path}). Use another --out folder."
            )
    write_json_atomic(meta_path, meta)
    jobs = []
    for index, first in enumerate(range(0, count, shard_size)):
        path = folder / shard_name(index)
        if path.exists() and shard_is_valid(path):
            continue
        jobs.append((str(folder), split, seed, view_config_dict(config), index, first, min(shard_size, count - first), pose_kind))
    bar = None
    if progress and jobs:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=f"{split} shards", unit="shard")
    if workers > 1 and len(jobs) > 1:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers) as pool:
            for _ in pool.imap_unordered(_make_shard, jobs):
                bar and bar.update()
    else:
        for j in jobs:
            _make_shard(j)
            bar and bar.update()
    bar and bar.close()
    return sorted(folder.glob("shard-*.npz"))


def load_shard(path: str | Path) -> dict[str, np.ndarray]:
    """Load a shard's arrays; a corrupt file raises one line naming it."""
    p = Path(path)
    if not shard_is_valid(p):
        raise BodycorrError(f"shard {p}: incomplete or corrupt. Delete it and rerun 'bodycorr generate' to remake it.")
    with np.load(p) as z:
        return {k: z[k] for k in z.files}


def config_from_meta(folder: str | Path) -> ViewConfig:
    meta = json.loads((Path(folder) / "meta.json").read_text())
    fields = {f.name for f in dataclasses.fields(ViewConfig)}
    return ViewConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items() if k in fields})
