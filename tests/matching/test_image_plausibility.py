"""Does an image's silhouette look like a person's? One blob the model is sure of does; a frame-filling
"person", a silhouette in pieces, an unsure map or almost nothing does not (no model needed)."""

from __future__ import annotations

import json

import numpy as np

from bodycorr.matching.plausibility import IMAGE_CONFIDENCE, PERSON_THRESHOLD, image_plausibility


def _person(h=200, w=160):
    yy, xx = np.mgrid[:h, :w]
    head = (yy - 30) ** 2 + (xx - 80) ** 2 < 18**2
    body = (yy > 45) & (yy < 190) & (abs(xx - 80) < 30)
    return head | body


def test_one_sure_blob_is_a_person():
    sil = _person()
    p = image_plausibility(sil, np.where(sil, 0.2, 0.0), np.where(sil, 0.9, 0.0))
    assert p.is_person and p.score > 0.9 and p.components == 1 and p.largest_share == 1.0 and not p.reasons
    assert json.loads(json.dumps(p.to_json(), allow_nan=False))["is_person"] is True


def test_what_speaks_against_a_person_is_named():
    sil = _person()
    cases = {
        "fills": np.ones_like(sil),  # the whole frame
        "pieces": np.zeros_like(sil),  # 20 dots of equal size
        "almost nothing": np.zeros_like(sil),
    }
    for k in range(20):
        cases["pieces"][10 * k : 10 * k + 4, 5 + 7 * k : 9 + 7 * k] = True
    cases["almost nothing"][100, 80] = True
    for needle, s in cases.items():
        p = image_plausibility(s, np.where(s, 0.2, 0.0))
        assert not p.is_person and any(needle in r for r in p.reasons), (needle, p.reasons)
        assert p.message("x.png").startswith("x.png does not look like a person (score")
    unsure = image_plausibility(sil, np.where(sil, IMAGE_CONFIDENCE[0] - 0.03, 0.0))
    assert unsure.score < PERSON_THRESHOLD and "unsure" in unsure.reasons[0]
    assert np.isnan(unsure.mean_probability) and unsure.to_json()["mean_probability"] is None


def test_an_empty_silhouette_scores_zero():
    p = image_plausibility(np.zeros((32, 32), bool), np.zeros((32, 32)))
    assert p.score == 0.0 and not p.is_person and p.components == 0
