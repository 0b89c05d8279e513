"""Is this a person? Cheap, explainable evidence that a described scan, or the silhouette found in an image, shows a human body."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bodycorr.common.errors import BodycorrError
from bodycorr.matching.describe import Described

# Measured with the shipped model (depth-unet), 16 views (48 is the default; 4 views in brackets
# where they differ). Statistics: L = largest PCA extent (m), aspect = 2nd / 1st PCA extent,
# dmed = median distance of a point's descriptor to its nearest template descriptor, jump = median
# over points of the mean rest-template distance (m) between the template vertices matched by a
# point and by its 8 nearest scan neighbours (a body maps neighbours onto neighbours); excess =
# median of (jump - the mean distance to those neighbours on the scan), which does not grow on
# sparse scans the way the jump does.
#
#   shape                          L        aspect     dmed                 jump                  excess (4 views)
#   person meshes (3 poses)        1.5-2.2  0.32-0.85  0.16-0.25 (0.20-0.23) 0.025-0.030 (0.017-0.032) 0.022
#   person, remeshed               2.2      0.34       0.14 (0.30)          0.024 (0.027)
#   person, noisy depth views (3)  1.5-2.2  0.42-0.83  0.21-0.30            0.009-0.013
#   person, cloud of 1/3 vertices  1.9      0.48       0.38 (0.42)          0.042 (0.066)
#   person, clouds of 334-1335 pts                                          0.05-0.11 (0.09-0.12) 0.006-0.059 (0.043-0.070)
#   sphere r 0.5 m                 1.0      1.00       0.54 (0.56)          0.064 (0.16-0.24)     (0.095-0.132)
#   sphere r 0.1 m                 0.2      1.00       0.53 (0.58)          0.058 (0.14)
#   cube 0.5 m                     0.8      1.01       0.58 (0.60)          0.13  (0.16)          (0.101)
#   box 0.3 x 0.4 x 1.8 m          1.8      0.22       0.55                 0.059 (0.11)
#   torus R 0.4, r 0.12 m          1.0      1.00       0.54 (0.55)          0.088 (0.21)
#   four-legged animal             1.3      0.76       0.45 (0.46)          0.094 (0.12)          (0.071)
#   ellipsoid 0.3 x 0.2 x 0.9 m    1.8      0.33       0.48 (0.45)          0.089 (0.10)
#   flat triangle, 1 m, 231 vts    1.4      0.50       (0.54)               (0.16)
#
# Template-part coverage (parts holding >= 1 % of the points' nearest template vertices) was 11-14
# of 14 for people but also 7-14 for the shapes (12 for a sphere, 14 for the animal at 4 views):
# reported, not scored. The descriptor distance separates best (people <= 0.38 at 16 views, shapes
# >= 0.445) and decides; the aspect and the neighbourhood excess only weigh in (each factor has a
# floor of 0.3, as a curled-up person or a sparse cloud can look bad on them). Few views describe
# point clouds worse (a person cloud at 4 views reaches dmed 0.42): use the default 48 for clouds.
# The score is the product of the factors; every shape above scored < 0.1, every person mesh and
# depth view > 0.9.

MIN_POINTS = 100  #: fewer points than this: no scan of a person
SIZE_M = (0.3, 2.5)  #: a person's largest extent, metres (soft edges 3 cm below, 10 cm above)
ASPECT = (0.95, 0.015)  #: 2nd / 1st extent above ~0.95 (a ball, a cube, a disc): evidence against
DESCRIPTOR = (0.42, 0.02)  #: median distance to the nearest template descriptor: threshold, softness
EXCESS_M = (0.075, 0.01)  #: median neighbour jump on the template beyond the scan's spacing, metres: threshold, softness
FLOOR = 0.3  #: the aspect or the excess alone never rules a scan out below this factor
PERSON_THRESHOLD = 0.5  #: score at or above this: a person


@dataclass(frozen=True)
class Plausibility:
    """How much a scan looks like a person.

    Attributes:
        score: in [0, 1], the product of the evidence factors in :attr:`factors`.
        is_person: ``score >= PERSON_THRESHOLD``.
        reasons: one short phrase per factor that spoke against a person (empty for a person).
        points: N, the scan's points.
        extents_m: (3,) PCA extents, largest first, metres.
        aspect: 2nd / 1st extent.
        descriptor_distance: median distance from each point's descriptor to its nearest template descriptor.
        template_jump_m: median rest-template distance between the matches of spatial neighbours.
        excess_m: median of that distance less the neighbours' own distance on the scan.
        parts_covered: template body parts holding >= 1 % of the points' nearest template vertices.
        factors: {"points", "size", "aspect", "descriptor", "excess"}: each in [0, 1].
    """

    score: float
    is_person: bool
    reasons: tuple[str, ...]
    points: int
    extents_m: tuple[float, float, float]
    aspect: float
    descriptor_distance: float
    template_jump_m: float
    excess_m: float
    parts_covered: int
    factors: dict

    def to_json(self) -> dict:
        return {"score": round(self.score, 4), "is_person": self.is_person, "reasons": list(self.reasons), "points": self.points,
                "extents_m": [round(e, 4) for e in self.extents_m], "aspect": round(self.aspect, 4),
                "descriptor_distance": _finite(self.descriptor_distance), "template_jump_m": _finite(self.template_jump_m),
                "excess_m": _finite(self.excess_m),
                "parts_covered": self.parts_covered, "factors": {k: round(v, 4) for k, v in self.factors.items()}}  # fmt: skip

    def message(self, name: str) -> str:
        """One line: ``<name> does not look like a person (score 0.12: reasons)``."""
        return f"{name} does not look like a person (score {self.score:.2f}: {'; '.join(self.reasons) or 'weak evidence'})"

    @property
    def confidence_factor(self) -> float:
        """What a map's confidences are multiplied by: 1 for a person, ``score / PERSON_THRESHOLD`` below."""
        return min(1.0, self.score / PERSON_THRESHOLD)


