"""Through the template: the body template registered onto both scans, each point mapped through the two fits."""

from __future__ import annotations

import time

import numpy as np

from bodycorr.matching.correspond import Correspondences
from bodycorr.matching.describe import Described
from bodycorr.matching.refiners.base import Prepared, Refined, RefineContext

FIT_SIGMA_M = 0.02  # confidence exp(-(d/σ)²) of a mapped point d metres from the template point it stands for


def depth_silhouette(scan):
    """The :class:`~bodycorr.geometry.silhouette.DepthSilhouette` of a depth-map scan (its frame and
    camera, for the body fit), else None."""
    if scan.kind != "depth" or scan.depth is None or scan.camera is None:
        return None
    from bodycorr.geometry.silhouette import DepthSilhouette

    return DepthSilhouette.from_depth(scan.depth, scan.camera)  # NaN and 0 both read as no data


class TemplateRefiner:
    """Registers the template onto each scan (:func:`~bodycorr.matching.fit.fit_template`, mirror-aware)
    and maps source -> source fit -> the same template vertex on the target fit -> nearest target point.

    ``model``: what deforms (:attr:`~bodycorr.matching.fit.FitConfig.model`): ``graph`` (this
    refiner's default), ``body`` or ``body+graph`` (:class:`~bodycorr.matching.refiners.body.BodyRefiner`).
    ``select``: how the body fit keeps one of its candidates (:attr:`~bodycorr.matching.fit.FitConfig.select`).
    ``pose``: the body fit's settings (:class:`~bodycorr.body.articulated.PoseFitConfig`; None: its defaults).
    """

    name = "template"

    def __init__(self, model: str = "graph", select: str = "auto", pose=None):
        self.model, self.select, self.pose = model, select, pose

    def _graph(self, ctx: RefineContext):
        key = "deformation_graph"
        if key not in ctx._cache:
            from bodycorr.geometry.nonrigid import build_deformation_graph
            from bodycorr.matching.fit import FitConfig

            t, _ = ctx.template()
            nr = FitConfig().nonrigid
            ctx._cache[key] = build_deformation_graph(t.mesh, nr.num_nodes, nr.node_sampling, nr.nearest_nodes, nr.seed)
        return ctx._cache[key]

    def _config(self):
        from bodycorr.matching.fit import FitConfig

        return FitConfig(model=self.model, select=self.select, **({} if self.pose is None else {"pose": self.pose}))

    def prepare(self, described: Described, ctx: RefineContext) -> Prepared:
        from bodycorr.matching.fit import fit_template

        t0 = time.perf_counter()
        t, tdesc = ctx.template()
        d = described
        fit = fit_template(d.points, d.descriptors, d.consistency, t.mesh, tdesc, t.symmetry,
                           target=d.scan.mesh if d.scan.kind == "mesh" else None, config=self._config(), body=t,
                           graph=None if self.model == "body" else self._graph(ctx), silhouette=depth_silhouette(d.scan))  # fmt: skip
        return Prepared(described, fit, time.perf_counter() - t0)

    def refine(self, source: Prepared, target: Prepared, initial: Correspondences, ctx: RefineContext) -> Refined:
        from bodycorr.matching.fit import map_via_template

        t0 = time.perf_counter()
        a, b = source.described, target.described
        fwd, d = map_via_template(a.points, source.data, b.points, target.data)
        back, _ = map_via_template(b.points, target.data, a.points, source.data)
        corr = Correspondences(target=fwd, distance=d.astype(np.float32), confidence=np.exp(-((d / FIT_SIGMA_M) ** 2)).astype(np.float32),
                               mutual=back[fwd] == np.arange(len(fwd)),
                               cycle=np.linalg.norm(a.points[back[fwd]] - a.points, axis=1).astype(np.float32))  # fmt: skip
        info = {"fit_seconds": [round(source.seconds, 2), round(target.seconds, 2)], "fit_model": self.model}
        return Refined(corr, self.name, fits=(source.data, target.data), info=info, seconds=time.perf_counter() - t0)
