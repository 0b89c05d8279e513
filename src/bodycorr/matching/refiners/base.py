"""The refiner interface, its typed results and the registry of refiners."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from bodycorr.common.errors import BodycorrError
from bodycorr.matching.correspond import Correspondences
from bodycorr.matching.describe import Described


@dataclass(frozen=True, eq=False)
class RefineContext:
    """What refiners may need beyond the two scans.

    Attributes:
        extractor: the descriptor network the scans were described with (template descriptors,
            mirrored starts); None where a refiner does not need it.
        views: renders per mesh for the template's descriptors.
    """

    extractor: Any = None
    views: int = 48
    _cache: dict = field(default_factory=dict, repr=False)

    def template(self):
        """The body template and its (Vt, D) descriptors from :attr:`extractor` (computed once per context)."""
        if "template" not in self._cache:
            from bodycorr.body.template import get_template

            if self.extractor is None:
                raise BodycorrError("refine: this refiner needs the descriptor network (RefineContext.extractor).")
            t = get_template()
            self._cache["template"] = (t, self.extractor.mesh(t.mesh, self.views).descriptors)
        return self._cache["template"]


@dataclass(frozen=True, eq=False)
class Prepared:
    """A described scan plus what a refiner computed for it once (an eigenbasis, a fitted body).

    Attributes:
        described: the scan and its descriptors.
        data: the refiner's per-scan state (None for refiners that need none).
        seconds: time the refiner's per-scan step took.
    """

    described: Described
    data: Any = None
    seconds: float = 0.0


@dataclass(frozen=True, eq=False)
class Refined:
    """A refined map.

    Attributes:
        correspondences: source -> target (one target index per source point).
        refiner: the refiner that made it (``auto`` names the one it chose).
        fits: the template fitted onto (source, target) by template/body refiners (an entry None
            where that side was not fitted), else None.
        info: what the refiner decided, JSON-safe (kept start, flip test, guard), for the summary.
        seconds: time of the pair step.
    """

    correspondences: Correspondences
    refiner: str
    fits: tuple | None = None
    info: dict = field(default_factory=dict)
    seconds: float = 0.0


class Refiner(Protocol):
    """One refinement method: ``prepare`` each scan once, then ``refine`` pairs.

    ``refine(prepare(a), prepare(b), initial, ctx)`` gets the plain map ``initial`` (a -> b
    :class:`~bodycorr.matching.correspond.Correspondences`) and returns a :class:`Refined`.
    """

    name: str

    def prepare(self, described: Described, ctx: RefineContext) -> Prepared: ...

    def refine(self, source: Prepared, target: Prepared, initial: Correspondences, ctx: RefineContext) -> Refined: ...


# name -> "module:factory" (imported on first use: a refiner's dependencies load only when it runs)
REGISTRY: dict[str, str | Callable[..., Refiner]] = {
    "none": "bodycorr.matching.refiners.none:NoRefiner",
    "spectral": "bodycorr.matching.refiners.spectral:SpectralRefiner",
    "template": "bodycorr.matching.refiners.template:TemplateRefiner",
    "body": "bodycorr.matching.refiners.body:BodyRefiner",
    "register": "bodycorr.matching.refiners.register:RegisterRefiner",
    "auto": "bodycorr.matching.refiners.auto:AutoRefiner",
}


def register_refiner(name: str, factory: str | Callable[..., Refiner]) -> None:
    """Add a refiner: ``factory`` is a callable or a ``"module:attribute"`` string."""
    REGISTRY[name] = factory


def list_refiners() -> list[str]:
    return list(REGISTRY)


def get_refiner(name: str, **options: Any) -> Refiner:
    """The refiner registered as ``name`` (``options`` go to its constructor)."""
    if name not in REGISTRY:
        raise BodycorrError(f"refine: unknown refiner {name!r}; use one of {', '.join(REGISTRY)}.")
    factory = REGISTRY[name]
    if isinstance(factory, str):
        mod, attr = factory.split(":")
        factory = getattr(importlib.import_module(mod), attr)
    return factory(**options)


def correspondences_from_map(target: np.ndarray, source_points: np.ndarray, target_points: np.ndarray,
                             source_descriptors: np.ndarray, target_descriptors: np.ndarray) -> Correspondences:
    """:class:`Correspondences` for a map ``target`` (N,) from a refiner: descriptor distance of each
    match, its round trip through the map's inverse (each target point's nearest mapped source
    point), mutual flags, and the plain map's confidence (:func:`~bodycorr.matching.correspond.confidence`)."""
    from scipy.spatial import cKDTree

    from bodycorr.matching.correspond import confidence

    t = np.asarray(target, dtype=np.int64)
    sp, tp = np.asarray(source_points, dtype=np.float64), np.asarray(target_points, dtype=np.float64)
    d = np.linalg.norm(np.asarray(source_descriptors, np.float32) - np.asarray(target_descriptors, np.float32)[t], axis=1)
    # the inverse: each target point's source is the source point whose match lies nearest it
    back = cKDTree(tp[t]).query(tp, workers=1)[1]
    cyc = np.linalg.norm(sp[back[t]] - sp, axis=1)
    return Correspondences(target=t, distance=d.astype(np.float32), confidence=confidence(d, cyc),
                           mutual=back[t] == np.arange(len(t)), cycle=cyc.astype(np.float32))  # fmt: skip
