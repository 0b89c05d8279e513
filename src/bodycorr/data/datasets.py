"""Torch datasets over shards on disk and over views generated on the fly."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from bodycorr.body.shape import Split
from bodycorr.common.errors import BodycorrError
from bodycorr.data.shards import load_shard
from bodycorr.data.views import View, ViewConfig, ViewGenerator


def view_item(depth: np.ndarray, template_vertex: np.ndarray) -> dict[str, torch.Tensor]:
    """A training item: ``depth`` (1, H, W) float32 metres and ``vertex`` (H, W) int64 (-1 = no truth)."""
    return {
        "depth": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None],
        "vertex": torch.from_numpy(np.ascontiguousarray(template_vertex, dtype=np.int64)),
    }


class ShardFiles(Dataset):
    """Items spread over the ``shard-*.npz`` files of one folder: a global index -> (shard arrays, row).

    Subclasses give ``_load`` (path -> arrays, raising one line on a corrupt file), may check each
    file when the folder is opened (``_check``), and build items in ``__getitem__`` from :meth:`_row`.
    """

    def __init__(self, folder: str | Path, missing: str):
        self.folder = Path(folder)
        self.paths = sorted(self.folder.glob("shard-*.npz"))
        if not self.paths:
            raise BodycorrError(missing)
        self.sizes = []
        for p in self.paths:
            self._check(p)
            with np.load(p) as z:
                self.sizes.append(int(z["identity"].shape[0]))
        self.offsets = np.cumsum([0] + self.sizes)

    def _check(self, path: Path) -> None:
        """Raise for a shard that cannot be used (default: checked only when loaded)."""

    def _load(self, path: Path) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @functools.lru_cache(maxsize=4)
    def _shard(self, k: int) -> dict[str, np.ndarray]:
        return self._load(self.paths[k])

    def _row(self, i: int) -> tuple[dict[str, np.ndarray], int]:
        """The arrays of the shard holding item ``i`` and the item's row in them."""
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self._shard(k), int(i - self.offsets[k])


class ShardDataset(ShardFiles):
    """Views stored by ``bodycorr generate`` in ``folder`` (one split)."""

    def __init__(self, folder: str | Path):
        super().__init__(folder, f"dataset {Path(folder)}: no shards found. Run 'bodycorr generate --out DIR --split ...' first.")

    def _load(self, path: Path) -> dict[str, np.ndarray]:
        return load_shard(path)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s, j = self._row(i)
        return view_item(s["depth"][j], s["template_vertex"][j])


class OnTheFlyViews(IterableDataset):
    """An endless stream of freshly rendered views (unlimited people and poses).

    Bodies ``start_body, start_body + 1, ...`` are split between DataLoader workers, each with its
    own ray caster; the stream is deterministic for a given (seed, split, start_body, workers).
    """

    def __init__(self, config: ViewConfig, split: Split = "train", seed: int = 0, start_body: int = 0, pose_kind: str = "sampler"):
        self.config, self.split, self.seed, self.start_body, self.pose_kind = config, split, seed, start_body, pose_kind

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        gen = ViewGenerator(self.config, self.split, self.seed, self.pose_kind)  # type: ignore[arg-type]
        b = self.start_body + wid
        while True:
            for v in gen.views_of_body(b):
                yield view_item(v.depth, v.template_vertex)
            b += nw


def stack_views(views: list[View]) -> dict[str, torch.Tensor]:
    items = [view_item(v.depth, v.template_vertex) for v in views]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}