def _finite(x: float) -> float | None:
    return round(float(x), 4) if np.isfinite(x) else None


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-np.clip(x, -50, 50))))


def person_plausibility(described: Described, extractor=None) -> Plausibility:
    """Score how much ``described`` (its (N, 3) points and (N, D) descriptors) looks like a person.

    ``extractor``: the network that described it, for the template's descriptors
    (:func:`bodycorr.matching.up.template_reference`, cached per network); None = the shipped model.
    """
    from scipy.spatial import cKDTree

    from bodycorr.body.template import get_template
    from bodycorr.matching.nearest import knn
    from bodycorr.matching.up import template_reference

    p = np.asarray(described.points, dtype=np.float64)
    n = len(p)
    c = p - p.mean(0) if n else p
    ext = np.zeros(3)
    if n >= 2:
        axes = np.linalg.svd(c, full_matrices=False)[2]
        proj = c @ axes.T
        ext[: proj.shape[1]] = proj.max(0) - proj.min(0)
    ext = np.sort(ext)[::-1]
    big = float(ext[0])
    aspect = float(ext[1] / big) if big > 0 else 1.0
    reasons: list[str] = []
    f_points = 1.0 if n >= MIN_POINTS else 0.0
    if not f_points:
        reasons.append(f"only {n} points (a person's scan has at least {MIN_POINTS})")
    f_size = _sigmoid((big - SIZE_M[0]) / 0.03) * _sigmoid((SIZE_M[1] - big) / 0.1)
    if f_size < 0.5:
        reasons.append(f"{big:.2f} m across (a person: {SIZE_M[0]}-{SIZE_M[1]} m)")
    f_aspect = FLOOR + (1 - FLOOR) * _sigmoid((ASPECT[0] - aspect) / ASPECT[1])
    if f_aspect < 0.65:
        reasons.append(f"about as wide as long (extents {ext[0]:.2f} x {ext[1]:.2f} x {ext[2]:.2f} m; a body is elongated)")
    dist, jump, excess, covered = float("inf"), float("inf"), float("inf"), 0
    if n >= 1:
        if extractor is None:
            from bodycorr.matching.describe import load_extractor

            extractor = load_extractor()
        tdesc = template_reference(extractor).descriptors
        t = get_template()
        nn = knn(np.asarray(described.descriptors, np.float32), np.asarray(tdesc, np.float32), k=1)
        idx = nn.index[:, 0]
        dist = float(np.median(nn.distance[:, 0]))
        counts = np.bincount(t.parts[idx], minlength=int(t.parts.max()) + 1)
        covered = int((counts >= 0.01 * n).sum())
        if n >= 2:
            k = min(8, n - 1)
            nd, nb = cKDTree(p).query(p, k=k + 1, workers=1)
            nd, nb = nd[:, 1:].reshape(n, k), nb[:, 1:].reshape(n, k)
            tv = t.mesh.vertices[idx]
            per_point = np.linalg.norm(tv[:, None] - tv[nb], axis=2).mean(1)
            jump = float(np.median(per_point))
            excess = float(np.median(per_point - nd.mean(1)))
    f_desc = _sigmoid((DESCRIPTOR[0] - dist) / DESCRIPTOR[1]) if np.isfinite(dist) else 0.0
    if f_desc < 0.5:
        reasons.append(f"descriptors unlike a body's (median distance to the template {dist:.2f}; people <= 0.38)")
    f_excess = FLOOR + (1 - FLOOR) * _sigmoid((EXCESS_M[0] - excess) / EXCESS_M[1]) if np.isfinite(excess) else FLOOR
    if f_excess < 0.65 and np.isfinite(excess):
        reasons.append(f"neighbouring points match scattered body parts (median jump {jump * 100:.1f} cm on the template, "
                       f"{excess * 100:.1f} beyond the scan's spacing; people <= 7)")  # fmt: skip
    factors = {"points": f_points, "size": f_size, "aspect": f_aspect, "descriptor": f_desc, "excess": f_excess}
    score = float(np.prod(list(factors.values())))
    return Plausibility(score=score, is_person=score >= PERSON_THRESHOLD, reasons=tuple(reasons), points=n,
                        extents_m=(float(ext[0]), float(ext[1]), float(ext[2])), aspect=aspect, descriptor_distance=dist,
                        template_jump_m=jump, excess_m=excess, parts_covered=covered, factors=factors)  # fmt: skip


