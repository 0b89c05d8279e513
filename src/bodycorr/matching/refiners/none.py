"""The plain map: nearest neighbours in descriptor space, unrefined."""

from __future__ import annotations

from bodycorr.matching.correspond import Correspondences
from bodycorr.matching.describe import Described
from bodycorr.matching.refiners.base import Prepared, Refined, RefineContext


class NoRefiner:
    """Keeps the plain map."""

    name = "none"

    def prepare(self, described: Described, ctx: RefineContext) -> Prepared:
        return Prepared(described)

    def refine(self, source: Prepared, target: Prepared, initial: Correspondences, ctx: RefineContext) -> Refined:
        return Refined(initial, self.name)
