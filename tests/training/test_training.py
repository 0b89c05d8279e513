import dataclasses
import json

import numpy as np
import pytest
import torch

from bodycorr.common.errors import BodycorrError
from bodycorr.models.io import load_model_file
from bodycorr.training.config import TrainConfig, load_config
from bodycorr.training.loop import lr_factor, sample_pixels, train

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny():
    # the user cache is shared on purpose: the template's all-pairs geodesics take minutes to build
    return load_config("depth-tiny").replace(val_every=0)


def test_tiny_run_writes_model_and_resumes(tiny, tmp_path):
    out = tmp_path / "run"
    rec = train(tiny.replace(steps=2), out, progress=False)
    assert rec["step"] == 2 and np.isfinite(rec["total"])
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["step"] == 2
    # resuming continues from step 2 rather than starting over
    train(tiny.replace(steps=2), out, progress=False)
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 2
    model = load_model_file(out / "model.pt")
    x = torch.zeros(1, 2, 48, 48)
    assert model(x).shape == (1, 16, 48, 48)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2


def test_resume_with_other_config_refused(tiny, tmp_path):
    out = tmp_path / "run"
    train(tiny.replace(steps=1), out, progress=False)
    with pytest.raises(BodycorrError, match="different config"):
        train(tiny.replace(steps=1, lr=0.1), out, progress=False)


def test_resume_may_change_how_it_runs(tiny, tmp_path):
    # threads, workers, logging and the step count say how a run goes, not what it learns
    out = tmp_path / "run"
    train(tiny.replace(steps=1), out, progress=False)
    rec = train(tiny.replace(steps=2, threads=2, log_every=1, ckpt_every=1), out, progress=False)
    assert rec["step"] == 2


def test_init_starts_a_fresh_run_from_another_runs_weights(tiny, tmp_path):
    first = tmp_path / "first"
    train(tiny.replace(steps=2), first, progress=False)
    # steps=0: the fine-tune run saves its starting weights untouched
    second = tmp_path / "second"
    train(tiny.replace(steps=0, init=str(first / "last.pt"), lr=1e-4), second, progress=False)
    a = torch.load(first / "last.pt", weights_only=True)["model"]["state_dict"]
    b = torch.load(second / "last.pt", weights_only=True)
    assert b["step"] == 0
    assert all(torch.equal(a[k], b["model"]["state_dict"][k]) for k in a)
    # other targets (a different head count) do not fit: one line naming the file
    with pytest.raises(BodycorrError, match="init checkpoint .*last.pt"):
        other = tiny.replace(steps=0, init=str(first / "last.pt"), targets=dataclasses.replace(tiny.targets, num_segmentations=1))
        train(other, tmp_path / "third", progress=False)


def test_corrupt_checkpoint_is_one_line(tiny, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"\x80\x02 definitely not a checkpoint")
    with pytest.raises(BodycorrError, match="corrupt"):
        train(tiny.replace(steps=1), out, progress=False)


def test_loss_decreases_on_a_fixed_batch(tiny, tmp_path):
    """A few steps on the same views must lower the loss: the heads and targets are wired right."""
    from bodycorr.body.template import get_template
    from bodycorr.data.datasets import stack_views
    from bodycorr.data.views import ViewGenerator
    from bodycorr.training.loop import build_model, losses
    from bodycorr.training.targets import build_targets

    targets = build_targets(get_template(), tiny.targets)
    torch.manual_seed(0)  # a seeded init: the test must not depend on the luck of the draw
    model = build_model(tiny, targets)
    batch = stack_views(ViewGenerator(tiny.view, "train", 0).views_of_body(0))
    seg, kp = torch.from_numpy(targets.segmentations), torch.from_numpy(targets.keypoints)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        ls = losses(model, model.heads, batch, seg, kp, tiny, torch.Generator().manual_seed(0))
        opt.zero_grad()
        ls["total"].backward()
        opt.step()
        first = first or float(ls["total"].detach())
    assert float(ls["total"].detach()) < 0.8 * first


def test_targets_label_every_vertex(tiny):
    from bodycorr.body.template import get_template
    from bodycorr.training.targets import build_targets

    t = get_template()
    targets = build_targets(t, tiny.targets)
    assert targets.segmentations.shape == (tiny.targets.num_segmentations + 1, t.num_vertices)
    for k in range(tiny.targets.num_segmentations):
        assert len(np.unique(targets.segmentations[k])) == tiny.targets.num_patches
    assert np.array_equal(targets.segmentations[-1], t.parts)
    # each landmark's own vertex carries its label; most of the body is background
    assert np.array_equal(targets.keypoints[t.landmarks], np.arange(33))
    assert (targets.keypoints == 33).mean() > 0.5


def test_schedule_and_pixel_sampling():
    cfg = TrainConfig(steps=100, warmup_steps=10)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(99, cfg) < 0.05
    v = -torch.ones(2, 8, 8, dtype=torch.long)
    v[0, 2:4, 2:4] = 5
    pix, img = sample_pixels(v, 100, torch.Generator().manual_seed(0))
    assert len(pix) == 4 and (img == 0).all()
    assert (v.reshape(-1)[pix] == 5).all()