def check_person(described: Described, extractor=None, strict: bool = False) -> Plausibility:
    """:func:`~bodycorr.matching.plausibility.person_plausibility` of a described scan; a non-person
    raises :class:`BodycorrError` when ``strict``, else prints one warning line on stderr."""
    import sys

    p = person_plausibility(described, extractor)
    if not p.is_person:
        if strict:
            raise BodycorrError(f"{p.message(described.scan.name)}; refused (--strict). Drop --strict to go on anyway.")
        print(f"bodycorr: warning: {p.message(described.scan.name)}", file=sys.stderr)
    return p


# ------------------------------------------------------------------------------------------ images
#
# The silhouette of ``bodycorr image``, measured with the shipped image model (bodymap-vit) at the
# default settings. share = person pixels / image pixels; largest = the largest 8-connected blob's
# share of the person pixels; confidence = the mean code confidence over the person pixels;
# probability = the mean person probability there.
#
#   image                                   share        largest    confidence   probability
#   synthetic test people, 12 full + 12     0.07-0.46    0.90-1.00  0.16-0.25    0.87-0.97
#     upper-body frames (128 px)
#   astronaut (skimage; a person)           0.46         0.81       0.141        0.84
#   camera (skimage; a person, grey)        0.15         0.91       0.129        0.85
#   chelsea (a cat)                         0.59         0.91       0.116        0.85
#   coffee (a cup)                          0.52         1.00       0.103        0.87
#   rocket                                  0.78         0.94       0.120        0.78
#   colorwheel / motorcycle / tissue        0.56-0.71    1.00       0.090-0.126  0.80-0.88
#   horse / moon / logo / hubble field      0.06-0.31    0.28-0.99  0.142-0.162  0.79-0.91
#   brick / grass / gravel / coins          <= 0.002     0.64-0.83  0.11-0.28    0.60-0.80
#
# Scores below: every one of the 24 synthetic people 0.97-1.00; astronaut 0.83, camera 0.60;
# chelsea 0.28, coffee 0.10, rocket 0.04, colorwheel 0.23, motorcycle 0.02, tissue 0.06, page 0.43,
# cell 0.26, hubble field 0.29; but horse 0.88, moon 0.97, logo 0.85.
#
# On real photographs the model is unsure of everything: the silhouette probability does not
# separate people from things at all, and the confidence only barely (0.129-0.141 on the two
# photos of people, 0.090-0.126 on five photos of things, but 0.142-0.162 on a horse, the moon, a
# logo and a deep-field image, which therefore pass). The confidence threshold was set between the
# two groups of the first kind on exactly these photos: it is a weak signal, not a detector. The
# share and the blob only catch the plainest failures: a "person" that fills most of the frame (a
# texture), a silhouette broken into many pieces, or almost nothing found.

IMAGE_SHARE = (0.002, 0.70)  #: person share of the image: below the first almost nothing was found; above the second the "person" fills the frame
IMAGE_SHARE_SOFT = (0.0005, 0.04)  #: the softness of those two edges
IMAGE_LARGEST = (0.5, 0.05)  #: the largest blob's share of the person pixels: threshold, softness (floored at FLOOR)
IMAGE_CONFIDENCE = (0.125, 0.01)  #: mean code confidence on the person pixels: threshold, softness (shipped model)


