"""The default refinement: Anny fitted onto each scan by what it is (a complete scan from its spectral map to the template, a partial one from its descriptors), and every pair mapped through the two fits."""

from __future__ import annotations

import time

import numpy as np
from scipy.spatial import cKDTree

from bodycorr.common.errors import BodycorrError
from bodycorr.matching.correspond import Correspondences, match
from bodycorr.matching.describe import Described
from bodycorr.matching.refiners.base import Prepared, Refined, RefineContext, correspondences_from_map


def is_complete(described: Described) -> bool:
    """Whether a scan covers the whole body: a closed-enough mesh
    (:data:`~bodycorr.matching.fit.COMPLETE_OPENNESS`) or a point cloud; depth views and open meshes are partial."""
    from bodycorr.matching.fit import COMPLETE_OPENNESS

    scan = described.scan
    if scan.kind == "depth":
        return False
    if scan.kind == "mesh" and scan.mesh is not None:
        return scan.mesh.openness() <= COMPLETE_OPENNESS
    return True


# The partial fit's scan-to-body pull. Pulling every candidate 10x harder (closest-point weight 0.5 -> 5)
# helped the tuning views (3.59 -> 3.29 cm: each view point's fitted template vertex against the truth,
# rest-template distance, ``bench/bench_partial_probe.py --views 16 --variants cp0.5,cp5``) but made a
# candidate with a limb on the wrong side sit as near the scan as the right one, and the demo's pair went
# 4.3 -> 18.0 cm (an energy guard, PoseFitConfig.select_energy_ratio, did not help there). So the
# candidates are chosen at weight 0.5 and the kept one alone is then tightened (weight 5, a tenth of the
# step size; PoseFitConfig.tighten_steps): on the same 16 views 100 steps gave 3.28 cm (worst view 7.69)
# and 200 steps 3.13 (worst 7.57), every view better than without (3.59, worst 7.97), for 3 and 6 s more
# per view (``--variants t100,t200``).
PARTIAL_TIGHTEN_STEPS = 200  # PoseFitConfig's own closest_point (0.5) and no energy guard

# The body fit of a complete scan from its spectral map to the template (AutoRefiner(complete="fit")).
COMPLETE_ITERATIONS = 400
COMPLETE_TIGHTEN_STEPS = 200

ROUTE = "template route"  # Refined.refiner of a pair that met on the template


