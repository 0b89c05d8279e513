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
    net = load_model_file(path, device)
    meta = read_torch_file(path, "model file").get("meta", {})
    return DescriptorExtractor(net, size=int(meta.get("size", 128)), device=device)


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
