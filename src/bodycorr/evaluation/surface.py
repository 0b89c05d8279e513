"""Image-to-surface benchmark on synthetic test people: 2D window accuracy, GPS AP/AR, temporal consistency, speed."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bodycorr.body.surface_code import SurfaceCode, get_surface_code
from bodycorr.body.template import get_template
from bodycorr.common.cache import cached_arrays, content_hash
from bodycorr.common.errors import BodycorrError
from bodycorr.common.fileio import atomic_path, check_output_dir, file_sha256, output_run, write_json_atomic
from bodycorr.data.images import ImageConfig, ImageViewGenerator
from bodycorr.evaluation.surface_metrics import gps_ap_ar, gps_scores, temporal_consistency, template_geodesic_fn, window_accuracy
from bodycorr.matching.image import DEFAULT_IMAGE_MODEL, load_image_model

BENCH_VERSION = 1


@dataclass(frozen=True)
class SurfaceBenchConfig:
    """The image benchmark.

    Attributes:
        images: test views (test identities, never seen in training), drawn with the engine's
            default image settings (crowds, occluders and upper-body crops included).
        frames: frames of one test person's key-pose motion for temporal consistency (0 = skip).
        size: image side; the 2D windows (5/10/20 px) are in pixels at this size.
        intervals: frame intervals of the temporal consistency (the paper: 1, 12, 120).
        window: pixel window of a positive temporal match.
    """

    images: int = 200
    frames: int = 150
    size: int = 128
    seed: int = 0
    intervals: tuple[int, ...] = (1, 12, 120)
    window: int = 5
    speed_runs: int = 5


def _test_set(cfg: SurfaceBenchConfig) -> dict[str, np.ndarray]:
    def build() -> dict[str, np.ndarray]:
        gen = ImageViewGenerator(ImageConfig(size=cfg.size, views_per_body=1, poses_per_identity=1), "test", cfg.seed + 101)
        views = [gen.views_of_body(b)[0] for b in range(cfg.images)]
        return {"rgb": np.stack([v.rgb for v in views]), "vertex": np.stack([v.template_vertex for v in views]).astype(np.int32),
                "instance": np.stack([v.instance for v in views]).astype(np.int16)}  # fmt: skip

    return cached_arrays("surface-bench", content_hash(BENCH_VERSION, "images", cfg.images, cfg.size, cfg.seed), build, compress=True)


def _sequence(cfg: SurfaceBenchConfig) -> dict[str, np.ndarray]:
    def build() -> dict[str, np.ndarray]:
        gen = ImageViewGenerator(ImageConfig(size=cfg.size), "test", cfg.seed + 202)
        views = gen.sequence(cfg.frames, index=0, motion="keys")
        return {"rgb": np.stack([v.rgb for v in views]), "vertex": np.stack([v.template_vertex for v in views]).astype(np.int32)}

    return cached_arrays("surface-bench", content_hash(BENCH_VERSION, "sequence", cfg.frames, cfg.size, cfg.seed), build, compress=True)


@torch.no_grad()
def predict_vertices(net: torch.nn.Module, rgb: np.ndarray, code: SurfaceCode, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Predicted template vertex per pixel for framed images.

    rgb: (N, H, W, 3) uint8. Returns vertex (N, H, W) int64 (-1 = predicted background) and a
    detection score per image (N,) (mean silhouette probability x confidence on the silhouette).
    """
    out_v, scores = [], []
    for i in range(0, len(rgb), batch):
        x = torch.from_numpy(rgb[i : i + batch]).permute(0, 3, 1, 2).float() / 255
        p = net.predict(x, foreground=0.5, dilate=0)
        colour, conf, sil = p.colour.cpu().numpy(), p.confidence.cpu().numpy(), p.silhouette.cpu().numpy()
        for j in range(len(colour)):
            m = sil[j] > 0.5
            v = -np.ones(m.shape, np.int64)
            if m.any():
                v[m] = code.decode(colour[j][m]).vertex
            out_v.append(v)
            scores.append(float((sil[j][m] * conf[j][m]).mean()) if m.any() else 0.0)
    return np.stack(out_v), np.asarray(scores)