def test_unknown_config_key_and_missing_config():
    with pytest.raises(BodycorrError, match="unknown keys"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(BodycorrError, match="not found"):
        load_config("no-such-config")


def test_config_file_comments_are_ignored(tmp_path):
    f = tmp_path / "mine.json"
    f.write_text('{"_comment": "why this run", "steps": 7, "targets": {"num_segmentations": 1}}')
    cfg = load_config(str(f))
    assert cfg.steps == 7 and cfg.name == "mine" and cfg.targets.num_segmentations == 1
    f.write_text('{"_comment": "x", "stepz": 7}')
    with pytest.raises(BodycorrError, match="unknown keys"):  # comments are not a loophole for typos
        load_config(str(f))


def test_clothing_is_a_view_option_of_the_config_off_by_default(tmp_path):
    from bodycorr.training.loop import same_run_config

    default = TrainConfig()
    assert default.view.clothed_share == 0
    d = default.to_dict()
    assert "clothed_share" not in d["view"] and "garments" not in d["view"]  # runs written before it existed still resume
    old = json.loads(json.dumps(d))
    assert same_run_config(old, default.to_dict())
    f = tmp_path / "clothed.json"
    f.write_text('{"view": {"size": 64, "clothed_share": 0.5, "garments": {"kinds": ["loose_top", "skirt"], "flare": [0.02, 0.04]}}}')
    cfg = load_config(str(f))
    assert cfg.view.clothed_share == 0.5 and cfg.view.garments.kinds == ("loose_top", "skirt") and cfg.view.garments.flare == (0.02, 0.04)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # a checkpoint's config round trip
    assert not same_run_config(old, TrainConfig.from_dict({"view": {"clothed_share": 0.5}}).to_dict())
    f.write_text('{"view": {"garments": {"kinds": ["cape"]}}}')
    with pytest.raises(BodycorrError, match="unknown kinds"):
        load_config(str(f))


def test_resume_may_change_the_step_count(tiny, tmp_path):
    out = tmp_path / "run"
    train(tiny.replace(steps=1), out, progress=False)
    rec = train(tiny.replace(steps=3), out, progress=False)
    assert rec["step"] == 3


def test_ddp_two_gloo_processes(tmp_path):
    """torchrun's setting with two CPU processes: both train in step, rank 0 writes, ranks' weights agree."""
    import socket

    import ddp_workers  # importable by spawned processes (tests/ is on the path)
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    mp.spawn(ddp_workers.train_worker, args=(2, port, str(out)), nprocs=2, join=True)
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["step"] == 2
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and np.isfinite(log[-1]["total"])
    assert load_model_file(out / "model.pt")(torch.zeros(1, 2, 48, 48)).shape == (1, 16, 48, 48)


def test_ddp_divergence_is_detected(tmp_path):
    import socket

    import ddp_workers  # importable by spawned processes (tests/ is on the path)
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(ddp_workers.diverge_worker, args=(port, str(tmp_path / "r")), nprocs=2, join=True)
    for rank in (0, 1):
        assert "diverged" in (tmp_path / f"r.{rank}").read_text()


def test_sigterm_stops_like_ctrl_c_inside_the_block_only():
    import os
    import signal

    from bodycorr.training.loop import sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_chirality_labels_follow_the_image_side_of_the_left_body_half():
    from bodycorr.training.loop import chirality_labels

    sides = torch.tensor([1, -1, 0])  # vertex 0 on the left, 1 on the right, 2 in the middle
    v = torch.full((2, 8, 32), -1)
    v[0, :, 2:10], v[0, :, 10:14], v[0, :, 14:22] = 1, 2, 0  # left half drawn on the image's right: facing the camera
    v[1] = torch.where(v[0] >= 0, torch.tensor([1, 0, 2])[v[0].clamp(min=0)], v[0])  # the mirror case: sides swapped
    label, weight = chirality_labels(v, sides)
    assert label.tolist() == [1, 0]
    assert torch.all(weight == 1.0)
    # a side-on view (only one half seen, around the centre) weighs little
    v2 = torch.full((1, 8, 32), -1)
    v2[0, :, 10:22] = 0
    assert chirality_labels(v2, sides)[1].item() < 0.2


def test_chirality_head_trains_and_is_dropped_when_shipped(tiny, tmp_path):
    from bodycorr.body.template import get_template
    from bodycorr.data.datasets import stack_views
    from bodycorr.data.views import ViewGenerator
    from bodycorr.models.io import save_model_file
    from bodycorr.training.loop import build_model, losses
    from bodycorr.body.template import body_sides
    from bodycorr.training.targets import build_targets

    cfg = tiny.replace(model_args={**tiny.model_args, "chirality_head": True})
    t = get_template()
    targets = build_targets(t, cfg.targets)
    sides = torch.from_numpy(body_sides(t).astype(np.int64))
    assert (sides == 1).any() and (sides == -1).any() and (sides == 0).any()
    model = build_model(cfg, targets)
    batch = stack_views(ViewGenerator(cfg.view, "train", 0).views_of_body(0))
    seg, kp = torch.from_numpy(targets.segmentations), torch.from_numpy(targets.keypoints)
    ls = losses(model, model.heads, batch, seg, kp, cfg, torch.Generator().manual_seed(0), sides)
    assert torch.isfinite(ls["chirality"])
    assert "chirality" in ls and 0 <= float(ls["chirality_acc"]) <= 1
    ls["chirality"].backward()  # this loss alone reaches the head and the encoder's first layer
    assert model.heads.chirality.weight.grad.abs().sum() > 0
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0
    shipped = load_model_file(save_model_file(model, tmp_path / "m.pt"))
    assert shipped.heads is None and not shipped.config.chirality_head
