"""The dense objective (every pixel against all template sample points) and CPU-budgeted runs."""

import dataclasses
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from bodycorr.common.errors import BodycorrError
from bodycorr.training.config import load_config
from bodycorr.training.loop import dense_loss, process_tree_cpu_s, train


def _dense_loss_reference(logits: np.ndarray, geodesic: np.ndarray, sigma: float) -> float:
    """Slow, obvious: per pixel, normalised Gaussian target weights, then cross-entropy."""
    total = 0.0
    for lg, g in zip(logits, geodesic):
        w = np.exp(-(g.astype(np.float64) ** 2) / (2 * sigma**2))
        w /= w.sum()
        logp = lg - np.log(np.exp(lg - lg.max()).sum()) - lg.max()
        total += -(w * logp).sum()
    return total / len(logits)


def test_dense_loss_matches_reference_and_prefers_the_true_point():
    rng = np.random.default_rng(0)
    geo = rng.uniform(0, 1.0, (5, 40)).astype(np.float32)
    geo[np.arange(5), np.arange(5)] = 0.0  # pixel i's true vertex is point i
    logits = rng.normal(size=(5, 40)).astype(np.float32) * 3
    got = float(dense_loss(torch.from_numpy(logits), torch.from_numpy(geo), 0.05))
    assert got == pytest.approx(_dense_loss_reference(logits, geo, 0.05), rel=1e-5)
    # scores peaked on the true point beat scores peaked on the farthest one
    right = np.full((5, 40), -5.0, np.float32)
    right[np.arange(5), np.arange(5)] = 5.0
    wrong = np.full((5, 40), -5.0, np.float32)
    wrong[np.arange(5), geo.argmax(1)] = 5.0
    assert float(dense_loss(torch.from_numpy(right), torch.from_numpy(geo), 0.05)) < float(
        dense_loss(torch.from_numpy(wrong), torch.from_numpy(geo), 0.05)
    )
    with pytest.raises(BodycorrError, match="must match"):
        dense_loss(torch.zeros(5, 40), torch.zeros(5, 41), 0.05)


def test_process_tree_cpu_counts_a_live_child():
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<1.5: pass\ntime.sleep(30)"])
    try:
        before = process_tree_cpu_s()
        time.sleep(1.6)
        after = process_tree_cpu_s()
        assert after - before > 0.5  # the child's busy second counts while it still runs
    finally:
        child.kill()
        child.wait()


@pytest.fixture
def tiny_dense():
    cfg = load_config("depth-tiny").replace(val_every=0, seg_weight=0.0, dense_weight=1.0, keypoint_weight=0.0, parts_weight=0.0)
    return cfg.replace(targets=dataclasses.replace(cfg.targets, num_segmentations=0, parts_task=False, dense_points=24, dense_sigma=0.05))


@pytest.mark.slow
def test_dense_targets_are_farthest_points_with_their_distances(tiny_dense):
    from bodycorr.body.template import get_template
    from bodycorr.training.targets import build_targets

    t = get_template()
    targets = build_targets(t, tiny_dense.targets)
    assert targets.num_tasks == 0 and targets.num_dense == 24
    assert len(np.unique(targets.dense_vertices)) == 24
    g = targets.dense_geodesic.astype(np.float32)
    assert g.shape == (t.num_vertices, 24) and np.isfinite(g).all()
    assert np.allclose(g[targets.dense_vertices, np.arange(24)], 0.0)
    # farthest points: no two closer than a fair share of the body (24 points over ~1.8 m^2)
    sub = g[targets.dense_vertices]
    assert sub[~np.eye(24, dtype=bool)].min() > 0.08


@pytest.mark.slow
def test_dense_only_loss_decreases_on_a_fixed_batch(tiny_dense):
    from bodycorr.body.template import get_template
    from bodycorr.data.datasets import stack_views
    from bodycorr.data.views import ViewGenerator
    from bodycorr.training.loop import build_model, losses
    from bodycorr.training.targets import build_targets

    targets = build_targets(get_template(), tiny_dense.targets)
    torch.manual_seed(0)
    model = build_model(tiny_dense, targets)
    assert model.heads.dense is not None and model.heads.weight.shape[0] == 0
    batch = stack_views(ViewGenerator(tiny_dense.view, "train", 0).views_of_body(0))
    seg, kp = torch.from_numpy(targets.segmentations), torch.from_numpy(targets.keypoints)
    geo = torch.from_numpy(targets.dense_geodesic)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        ls = losses(model, model.heads, batch, seg, kp, tiny_dense, torch.Generator().manual_seed(0), dense_geo=geo)
        assert set(ls) == {"dense", "total"}
        opt.zero_grad()
        ls["total"].backward()
        opt.step()
        first = first or float(ls["total"].detach())
    assert float(ls["total"].detach()) < 0.9 * first


@pytest.mark.slow
def test_cpu_budget_stops_keeps_snapshots_and_resumes(tiny_dense, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_dense.replace(steps=100_000, max_cpu_s=3.0, snapshot_cpu_s=1.0, ckpt_every=1000)
    rec = train(cfg, out, progress=False)
    assert 1 <= rec["step"] < 100_000 and rec["cpu_s"] >= 3.0
    snaps = sorted((out / "snapshots").glob("cpu_*.pt"))
    assert len(snaps) >= 3
    secs = [int(p.stem.split("_")[1]) for p in snaps]
    assert secs == sorted(secs) and secs[-1] >= 3
    # a longer budget resumes the same run: the CPU count carries on from the checkpoint
    rec2 = train(cfg.replace(max_cpu_s=4.5), out, progress=False)
    assert rec2["step"] > rec["step"] and rec2["cpu_s"] >= 4.5
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    cpu = [r["cpu_s"] for r in log]
    assert cpu == sorted(cpu)
    assert int(sorted((out / "snapshots").glob("cpu_*.pt"))[-1].stem.split("_")[1]) >= 4


def test_a_config_without_any_loss_is_one_line(tmp_path):
    cfg = load_config("depth-tiny")
    cfg = cfg.replace(seg_weight=0.0, keypoint_weight=0.0, parts_weight=0.0, targets=dataclasses.replace(cfg.targets, dense_points=0))
    with pytest.raises(BodycorrError, match="no loss is active"):
        train(cfg, tmp_path / "run", progress=False)
