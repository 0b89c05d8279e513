"""BodyMap's losses: per-channel colour classification, silhouette IoU, geodesic and consistency terms.

(Written by the lead engineer for the training run.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bodycorr.body.template import Template, get_template
from bodycorr.common.errors import BodycorrError

LEVELS = 256


def colour_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over pixels of the summed cross-entropies of the 3 colour channels.

    logits: (N, 3, 256); target: (N, 3) int64 levels; weight: (N,) per-pixel weights (normalised to mean 1).
    """
    if logits.ndim != 3 or logits.shape[1:] != (3, LEVELS) or target.shape != (logits.shape[0], 3):
        raise BodycorrError(f"colour loss: logits (N, 3, 256) and target (N, 3) expected, got {tuple(logits.shape)} and {tuple(target.shape)}.")
    if logits.shape[0] == 0:
        return logits.sum() * 0
    ce = F.cross_entropy(logits.reshape(-1, LEVELS), target.reshape(-1), reduction="none").view(-1, 3).sum(1)
    if weight is None:
        return ce.mean()
    return (ce * weight).sum() / weight.sum().clamp_min(1e-12)


def part_weights(template_vertex: torch.Tensor | np.ndarray, template: Template | None = None, hands_head: float = 2.0) -> torch.Tensor:
    """(N,) per-pixel loss weight: ``hands_head`` on head and hand vertices, 1 elsewhere."""
    template = template or get_template()
    names = template.part_names
    special = np.array([("head" in n) or ("hand" in n) for n in names])
    w = np.where(special[template.parts], hands_head, 1.0).astype(np.float32)
    v = torch.as_tensor(np.asarray(template_vertex), dtype=torch.long)
    return torch.from_numpy(w)[v]


def silhouette_iou_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft IoU per image, averaged. logits, target: (B, 1, H, W); target in {0, 1}."""
    if logits.shape != target.shape:
        raise BodycorrError(f"silhouette loss: shapes differ, {tuple(logits.shape)} vs {tuple(target.shape)}.")
    p = logits.sigmoid().flatten(1)
    t = target.float().flatten(1)
    inter = (p * t).sum(1)
    union = (p + t - p * t).sum(1)
    return (1 - (inter + 1) / (union + 1)).mean()


@dataclass(frozen=True, eq=False)
class GeodesicTable:
    """Geodesics from anchor vertices, for the differentiable geodesic loss.

    Attributes:
        anchors: (A,) template vertex ids (geodesic farthest-point samples).
        anchor_colours: (A, 3) int64 code levels of the anchors.
        dist: (A, Vt) float32 metres.
        pair_dist: callable-free access for arbitrary vertex pairs: (Vt, Vt) float16 table or None.
    """

    anchors: torch.Tensor
    anchor_colours: torch.Tensor
    dist: torch.Tensor
    table: np.ndarray | None = None

    @classmethod
    def build(cls, code, num_anchors: int = 1024, template: Template | None = None) -> "GeodesicTable":
        from bodycorr.geometry.geodesic import all_pairs_geodesics
        from bodycorr.geometry.sampling import farthest_point_sampling

        from bodycorr.common.cache import cached_arrays, content_hash

        template = template or get_template()
        table = all_pairs_geodesics(template.mesh)
        key = content_hash("surface-anchors", 1, num_anchors, template.mesh.vertices, template.mesh.faces)
        anchors = cached_arrays("surface-anchors", key, lambda: {"anchors": np.asarray(farthest_point_sampling(table, num_anchors, seed=0), dtype=np.int64)})["anchors"]
        return cls(
            anchors=torch.from_numpy(anchors),
            anchor_colours=torch.from_numpy(np.asarray(code.colours)[anchors].astype(np.int64)),
            dist=torch.from_numpy(table[anchors].astype(np.float32)),
            table=table,
        )

    def pairs(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Geodesic (metres) between template vertices a[i] and b[i]: (N,) float32."""
        if self.table is None:
            raise BodycorrError("geodesic table: built without the all-pairs table.")
        return torch.from_numpy(self.table[a.cpu().numpy(), b.cpu().numpy()].astype(np.float32)).to(a.device)


def anchor_log_probs(logits: torch.Tensor, table: GeodesicTable) -> torch.Tensor:
    """(N, A) log p(anchor): the per-channel log-softmax at each anchor's colour, summed, renormalised over anchors."""
    lsm = logits.log_softmax(-1)  # (N, 3, 256)
    col = table.anchor_colours.to(logits.device)  # (A, 3)
    lp = lsm[:, 0, col[:, 0]] + lsm[:, 1, col[:, 1]] + lsm[:, 2, col[:, 2]]
    return lp.log_softmax(-1)


def geodesic_loss(logits: torch.Tensor, true_vertex: torch.Tensor, table: GeodesicTable) -> torch.Tensor:
    """Differentiable expected geodesic distance (metres) between the predicted point and the truth.

    logits: (N, 3, 256); true_vertex: (N,). p(anchor) ∝ prod_c softmax_c(logits)[colour_c(anchor)]
    over the table's anchors; the loss is sum_a p(a) g(a, truth), averaged over pixels.
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0
    p = anchor_log_probs(logits, table).exp()
    d = table.dist.to(logits.device)[:, true_vertex].T  # (N, A)
    return (p * d).sum(1).mean()


def consistency_loss(expected_colour: torch.Tensor, true_vertex: torch.Tensor, table: GeodesicTable, num_pairs: int = 100,
                     sigma_geo: float | None = None, sigma_col: float = 3 * 255.0, generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """BodyMap Eq. 2: mean of log(1 + exp(D_g(p_r, p) / sigma_geo - |c_r - c|_1 / sigma_col)).

    expected_colour: (N, 3) predicted colours in [0, 255]; true_vertex: (N,) their true vertices.
    Each pixel is paired with ``num_pairs`` random pixels (at most) of the set. Pixels whose true
    points are far apart are pushed to differ in colour. ``sigma_geo`` defaults to the template's
    largest geodesic distance.
    """
    n = expected_colour.shape[0]
    if n < 2:
        return expected_colour.sum() * 0
    sg = float(sigma_geo if sigma_geo is not None else table.dist.max())
    k = min(num_pairs, n - 1)
    r = torch.randint(0, n, (n, k), generator=generator).to(expected_colour.device)
    i = torch.arange(n, device=expected_colour.device)[:, None].expand(n, k)
    g = table.pairs(true_vertex[i.reshape(-1)], true_vertex[r.reshape(-1)]).view(n, k)
    dc = (expected_colour[:, None, :] - expected_colour[r]).abs().sum(-1)
    return F.softplus(g / sg - dc / sigma_col).mean()
