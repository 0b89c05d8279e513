"""Up-axis estimation: height bands, the coverage score and the choice among candidate axes."""

import numpy as np
import pytest
import torch
from scipy.spatial import ConvexHull

from bodycorr.geometry.mesh import Mesh, PointCloud
from bodycorr.matching.extract import DescriptorExtractor, VertexDescriptors
from bodycorr.matching.inputs import ScanInput
from bodycorr.matching.up import (
    BANDS,
    coverage,
    estimate_up,
    height_bands,
    score_up_candidates,
    template_reference,
    vertex_areas,
)
from bodycorr.models.registry import create_model


def _ellipsoid(n=24, radii=(0.3, 0.2, 0.9)):
    """A closed, outward-facing triangulated ellipsoid, long along Z (a stand-in body)."""
    u, v = np.meshgrid(np.linspace(0, np.pi, n)[1:-1], np.linspace(0, 2 * np.pi, 2 * n, endpoint=False), indexing="ij")
    pts = np.stack([np.sin(u) * np.cos(v), np.sin(u) * np.sin(v), np.cos(u)], -1).reshape(-1, 3)
    pts = np.concatenate([pts, [[0, 0, 1], [0, 0, -1]]])
    f = ConvexHull(pts).simplices.copy()
    c = pts[f].mean(1)
    nrm = np.cross(pts[f[:, 1]] - pts[f[:, 0]], pts[f[:, 2]] - pts[f[:, 0]])
    flip = (nrm * c).sum(1) < 0
    f[flip] = f[flip][:, ::-1]
    return Mesh(pts * radii, f)


def _rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


class HeightNetwork:
    """Stands in for a descriptor network trained on upright views: rendered around an axis within
    30° of the true up it describes every point by its height (so matches spread over the template);
    around any other axis, everything looks alike (matches pile up at one height)."""

    def __init__(self, true_up):
        self.true_up = np.asarray(true_up, float)

    def _describe(self, points, up):
        up = up / np.linalg.norm(up)
        h = (points - points.mean(0)) @ up
        h = (h - h.min()) / np.ptp(h)
        if up @ self.true_up < np.cos(np.radians(30)):
            h = np.full_like(h, 0.5)
        k = np.arange(8)
        d = np.concatenate([np.cos(np.pi * k * h[:, None]), np.sin(np.pi * k * h[:, None])], 1)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        n = len(points)
        return VertexDescriptors(d.astype(np.float32), np.ones(n, np.int64), np.ones(n, np.float32))

    def mesh(self, mesh, num_views=8, up=np.array([0.0, 0.0, 1.0])):
        return self._describe(mesh.vertices, up)

    def point_cloud(self, cloud, num_views=8, up=np.array([0.0, 0.0, 1.0])):
        return self._describe(cloud.points, up)


def test_height_bands_split_the_area_evenly():
    m = _ellipsoid()
    band, share = height_bands(m)
    assert share.shape == (BANDS,) and np.allclose(share, 1 / BANDS, atol=0.02)
    z = m.vertices[:, 2]
    assert all(z[band == b].max() <= z[band == b + 1].min() + 1e-9 for b in range(BANDS - 1))  # bands go up


def test_coverage_of_a_perfect_and_a_collapsed_map():
    m = _ellipsoid()
    band, share = height_bands(m)
    ref = template_reference(HeightNetwork([0, 0, 1]), template=m)
    assert np.array_equal(ref.band, band)
    w = vertex_areas(m)
    assert coverage(np.arange(m.num_vertices), w, ref) == pytest.approx(1.0)
    assert coverage(np.zeros(m.num_vertices, int), w, ref) == pytest.approx(share[band[0]])


@pytest.mark.parametrize("kind", ["mesh", "points"])
def test_estimate_up_finds_a_rotated_body(kind):
    template = _ellipsoid()
    for seed in range(4):
        R = _rotation(np.random.default_rng(seed))
        body = Mesh(_ellipsoid(radii=(0.25, 0.2, 0.8)).vertices @ R.T + [0.5, -1.0, 2.0], template.faces)
        true_up = R @ [0, 0, 1.0]
        net = HeightNetwork(true_up)
        ref = template_reference(HeightNetwork([0, 0, 1.0]), template=template)
        if kind == "mesh":
            scan = ScanInput(kind="mesh", points=body.vertices, name="body", mesh=body)
        else:
            scan = ScanInput(kind="points", points=body.vertices, name="body", cloud=PointCloud(body.vertices))
        cands = score_up_candidates(scan, net, reference=ref)
        assert len(cands) == 7
        up = estimate_up(scan, net, reference=ref)
        assert up @ true_up > 0.99
        best = max(cands, key=lambda c: c.score)
        assert best.coverage > 0.6 and sorted(c.coverage for c in cands)[-2] < 0.2


def test_estimate_up_runs_with_a_real_network():
    torch.manual_seed(0)
    ex = DescriptorExtractor(create_model("unet", base_width=4, max_width=16, num_levels=3), size=32)
    m = _ellipsoid(n=16)
    ref = template_reference(ex, template=m)
    assert ref.descriptors.shape == (m.num_vertices, 16)
    up = estimate_up(ScanInput(kind="mesh", points=m.vertices, name="e", mesh=m), ex, views=4, reference=ref)
    assert up.shape == (3,) and abs(np.linalg.norm(up) - 1) < 1e-6
