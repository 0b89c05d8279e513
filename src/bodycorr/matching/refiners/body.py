"""Through Anny: the body's pose and shape fitted onto both scans (mirror-aware), then a deformation graph for the detail."""

from __future__ import annotations

from bodycorr.matching.refiners.template import TemplateRefiner


class BodyRefiner(TemplateRefiner):
    """:class:`~bodycorr.matching.refiners.template.TemplateRefiner` with Anny's bones and phenotypes
    fitted first (:mod:`bodycorr.body.articulated`); ``model="body"`` skips the graph step."""

    name = "body"

    def __init__(self, model: str = "body+graph", select: str = "auto", pose=None):
        super().__init__(model, select, pose)