def _speed(net: torch.nn.Module, rgb: np.ndarray, size: int, runs: int) -> float:
    """Median ms of one ``predict`` (network + classification of the person's pixels) on ``rgb`` (H, W, 3)
    uint8, a test view, resized to ``size`` x ``size``."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    net.predict(x, foreground=0.5)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        net.predict(x, foreground=0.5)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1000)


def evaluate_surface_model(path: str | Path, cfg: SurfaceBenchConfig, progress: bool = True) -> dict[str, Any]:
    """All image metrics of one model file on the fixed test set (see :class:`SurfaceBenchConfig`)."""
    net, _, code_name = load_image_model(str(path))
    code = get_surface_code(code_name)
    pts = get_template().mesh.vertices
    geo = template_geodesic_fn()
    data = _test_set(cfg)
    t0 = time.perf_counter()
    pred, det = predict_vertices(net, data["rgb"], code)
    infer_s = time.perf_counter() - t0
    main_pred = []
    acc: dict[int, list[float]] = {5: [], 10: [], 20: []}
    gps_all, det_all = [], []
    for i in range(len(pred)):
        tv, inst = data["vertex"][i].astype(np.int64), data["instance"][i].astype(np.int64)
        main = np.where(inst == 0, tv, -1)
        if (main >= 0).any():
            a = window_accuracy(np.where(inst == 0, pred[i], -1), main, pts, windows=(5, 10, 20))
            # pixels are weighted equally across images
            n = int((main >= 0).sum())
            for w in acc:
                acc[w].append((a[w], n))
        # persons fully hidden by others or by occluders leave gaps in the ids: number the visible ones 0..P-1
        inst = np.where(tv >= 0, inst, -1)
        ids = np.unique(inst[inst >= 0])
        inst = np.where(inst >= 0, np.searchsorted(ids, inst), -1)
        g = gps_scores(pred[i], tv, inst, geo) if len(ids) else np.zeros(0)
        gps_all.append(g)
        det_all.append(np.full(len(g), det[i]))
        main_pred.append(pred[i])
    apar = gps_ap_ar(gps_all, det_all)
    res: dict[str, Any] = {
        "model": str(path), "model_sha256": file_sha256(path),  # 'bodycorr release' checks the results are this file's
        "size": cfg.size,
        "images": int(len(pred)),
        "acc_5px_pct": 100 * _weighted(acc[5]),
        "acc_10px_pct": 100 * _weighted(acc[10]),
        "acc_20px_pct": 100 * _weighted(acc[20]),
        "gps_mean": float(np.mean(np.concatenate(gps_all))) if gps_all else float("nan"),
        "AP": 100 * apar.ap, "AP50": 100 * apar.ap50, "AP75": 100 * apar.ap75,
        "AR": 100 * apar.ar, "AR50": 100 * apar.ar50, "AR75": 100 * apar.ar75,
        "ms_per_image_batched": 1000 * infer_s / max(len(pred), 1),
    }  # fmt: skip
    if cfg.frames > 1:
        seq = _sequence(cfg)
        sp, _ = predict_vertices(net, seq["rgb"], code)
        tc = temporal_consistency(sp, seq["vertex"].astype(np.int64), pts, intervals=tuple(k for k in cfg.intervals if k < cfg.frames), window=cfg.window)
        for k, v in tc.items():
            res[f"consistency_{k}_pct"] = 100 * float(v)
        res["sequence"] = {"frames": cfg.frames, "window_px": cfg.window}
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    res["cpu_ms_128"] = _speed(net, data["rgb"][0], 128, cfg.speed_runs)
    res["cpu_ms_256"] = _speed(net, data["rgb"][0], 256, cfg.speed_runs)
    res["cpu_threads"] = torch.get_num_threads()
    res["cpu_load_avg"] = os.getloadavg()[0]  # timings are only comparable on a quiet machine
    res["_examples"] = {"rgb": data["rgb"][:8], "pred": pred[:8], "truth": data["vertex"][:8]}
    return res


def _weighted(items: list[tuple[float, int]]) -> float:
    if not items:
        return float("nan")
    v, n = np.array([a for a, _ in items]), np.array([b for _, b in items], float)
    return float((v * n).sum() / n.sum())


def _examples_png(results: list[dict[str, Any]], code: SurfaceCode, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ex0 = results[0]["_examples"]
    n = min(6, len(ex0["rgb"]))
    rows = 2 + len(results)
    fig, axes = plt.subplots(rows, n, figsize=(2.0 * n, 2.1 * rows), squeeze=False)

    def colour(v: np.ndarray) -> np.ndarray:
        img = np.full(v.shape + (3,), 255, np.uint8)
        img[v >= 0] = code.colours[v[v >= 0]]
        return img

    for j in range(n):
        axes[0, j].imshow(ex0["rgb"][j])
        axes[1, j].imshow(colour(ex0["truth"][j].astype(np.int64)))
        for r, res in enumerate(results):
            axes[2 + r, j].imshow(colour(res["_examples"]["pred"][j]))
    for r, label in enumerate(["image", "truth"] + [model_label(x["model"]) for x in results]):
        axes[r, 0].set_ylabel(label, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def run_surface_benchmark(models: list[str], cfg: SurfaceBenchConfig, out_dir: str | Path) -> list[dict[str, Any]]:
    """Evaluate image models side by side (None or an empty list: the shipped model); writes
    ``results.json`` and ``examples.png`` in ``out_dir``."""
    check_output_dir(out_dir)  # before the evaluation, not after it
    paths = [str(m) if m else str(DEFAULT_IMAGE_MODEL) for m in models] or [str(DEFAULT_IMAGE_MODEL)]
    for m in paths:
        if not Path(m).is_file():
            fix = "The package ships none: pass --model FILE" if m == str(DEFAULT_IMAGE_MODEL) else "Check the path"
            raise BodycorrError(f"image model {m}: no such file. {fix}, or train one with 'bodycorr train --config bodymap-small'.")
    results = [evaluate_surface_model(m, cfg) for m in paths]
    with output_run(out_dir, ("results.json", "examples.png")) as out:
        _examples_png(results, get_surface_code("position"), out / "examples.png")  # pictures: the smooth position rainbow
        clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
        write_json_atomic(out / "results.json", {"config": asdict(cfg), "results": clean})
    return clean


def model_label(path: str) -> str:
    """A short name for a model file: its stem, or ``run/model`` for a training run's ``model.pt``."""
    p = Path(path)
    return f"{p.parent.name}/{p.stem}" if p.stem in ("model", "last") else p.stem


def format_surface_table(results: list[dict[str, Any]]) -> str:
    """Terminal table of :func:`run_surface_benchmark` results."""
    cols = [("acc_5px_pct", "2D@5"), ("acc_10px_pct", "2D@10"), ("acc_20px_pct", "2D@20"), ("AP", "AP"), ("AP50", "AP50"),
            ("AP75", "AP75"), ("AR", "AR"), ("consistency_1_pct", "TC@1"), ("consistency_12_pct", "TC@12"),
            ("consistency_120_pct", "TC@120"), ("cpu_ms_128", "ms@128"), ("cpu_ms_256", "ms@256")]  # fmt: skip
    head = f"{'model':28s}" + "".join(f"{c[1]:>8s}" for c in cols)
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{model_label(r['model'])[:28]:28s}" + "".join(f"{r.get(k, float('nan')):8.1f}" for k, _ in cols))
    size = results[0]["size"] if results else 0
    lines.append(f"2D windows in pixels at {size}x{size}; AP/AR over GPS thresholds 0.50:0.05:0.95 (kappa 0.255); TC = temporal consistency (%).")
    return "\n".join(lines)
