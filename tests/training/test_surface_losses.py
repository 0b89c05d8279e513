"""BodyMap losses against slow, obvious references: colour classification, part weights, silhouette IoU, geodesic, consistency."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bodycorr.body.template import PART_NAMES
from bodycorr.common.errors import BodycorrError
from bodycorr.training.surface_losses import (
    GeodesicTable,
    colour_cross_entropy,
    consistency_loss,
    geodesic_loss,
    part_weights,
    silhouette_iou_loss,
)


def random_logits(n: int, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    return scale * torch.randn(n, 3, 256, generator=torch.Generator().manual_seed(seed))


def toy_table(num_vertices: int = 40, num_anchors: int = 12, seed: int = 0) -> GeodesicTable:
    """Vertices on a line (geodesic = |i - j| cm), anchors every few vertices, random anchor colours."""
    pos = np.arange(num_vertices) * 0.01
    table = np.abs(pos[:, None] - pos[None]).astype(np.float16)
    anchors = np.linspace(0, num_vertices - 1, num_anchors).round().astype(np.int64)
    colours = np.random.default_rng(seed).integers(0, 256, (num_anchors, 3))
    return GeodesicTable(
        anchors=torch.from_numpy(anchors),
        anchor_colours=torch.from_numpy(colours),
        dist=torch.from_numpy(table[anchors].astype(np.float32)),
        table=table,
    )


# ------------------------------------------------------------------------------------ colour classification


def test_colour_cross_entropy_matches_per_channel_loop():
    logits = random_logits(7)
    target = torch.randint(0, 256, (7, 3), generator=torch.Generator().manual_seed(1))
    weight = torch.tensor([1.0, 2.0, 0.5, 0.0, 3.0, 1.0, 1.0])
    per_pixel = []
    for i in range(7):
        per_pixel.append(sum(F.cross_entropy(logits[i, c][None], target[i, c][None]) for c in range(3)))
    per_pixel = torch.stack(per_pixel)
    torch.testing.assert_close(colour_cross_entropy(logits, target), per_pixel.mean())
    torch.testing.assert_close(colour_cross_entropy(logits, target, weight), (per_pixel * weight).sum() / weight.sum())
    # uniform scores: 3 channels x log(256); a confident right answer: ~0
    assert colour_cross_entropy(torch.zeros(4, 3, 256), target[:4]).item() == pytest.approx(3 * math.log(256), rel=1e-5)
    sure = torch.full((4, 3, 256), -30.0).scatter(2, target[:4, :, None], 30.0)
    assert colour_cross_entropy(sure, target[:4]).item() < 1e-6


def test_colour_weights_act_on_gradients():
    logits = random_logits(5).requires_grad_(True)
    target = torch.zeros(5, 3, dtype=torch.long)
    weight = torch.tensor([0.0, 1.0, 1.0, 1.0, 4.0])
    colour_cross_entropy(logits, target, weight).backward()
    g = logits.grad.abs().sum(dim=(1, 2))
    assert g[0] == 0 and (g[1:] > 0).all()  # a zero-weight pixel does not train
    # the per-pixel gradient scales with the weight (same logits, 4x the weight)
    logits2 = logits.detach().clone()
    logits2[4] = logits2[1]
    logits2.requires_grad_(True)
    colour_cross_entropy(logits2, target, weight).backward()
    torch.testing.assert_close(logits2.grad[4], 4 * logits2.grad[1])
    with pytest.raises(BodycorrError, match="logits"):
        colour_cross_entropy(logits.detach()[:, :2], target)
    with pytest.raises(BodycorrError, match="target"):
        colour_cross_entropy(logits.detach(), target[:3])
    empty = colour_cross_entropy(torch.zeros(0, 3, 256, requires_grad=True), torch.zeros(0, 3, dtype=torch.long))
    assert empty.item() == 0.0 and empty.requires_grad


def test_part_weights_favour_hands_and_head():
    parts = np.arange(len(PART_NAMES))
    fake = SimpleNamespace(part_names=PART_NAMES, parts=parts)  # vertex i belongs to part i
    w = part_weights(torch.arange(len(parts)), fake, hands_head=3.0)
    expected = [3.0 if n in ("head", "hand.L", "hand.R") else 1.0 for n in PART_NAMES]
    assert w.tolist() == expected
    # indexing by arbitrary (repeated) vertices, numpy input too
    v = np.array([6, 1, 6, 0])
    assert part_weights(v, fake, hands_head=2.0).tolist() == [2.0, 1.0, 2.0, 2.0]


# ------------------------------------------------------------------------------------ silhouette


def test_silhouette_iou_loss_values():
    target = torch.zeros(2, 1, 8, 8)
    target[0, :, 2:6, 2:6] = 1
    target[1, :, :4] = 1
    perfect = (target * 2 - 1) * 50  # logits: sigmoid is exactly the target
    assert silhouette_iou_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    empty = torch.full_like(target, -50.0)  # predicts no person at all
    # IoU 0, up to the 1-pixel smoothing: 1 - 1 / (|target| + 1) per image
    assert silhouette_iou_loss(empty, target).item() == pytest.approx(1 - (1 / 17 + 1 / 33) / 2, abs=1e-6)
    assert silhouette_iou_loss(empty, torch.zeros_like(target)).item() == pytest.approx(0.0, abs=1e-6)
    # reference: 1 - soft IoU per image, averaged (smoothing of 1 pixel in the implementation)
    logits = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    p = logits.sigmoid()
    ref = []
    for b in range(2):
        inter = (p[b] * target[b]).sum()
        union = p[b].sum() + target[b].sum() - inter
        ref.append(1 - (inter + 1) / (union + 1))
    torch.testing.assert_close(silhouette_iou_loss(logits, target), torch.stack(ref).mean())
    # gradients push foreground logits up and background logits down
    lg = logits.clone().requires_grad_(True)
    silhouette_iou_loss(lg, target).backward()
    assert (lg.grad[target.bool()] < 0).all() and (lg.grad[~target.bool()] > 0).all()
    with pytest.raises(BodycorrError, match="shape"):
        silhouette_iou_loss(logits, target[:, :, :4])


# ------------------------------------------------------------------------------------ geodesic


def test_geodesic_loss_matches_loop_over_anchors():
    table = toy_table()
    logits = random_logits(6, seed=3).requires_grad_(True)
    truth = torch.tensor([0, 5, 17, 39, 22, 22])
    got = geodesic_loss(logits, truth, table)
    lsm = logits.detach().log_softmax(-1)
    total = 0.0
    for i in range(6):
        scores = []
        for a in range(len(table.anchors)):
            col = table.anchor_colours[a]
            scores.append(math.exp(sum(lsm[i, c, col[c]].item() for c in range(3))))
        z = sum(scores)
        total += sum(s / z * float(table.table[table.anchors[a], truth[i]]) for a, s in enumerate(scores))
    assert got.item() == pytest.approx(total / 6, rel=1e-4)
    got.backward()
    assert logits.grad.abs().sum() > 0 and torch.isfinite(logits.grad).all()


def test_geodesic_loss_is_the_distance_of_a_confident_prediction():
    table = toy_table()
    truth = torch.tensor([int(table.anchors[0]), int(table.anchors[-1])])

    def confident(anchor_ids):
        lg = torch.full((len(anchor_ids), 3, 256), -40.0)
        for i, a in enumerate(anchor_ids):
            lg[i, torch.arange(3), table.anchor_colours[a]] = 40.0
        return lg

    assert geodesic_loss(confident([0, len(table.anchors) - 1]), truth, table).item() == pytest.approx(0.0, abs=1e-4)
    far = geodesic_loss(confident([len(table.anchors) - 1, 0]), truth, table).item()
    assert far == pytest.approx(0.39, abs=1e-3)  # 39 vertices x 1 cm apart
    # a step on the loss moves probability towards the right anchor
    lg = torch.zeros(1, 3, 256, requires_grad=True)
    opt = torch.optim.SGD([lg], lr=50.0)
    before = geodesic_loss(lg, truth[:1], table).item()
    for _ in range(20):
        opt.zero_grad()
        geodesic_loss(lg, truth[:1], table).backward()
        opt.step()
    assert geodesic_loss(lg, truth[:1], table).item() < 0.5 * before


# ------------------------------------------------------------------------------------ consistency


def test_consistency_loss_matches_reference_formula():
    table = toy_table()
    n, k = 9, 4
    colour = (255 * torch.rand(n, 3, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    truth = torch.randint(0, 40, (n,), generator=torch.Generator().manual_seed(1))
    sg, sc = 0.5, 100.0
    got = consistency_loss(colour, truth, table, num_pairs=k, sigma_geo=sg, sigma_col=sc, generator=torch.Generator().manual_seed(7))
    partner = torch.randint(0, n, (n, k), generator=torch.Generator().manual_seed(7))  # the same draws
    col = colour.detach()
    terms = []
    for i in range(n):
        for j in partner[i].tolist():
            dg = float(table.table[truth[i], truth[j]])
            dc = float((col[i] - col[j]).abs().sum())
            terms.append(math.log1p(math.exp(dg / sg - dc / sc)))
    assert got.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    got.backward()
    assert colour.grad.abs().sum() > 0
    # same generator seed -> same value; the default sigma_geo is the largest geodesic of the table
    again = consistency_loss(colour.detach(), truth, table, num_pairs=k, sigma_geo=sg, sigma_col=sc, generator=torch.Generator().manual_seed(7))
    assert again.item() == got.item()
    dflt = consistency_loss(colour.detach(), truth, table, num_pairs=k, sigma_col=sc, generator=torch.Generator().manual_seed(7))
    explicit = consistency_loss(colour.detach(), truth, table, num_pairs=k, sigma_geo=0.39, sigma_col=sc, generator=torch.Generator().manual_seed(7))
    assert dflt.item() == pytest.approx(explicit.item(), rel=1e-3)


def test_consistency_loss_prefers_far_points_in_different_colours():
    table = toy_table()
    truth = torch.tensor([0, 39] * 8)  # two points 39 cm apart
    same = torch.full((16, 3), 128.0)
    apart = same.clone()
    apart[1::2] += 60
    kw = dict(num_pairs=8, sigma_geo=0.39, sigma_col=3 * 255.0)
    l_same = consistency_loss(same, truth, table, generator=torch.Generator().manual_seed(0), **kw)
    l_apart = consistency_loss(apart, truth, table, generator=torch.Generator().manual_seed(0), **kw)
    assert l_apart < l_same
    one = consistency_loss(same[:1], truth[:1], table)
    assert one.item() == 0.0


# ------------------------------------------------------------------------------------ the template table


@pytest.mark.slow
def test_geodesic_table_on_the_template(template):
    from bodycorr.body.surface_code import get_surface_code
    from bodycorr.geometry.geodesic import all_pairs_geodesics

    code = get_surface_code("position")
    table = GeodesicTable.build(code, num_anchors=64)
    geo = all_pairs_geodesics(template.mesh, progress=False)
    a = table.anchors.numpy()
    assert len(np.unique(a)) == 64 and a.max() < template.num_vertices
    assert np.array_equal(table.anchor_colours.numpy(), code.colours[a].astype(np.int64))
    np.testing.assert_array_equal(table.dist.numpy(), geo[a].astype(np.float32))
    # farthest-point anchors cover the body: every vertex within 25 cm of an anchor
    assert table.dist.min(0).values.max() < 0.25
    v = torch.tensor([0, 100, 5000])
    torch.testing.assert_close(table.pairs(v, v.flip(0)), torch.from_numpy(geo[v.numpy(), v.flip(0).numpy()].astype(np.float32)))
