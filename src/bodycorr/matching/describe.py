"""Describing a scan: the network's descriptor for every point (per pixel for depth maps, multi-view for meshes and clouds)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bodycorr.common.errors import BodycorrError
from bodycorr.matching.extract import DescriptorExtractor
from bodycorr.matching.inputs import ScanInput
from bodycorr.matching.up import estimate_up, parse_up
from bodycorr.models.io import load_model_file, read_torch_file

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_MODEL = WEIGHTS_DIR / "depth-unet.pt"


@dataclass(frozen=True, eq=False)
class Described:
    """A scan with a descriptor per point.

    Attributes:
        scan: the input.
        points: (N, 3) metres (mesh vertices, cloud points, valid depth pixels).
        descriptors: (N, D) unit descriptors.
        consistency: (N,) multi-view agreement in [0, 1] (1 for depth pixels).
        up: (3,) up axis used.
        seconds: time spent.
        pixels: (N, 2) row, column of each point for depth maps, else None.
    """

    scan: ScanInput
    points: np.ndarray
    descriptors: np.ndarray
    consistency: np.ndarray
    up: np.ndarray
    seconds: float
    pixels: np.ndarray | None = None


@functools.lru_cache(maxsize=4)
def load_extractor(model: str | None = None, device: str = "cpu") -> DescriptorExtractor:
    """A :class:`DescriptorExtractor` for a model file (the shipped one by default)."""
    path = Path(model) if model else DEFAULT_MODEL
    if not model and not path.exists():
        raise BodycorrError(f"no shipped model at {path}. Train one with 'bodycorr train' and pass --model runs/NAME/model.pt.")
    d = read_torch_file(path, "model file")
    check_depth_model(d, path)
    net = load_model_file(path, device)
    return DescriptorExtractor(net, size=int(d.get("meta", {}).get("size", 128)), device=device)


def check_depth_model(d: dict, path: str | Path) -> None:
    """One line if model file ``path`` (its dict ``d``, from :func:`read_torch_file`) holds an image
    (RGB-to-surface) network where a depth descriptor network is needed."""
    from bodycorr.models.registry import model_task

    entry = d.get("model", d)
    name = entry.get("name") if isinstance(entry, dict) else None
    try:
        task = model_task(name) if isinstance(name, str) else None
    except BodycorrError:  # an unknown architecture: load_model_file says so
        return
    if task == "surface":
        raise BodycorrError(f"model file {path}: an image model ({name!r}: RGB image to the template), not a depth model. "
                            "Use it with 'bodycorr image' or 'bodycorr transfer'; here leave --model out (the shipped depth "
                            "model) or pass a depth model (runs/NAME/model.pt from a depth config).")  # fmt: skip


def describe(scan: ScanInput, extractor: DescriptorExtractor, views: int = 48, up: str = "auto") -> Described:
    """Descriptors for every point of a scan (per pixel for depth maps, multi-view for meshes/clouds)."""
    t0 = time.perf_counter()
    if scan.kind == "depth":
        pd = extractor.depth_map(scan.depth, scan.camera, scan.name)
        upv = -scan.camera.R[1]
        return Described(scan, pd.points, pd.descriptors, np.ones(len(pd.points), np.float32), upv, time.perf_counter() - t0, pd.pixels)
    upv = parse_up(up) if up != "auto" else estimate_up(scan, extractor)
    vd = extractor.mesh(scan.mesh, views, upv) if scan.kind == "mesh" else extractor.point_cloud(scan.cloud, views, upv)
    return Described(scan, scan.points, vd.descriptors, vd.consistency, upv, time.perf_counter() - t0)
