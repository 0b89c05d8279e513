"""Surface (BodyMap) training pieces: mirrored flips, empty scenes, pixel sampling, resume rules."""

from __future__ import annotations

import numpy as np
import torch

from bodycorr.training.loop import same_run_config
from bodycorr.training.surface import add_empty_scenes, flip_batch, sample_foreground


def test_flip_mirrors_image_and_labels_and_twice_is_identity():
    g = torch.Generator().manual_seed(0)
    sym = torch.tensor([1, 0, 3, 2, 4, 6, 5, 8, 7, 9])  # an involution, like left<->right
    rgb = torch.rand(3, 3, 4, 5, generator=g)
    vert = torch.randint(-1, 10, (3, 4, 5), generator=g)
    which = torch.tensor([True, False, True])
    r1, v1 = flip_batch(rgb, vert, sym, which)
    assert torch.equal(r1[1], rgb[1]) and torch.equal(v1[1], vert[1])
    assert torch.equal(r1[0], rgb[0].flip(-1))
    fv = vert[0].flip(-1)
    assert torch.equal(v1[0], torch.where(fv >= 0, sym[fv.clamp(min=0)], fv))
    r2, v2 = flip_batch(r1, v1, sym, which)
    assert torch.equal(r2, rgb) and torch.equal(v2, vert)


def test_empty_scenes_replace_images_and_clear_labels():
    rgb = torch.zeros(40, 3, 16, 16)
    vert = torch.zeros(40, 16, 16, dtype=torch.long)
    r, v = add_empty_scenes(rgb, vert, 0.25, torch.Generator().manual_seed(1))
    empty = (v.view(40, -1) < 0).all(1)
    changed = (r != 0).view(40, -1).any(1)
    assert 3 <= int(empty.sum()) <= 20 and torch.equal(empty, changed)
    assert (v[~empty] == 0).all() and r.min() >= 0 and r.max() <= 1
    r0, v0 = add_empty_scenes(rgb, vert, 0.0, torch.Generator().manual_seed(1))
    assert r0 is rgb and v0 is vert


def test_sample_foreground_draws_only_person_pixels():
    vert = -torch.ones(2, 6, 6, dtype=torch.long)
    vert[0, 2:4, 2:4] = 5
    idx, img = sample_foreground(vert, 50, torch.Generator().manual_seed(0))
    assert len(idx) == 50 and (img == 0).all()  # image 1 has nobody: no samples
    assert (vert.reshape(-1)[idx] == 5).all()


def test_resume_allows_fields_the_checkpoint_did_not_know():
    saved = {"model": "x", "steps": 10, "lr": 0.1}
    assert same_run_config(saved, {"model": "x", "steps": 20, "lr": 0.1, "empty_share": 0.1})
    assert not same_run_config(saved, {"model": "x", "steps": 20, "lr": 0.2})
    assert not same_run_config({**saved, "empty_share": 0.0}, {"model": "x", "steps": 20, "lr": 0.1, "empty_share": 0.1})
