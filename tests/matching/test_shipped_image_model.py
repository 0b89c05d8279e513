"""The shipped image (BodyMap) model: small, carded, finds people and not backgrounds, beats chance on test people."""

import numpy as np
import pytest

from bodycorr.matching.image import DEFAULT_IMAGE_MODEL

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not DEFAULT_IMAGE_MODEL.exists(), reason="no shipped image model in this checkout")]


def test_shipped_image_model_is_small_and_has_a_card():
    assert DEFAULT_IMAGE_MODEL.stat().st_size < 20 * 2**20
    card = DEFAULT_IMAGE_MODEL.with_suffix(".md").read_text()
    for needed in ("command", "seed", "steps", "wall time", "hardware", "2D@5", "AP", "TC@1"):
        assert needed in card


@pytest.fixture(scope="module")
def views():
    from bodycorr.data.images import ImageConfig, ImageViewGenerator

    gen = ImageViewGenerator(ImageConfig(size=128, views_per_body=1, poses_per_identity=1, multi_person_share=0.0, occluder_share=0.0), "test", 11)
    return [gen.views_of_body(b)[0] for b in range(4)]


def test_finds_test_people_and_maps_them_better_than_chance(views):
    from bodycorr.body.template import get_template
    from bodycorr.evaluation.surface_metrics import window_accuracy
    from bodycorr.matching.image import load_mapper

    mapper = load_mapper()
    pts = get_template().mesh.vertices
    ious, accs = [], []
    for v in views:
        corr = mapper(v.rgb)
        truth = v.instance == 0
        ious.append((truth & corr.silhouette).sum() / max((truth | corr.silhouette).sum(), 1))
        accs.append(window_accuracy(corr.vertex, np.where(truth, v.template_vertex, -1), pts, windows=(20,))[20])
    assert np.mean(ious) > 0.75
    # a random vertex lands within 20 px of its place for a few % of pixels; the model must do far better
    assert np.mean(accs) > 0.35


def test_an_empty_scene_gives_an_almost_empty_silhouette():
    from bodycorr.matching.image import load_mapper

    from bodycorr.render.appearance import sample_background

    rng = np.random.default_rng(0)
    scenes = [np.full((128, 128, 3), 128, np.uint8)] + [sample_background(rng, 128) for _ in range(3)]
    for img in scenes:
        corr = load_mapper()(img)
        assert corr.silhouette.mean() < 0.05