@dataclass(frozen=True)
class ImagePlausibility:
    """How much the silhouette found in an image looks like a person's.

    Attributes:
        score: in [0, 1], the product of :attr:`factors`.
        is_person: ``score >= PERSON_THRESHOLD``.
        reasons: one short phrase per factor that spoke against a person.
        person_pixels: pixels of the silhouette.
        share: person pixels / image pixels.
        components: 8-connected blobs of the silhouette.
        largest_share: the largest blob's share of the person pixels (1: one blob).
        mean_confidence: mean code confidence on the person pixels.
        mean_probability: mean person probability on the person pixels.
        factors: {"share", "blob", "confidence"}, each in [0, 1].
    """

    score: float
    is_person: bool
    reasons: tuple[str, ...]
    person_pixels: int
    share: float
    components: int
    largest_share: float
    mean_confidence: float
    mean_probability: float
    factors: dict

    def to_json(self) -> dict:
        return {"score": round(self.score, 4), "is_person": self.is_person, "reasons": list(self.reasons),
                "person_pixels": self.person_pixels, "share": round(self.share, 4), "components": self.components,
                "largest_share": round(self.largest_share, 4), "mean_confidence": round(self.mean_confidence, 4),
                "mean_probability": _finite(self.mean_probability), "factors": {k: round(v, 4) for k, v in self.factors.items()}}  # fmt: skip

    def message(self, name: str) -> str:
        """One line: ``<name> does not look like a person (score 0.12: reasons)``."""
        return f"{name} does not look like a person (score {self.score:.2f}: {'; '.join(self.reasons) or 'weak evidence'})"


def image_plausibility(silhouette: np.ndarray, confidence: np.ndarray, probability: np.ndarray | None = None) -> ImagePlausibility:
    """Score how much an image's predicted silhouette looks like a person's (see the table above).

    ``silhouette``: (H, W) bool; ``confidence``: (H, W) code confidence; ``probability``: (H, W)
    person probability (optional, reported only). An empty silhouette scores 0.
    """
    from scipy import ndimage

    sil = np.asarray(silhouette, bool)
    n = int(sil.sum())
    share = n / max(sil.size, 1)
    reasons: list[str] = []
    if n == 0:
        return ImagePlausibility(score=0.0, is_person=False, reasons=("no person pixels",), person_pixels=0, share=0.0, components=0,
                                 largest_share=0.0, mean_confidence=0.0, mean_probability=0.0,
                                 factors={"share": 0.0, "blob": 0.0, "confidence": 0.0})  # fmt: skip
    labels, k = ndimage.label(sil, structure=np.ones((3, 3), bool))
    largest = float(np.bincount(labels.ravel())[1:].max() / n)
    conf = float(np.asarray(confidence)[sil].mean())
    prob = float(np.asarray(probability)[sil].mean()) if probability is not None else float("nan")
    f_share = _sigmoid((share - IMAGE_SHARE[0]) / IMAGE_SHARE_SOFT[0]) * _sigmoid((IMAGE_SHARE[1] - share) / IMAGE_SHARE_SOFT[1])
    if share < IMAGE_SHARE[0] * 2:
        reasons.append(f"almost nothing found ({n} person pixels, {share * 100:.2f} % of the image)")
    elif f_share < 0.5:
        reasons.append(f"the 'person' fills {share * 100:.0f} % of the image (a texture or background, not a body)")
    f_blob = FLOOR + (1 - FLOOR) * _sigmoid((largest - IMAGE_LARGEST[0]) / IMAGE_LARGEST[1])
    if f_blob < 0.65:
        reasons.append(f"the silhouette is broken into {k} pieces (the largest holds {largest * 100:.0f} % of it; a person is one blob)")
    f_conf = _sigmoid((conf - IMAGE_CONFIDENCE[0]) / IMAGE_CONFIDENCE[1])
    if f_conf < 0.5:
        reasons.append(f"the map is unsure where the pixels lie on a body (mean confidence {conf:.3f}; people >= {IMAGE_CONFIDENCE[0]})")
    factors = {"share": f_share, "blob": f_blob, "confidence": f_conf}
    score = float(np.prod(list(factors.values())))
    return ImagePlausibility(score=score, is_person=score >= PERSON_THRESHOLD, reasons=tuple(reasons), person_pixels=n, share=share,
                             components=int(k), largest_share=largest, mean_confidence=conf, mean_probability=prob, factors=factors)  # fmt: skip