class AutoRefiner:
    """Every pair meets on the template, through Anny fitted onto each scan.

    * A **complete** scan (a closed mesh, a cloud) is first mapped onto the template spectrally
      (:class:`~bodycorr.matching.refiners.spectral.SpectralRefiner` with the template as the other
      shape: flip-tested, drift-guarded), and Anny is fitted onto it from that map together with its
      descriptor matches (:func:`~bodycorr.matching.fit.fit_body_to_map`). ZoomOut between two people
      of different build keeps near-isometric maps that slide whole limbs (a thigh 10 cm off along
      itself); the fitted body has each person's own limb lengths and pose, and the map read through
      two fits has neither that slide nor ZoomOut's scatter. On the 16 + 8 tuning pairs outside the
      benchmark's (``bench/bench_template_probe.py --descriptor-weight 1 --methods direct,fit``):
      direct ZoomOut 3.20 / 2.55 cm inter / intra (worst 5.07 / 4.71), through the fits **2.50 / 1.83**
      (worst 5.11 / 2.76), flips 0.17 -> 0.03 %; every one of the 40 scans' own map to the template
      was tighter after the fit (e.g. 3.56 -> 0.75 cm, rest-template distance). From the spectral map
      alone an arm held against the torso, mapped onto the torso, stayed there (worst pair 11.7 cm):
      the descriptor matches (each may pull its vertex or the mirror) bring it back. ``complete=
      "spectral"`` keeps the earlier route (ZoomOut directly between two complete scans).
    * A **partial** scan (a depth view, an open mesh) has no whole-body eigenbasis: Anny is fitted onto
      it from its descriptor matches (pose and shape, mirror-aware:
      :class:`~bodycorr.matching.refiners.body.BodyRefiner` without the graph step).

    Each source point takes its closest place on its fit, that place on the target's fit, and the
    target point nearest it (:func:`~bodycorr.matching.fit.map_via_template`). Without a descriptor
    network (no template descriptors) two complete scans meet spectrally. What was chosen, and why, is
    in :attr:`~bodycorr.matching.refiners.base.Refined.info` (``auto``).
    """

    name = "auto"

    def __init__(self, partial_select: str = "residual", partial_model: str = "body", partial_iterations: int = 400,
                 complete: str = "fit"):  # fmt: skip
        """``complete``: how a complete scan meets the other side. ``fit`` (default): Anny fitted onto it
        from its spectral map to the template (:func:`~bodycorr.matching.fit.fit_body_to_map`, with its
        descriptor matches), and every pair mapped through the two fits
        (:func:`~bodycorr.matching.fit.map_via_template`, closest place on the surface); ``spectral``
        (the earlier default): two complete scans ZoomOut directly, one facing a partial scan through its
        spectral maps to and from the template.

        ``partial_select``: how the body fit of a partial scan keeps one of its candidates
        (:attr:`~bodycorr.matching.fit.FitConfig.select`). ``residual`` (scan-to-body distance, over
        2 rigid starts x 2 mirror penalties): on 12 + 8 tuning pairs outside the benchmark's
        (noisy view -> remeshed full mesh, ``bench/bench_partial_tune.py``) it gave 7.3 / 7.0 cm
        (worst pair 15.4 / 11.8), ``combined`` 7.9 / 7.0, ``energy`` (the body refiner's choice for
        views, from the fits' vertex error on 30 tuning views: 6.8 cm against 7.4) 10.1 / 10.2
        (worst 26.4 / 32.8); the correspondences, not the vertex error, are what this refiner delivers.

        ``partial_model``, ``partial_iterations``: what is fitted to a partial scan and for how many
        Adam steps. ``body`` (Anny's bones and phenotypes alone), 400 steps: the deformation graph
        after the body fit holds the scan closer (1.3 cm against 1.5-1.8 mean scan-to-body distance)
        but slides the template along it, and the points then take the wrong template vertices; 120
        steps stop short of the pose on bent and raised limbs. On the noisy views of 12 tuning pairs
        (``bench/bench_partial_tune.py --inter 8 --intra 4 --variants residual/body+graph/120,residual``),
        each view's points to the template, against the truth (rest-template distance): body+graph
        120 steps 4.30 cm (1.9 % over 20 cm), body 120 steps 4.48, body+graph 240 4.24, body 240 3.75,
        body 400 **3.52** (1.6 %); the pairs' errors on the target surface: inter 7.91 -> **6.55 cm**
        (worst pair 15.4 -> 14.5), intra 5.09 -> **4.63** (worst 7.5 -> 6.7)."""
        from bodycorr.body.articulated import PoseFitConfig
        from bodycorr.matching.refiners.body import BodyRefiner
        from bodycorr.matching.refiners.spectral import SpectralConfig, SpectralRefiner

        if complete not in ("fit", "spectral"):
            raise BodycorrError(f"auto refiner: complete={complete!r}; use 'fit' or 'spectral'.")
        self.complete = complete
        self.body = BodyRefiner(partial_model, partial_select, PoseFitConfig(iterations=partial_iterations, tighten_steps=PARTIAL_TIGHTEN_STEPS))
        self.complete_pose = PoseFitConfig(iterations=COMPLETE_ITERATIONS, select="residual", tighten_steps=COMPLETE_TIGHTEN_STEPS)
        self.spectral = SpectralRefiner()
        self.template_spectral = SpectralRefiner(SpectralConfig(max_points=14000))  # the template's own mesh Laplacian

    def _template(self, ctx: RefineContext) -> Prepared:
        """The template as a described shape with its eigenbasis (once per context)."""
        if "template_spectral" not in ctx._cache:
            from bodycorr.matching.inputs import ScanInput

            t, tdesc = ctx.template()
            d = Described(ScanInput("mesh", t.mesh.vertices, "template", mesh=t.mesh), t.mesh.vertices, tdesc,
                          np.ones(t.num_vertices, np.float32), np.array([0.0, 0.0, 1.0]), 0.0)  # fmt: skip
            ctx._cache["template_spectral"] = self.template_spectral.prepare(d, ctx)
        return ctx._cache["template_spectral"]

    def prepare(self, described: Described, ctx: RefineContext) -> Prepared:
        t0 = time.perf_counter()
        if is_complete(described):
            data = {"complete": True, "spectral": self.spectral.prepare(described, ctx), "to_template": None, "from_template": None, "fit": None}
        else:
            data = {"complete": False, "fit": self.body.prepare(described, ctx).data}
        p = Prepared(described, data, time.perf_counter() - t0)
        if data["complete"] and self.complete == "fit" and ctx.extractor is not None:
            self._fit(p, ctx)  # per scan, so that it is timed and cached with the scan
            p = Prepared(described, data, time.perf_counter() - t0)
        return p

    def _spectral_side(self, p: Prepared, direction: str, ctx: RefineContext) -> np.ndarray:
        """A complete scan's spectral map ``to_template`` ((N,) template vertex per point) or
        ``from_template`` ((Vt,) scan point per template vertex), computed once per scan."""
        if p.data[direction] is None:
            tpl, own = self._template(ctx), p.data["spectral"]
            sides = [(p.described, own.data), (tpl.described, tpl.data)]
            (a, sa), (b, sb) = sides if direction == "to_template" else sides[::-1]
            start = match(a.descriptors, b.descriptors).target
            # too few points for a basis (own.data None): the descriptor map
            p.data[direction] = start if own.data is None else self.spectral.map(a, sa, b, sb, start, ctx)[0]
        return p.data[direction]

    def _fit(self, p: Prepared, ctx: RefineContext):
        """The scan's Anny fit (:class:`~bodycorr.matching.fit.TemplateFit`): a partial scan's from
        :meth:`prepare`, a complete scan's from its spectral map to the template (once per scan)."""
        if p.data["fit"] is None:
            from bodycorr.matching.fit import fit_body_to_map

            t0 = time.perf_counter()
            t, tdesc = ctx.template()
            d = p.described
            u = self._spectral_side(p, "to_template", ctx)
            p.data["fit"] = fit_body_to_map(d.points, u, t, self.complete_pose, d.descriptors, d.consistency, tdesc)
            p.data["fit_seconds"] = time.perf_counter() - t0
        return p.data["fit"]

    def refine(self, source: Prepared, target: Prepared, initial: Correspondences, ctx: RefineContext) -> Refined:
        t0 = time.perf_counter()
        a, b = source.described, target.described
        if self.complete == "fit" and ctx.extractor is not None:  # the fits need the template's descriptors
            from bodycorr.matching.fit import map_via_template

            fa, fb = self._fit(source, ctx), self._fit(target, ctx)
            idx, _ = map_via_template(a.points, fa, b.points, fb, ctx.template()[0].mesh.faces)
            corr = correspondences_from_map(idx, a.points, b.points, a.descriptors, b.descriptors)
            info = {"auto": _route_info(source, target, "Anny fitted from its spectral map to the template and its descriptors"),
                    "fit_seconds": [round(float(p.data.get("fit_seconds", p.seconds)), 2) for p in (source, target)]}  # fmt: skip
            return Refined(corr, ROUTE, (fa, fb), info, time.perf_counter() - t0)
        if source.data["complete"] and target.data["complete"]:
            out = self.spectral.refine(source.data["spectral"], target.data["spectral"], initial, ctx)
            info = {"auto": {"chose": out.refiner, "why": "both scans complete"}, **out.info}
            return Refined(out.correspondences, out.refiner, None, info, time.perf_counter() - t0)
        # each source point's template vertex
        if source.data["complete"]:
            u = self._spectral_side(source, "to_template", ctx)
        else:
            u = cKDTree(source.data["fit"].vertices).query(a.points, workers=1)[1]
        # that template vertex on the target
        if target.data["complete"]:
            idx = self._spectral_side(target, "from_template", ctx)[u]
        else:
            idx = cKDTree(b.points).query(target.data["fit"].vertices[u], workers=1)[1]
        corr = correspondences_from_map(idx, a.points, b.points, a.descriptors, b.descriptors)
        info = {"auto": _route_info(source, target, "spectral map to the template", "Anny fit")}
        fits = tuple(p.data.get("fit") for p in (source, target))  # the partial side's Anny fit (None: a complete side)
        return Refined(corr, ROUTE, fits, info, time.perf_counter() - t0)


def _route_info(source: Prepared, target: Prepared, complete_how: str, partial_how: str = "Anny fitted from its descriptors") -> dict:
    """``Refined.info["auto"]`` of a pair that met on the template: why, and how each side got there."""
    partial = [side for side, p in (("source", source), ("target", target)) if not p.data["complete"]]
    how = {True: complete_how, False: partial_how}
    return {"chose": ROUTE, "why": f"a partial scan ({', '.join(partial)})" if partial else "both scans complete",
            "source": how[source.data["complete"]], "target": how[target.data["complete"]]}  # fmt: skip
