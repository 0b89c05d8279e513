"""Template tracking from one depth camera: shapes, outputs, skipped frames, oracle registration."""

from __future__ import annotations

import numpy as np
import pytest

from bodycorr.apps.track import TrackConfig, evaluate_track, synthetic_sequence, track, visible_vertices, write_track_outputs
from bodycorr.geometry.camera import Intrinsics
from bodycorr.geometry.nonrigid import NonRigidConfig

K = Intrinsics.kinect_v2().scaled((128, 106))
FAST = NonRigidConfig(num_nodes=120, iterations=5)


@pytest.fixture(scope="module")
def seq():
    return synthetic_sequence(3, seed=0, noise=False, intrinsics=K)


@pytest.fixture(scope="module")
def tiny_extractor():
    import torch

    from bodycorr.matching.extract import DescriptorExtractor
    from bodycorr.models.registry import create_model

    torch.manual_seed(0)
    net = create_model("unet", base_width=4, max_width=16, num_levels=3).eval()
    return DescriptorExtractor(net, size=32)


def _oracle(truth):
    def fn(t, depth, camera):
        i = np.flatnonzero(visible_vertices(truth[t], depth, camera))
        return i, truth[t][i], np.ones(len(i))

    return fn


def test_synthetic_sequence_shapes(seq, template):
    depths, cam, truth, ph = seq
    assert depths.shape == (3, K.height, K.width) and depths.dtype == np.float32
    assert truth.shape == (3, template.num_vertices, 3) and ph.shape == (6,)
    assert ((depths > 0).sum((1, 2)) > 200).all()  # the person is in view
    assert np.linalg.norm(truth[1] - truth[0], axis=1).max() > 1e-3  # it moves


def test_track_skips_bad_frames_and_writes_outputs(seq, template, tiny_extractor, tmp_path):
    depths, cam, truth, _ = seq
    d = np.concatenate([depths[:1], np.zeros_like(depths[:1]), depths[1:2].copy()])
    d[2, 0, 0] = np.nan
    d = np.concatenate([d, depths[2:3]])  # ok, zeros, NaN, ok
    cfg = TrackConfig(views=8, nonrigid=FAST, min_valid_pixels=100, model="graph")
    res = track(d, cam, template.mesh, tiny_extractor, cfg)
    assert res.vertices.shape == (4, template.num_vertices, 3) and res.seconds.shape == (4,)
    assert res.status[0] == "ok" and res.status[3] == "ok"
    assert res.status[1].startswith("skipped: no person") and res.status[2].startswith("skipped:") and "NaN" in res.status[2]
    np.testing.assert_array_equal(res.vertices[1], res.vertices[0])  # skipped: previous output
    assert np.isfinite(res.vertices).all()
    truth4 = np.concatenate([truth[:1], truth[:1], truth[1:2], truth[2:3]])
    m = evaluate_track(res, truth4)
    assert m["tracked"] == 2 and m["per_frame_cm"][1] is None and np.isfinite(m["mean_cm"])
    (tmp_path / "frame_0009.ply").write_text("a longer, older run's last frame")
    paths = write_track_outputs(res, tmp_path, m)
    assert sorted(p.name for p in tmp_path.glob("frame_*.ply")) == [f"frame_{i:04d}.ply" for i in range(4)]  # the old frame 9 is gone
    assert not (tmp_path / ".incomplete").exists()
    assert paths["errors"].exists() and paths["gif"].stat().st_size > 0

    from PIL import Image

    assert Image.open(paths["gif"]).n_frames == 2


def test_oracle_correspondences_register_accurately(seq, template):
    depths, cam, truth, _ = seq
    cfg = TrackConfig(nonrigid=FAST, min_valid_pixels=100, max_matches=20000, model="graph")
    res = track(depths[:2], cam, template.mesh, None, cfg, correspondences_fn=_oracle(truth))
    assert res.status == ("ok", "ok")
    m = evaluate_track(res, truth[:2])
    assert m["visible_mean_cm"] < 3.0, m
    assert m["mean_cm"] < 6.0, m


def test_track_rejects_wrong_depth_size(seq, template):
    from bodycorr.common.errors import BodycorrError

    depths, cam, truth, _ = seq
    with pytest.raises(BodycorrError, match="depths must be"):
        track(depths[:, :50], cam, template.mesh, None, TrackConfig(model="graph"), correspondences_fn=_oracle(truth))


@pytest.mark.parametrize("mirror", ["per_match", "per_frame"])
def test_mirror_handling_keeps_right_matches_right(seq, template, mirror):
    depths, cam, truth, _ = seq
    cfg = TrackConfig(nonrigid=FAST, min_valid_pixels=100, max_matches=20000, mirror=mirror, model="graph")
    res = track(depths[:1], cam, template.mesh, None, cfg, correspondences_fn=_oracle(truth), symmetry=template.symmetry)
    assert evaluate_track(res, truth[:1])["visible_mean_cm"] < 3.0


def test_per_match_mirror_undoes_side_flips_of_single_matches(seq, template):
    """Descriptors that cannot tell left from right flip single pixels, not whole frames."""
    depths, cam, truth, _ = seq
    oracle = _oracle(truth)

    def flipped(t, depth, camera):
        i, p, w = oracle(t, depth, camera)
        f = np.random.default_rng(t).random(len(i)) < 0.45
        return np.where(f, template.symmetry[i], i), p, w

    errs = {}
    for mirror in ("off", "per_match"):
        cfg = TrackConfig(nonrigid=FAST, min_valid_pixels=100, max_matches=20000, mirror=mirror, model="graph")
        res = track(depths[:1], cam, template.mesh, None, cfg, correspondences_fn=flipped, symmetry=template.symmetry)
        errs[mirror] = evaluate_track(res, truth[:1])["visible_mean_cm"]
    assert errs["per_match"] < 3.0 and errs["off"] > 1.5 * errs["per_match"], errs


def test_body_tracking_fits_each_frame_from_rest(seq, template):
    """The default tracker fits Anny's bones at the person's shape: with exact matches, every frame
    lands on the truth (the graph alone, same matches, is several times worse on the whole body)."""
    depths, cam, truth, ph = seq
    d = np.concatenate([depths[:1], np.zeros_like(depths[:1]), depths[1:2]])  # a frame with no person between
    t3 = np.concatenate([truth[:1], truth[:1], truth[1:2]])
    res = track(d, cam, template.mesh, None, TrackConfig(min_valid_pixels=100, max_matches=3000),
                correspondences_fn=_oracle(t3), symmetry=template.symmetry, body=template, phenotypes=ph)  # fmt: skip
    m = evaluate_track(res, t3)
    assert res.status[0] == "ok" and res.status[1].startswith("skipped: no person") and res.status[2] == "ok"
    assert res.phenotypes is not None
    np.testing.assert_allclose(res.phenotypes, ph)
    assert m["visible_mean_cm"] < 1.5 and m["mean_cm"] < 2.0, m


def test_body_tracking_estimates_the_shape_when_not_given(seq, template, body_model):
    depths, cam, truth, ph = seq
    cfg = TrackConfig(min_valid_pixels=100, max_matches=3000, shape_frames=1, shape_iterations=100)
    res = track(depths[:1], cam, template.mesh, None, cfg, correspondences_fn=_oracle(truth), symmetry=template.symmetry, body=template)
    # phenotypes trade off (age, height and weight all scale the body): judge the body they make
    rest = body_model(np.stack([ph, res.phenotypes, np.full(6, 0.5)])).vertices[:, template.template_to_full]
    est_cm, neutral_cm = (np.linalg.norm(rest[1:] - rest[0], axis=-1).mean(1) * 100).tolist()
    assert est_cm < 0.5 * neutral_cm, (est_cm, neutral_cm, res.phenotypes, ph)


def test_body_tracking_needs_the_anny_template(seq, template):
    from bodycorr.apps.track import parse_phenotypes
    from bodycorr.common.errors import BodycorrError
    from bodycorr.geometry.mesh import Mesh

    depths, cam, truth, _ = seq
    with pytest.raises(BodycorrError, match="needs its Template"):
        track(depths[:1], cam, template.mesh, None, TrackConfig(), correspondences_fn=_oracle(truth))
    other = Mesh(template.mesh.vertices[:100], np.array([[0, 1, 2]]))
    with pytest.raises(BodycorrError, match="model='graph'"):
        track(depths[:1], cam, other, None, TrackConfig(), correspondences_fn=_oracle(truth), body=template)
    with pytest.raises(BodycorrError, match="6 comma-separated values"):
        parse_phenotypes("0.5,0.5")
    with pytest.raises(BodycorrError, match="6 comma-separated values"):
        parse_phenotypes("0.5,0.5,0.5,0.5,0.5,1.5")
    np.testing.assert_allclose(parse_phenotypes("0,0.2,0.4,0.6,0.8,1"), [0, 0.2, 0.4, 0.6, 0.8, 1])


def test_load_depth_sequence_folder(seq, tmp_path):
    from bodycorr.apps.track import load_depth_sequence

    depths = seq[0]
    for i, d in enumerate(depths):
        np.save(tmp_path / f"f{i:02d}.npy", d)
    d, cam = load_depth_sequence(tmp_path, frames=2)
    assert d.shape == (2,) + depths.shape[1:] and (cam.intrinsics.width, cam.intrinsics.height) == (K.width, K.height)
    np.testing.assert_allclose(d, depths[:2], atol=1e-6)


def test_sequence_choice_of_rigid_starts_keeps_one_facing():
    """Per frame, two starts a half turn apart with near-equal costs (front/back confusion): the
    sequence keeps the facing most frames prefer, and a skipped frame cuts the chain."""
    from bodycorr.apps.track import _choose_starts, _FrameMatches
    from bodycorr.geometry.rigid import SimilarityTransform, rotation_from_vector

    def frame(t, yaw_deg, front_cost, back_cost):
        front = SimilarityTransform(rotation_from_vector(np.deg2rad(yaw_deg) * np.array([0, 0, 1.0])), np.zeros(3))
        back = SimilarityTransform(rotation_from_vector(np.deg2rad(yaw_deg + 180) * np.array([0, 0, 1.0])), np.zeros(3))
        starts = sorted([(front, front_cost), (back, back_cost)], key=lambda x: x[1])
        fm = _FrameMatches(t, np.zeros(3, int), np.zeros((3, 3)), np.ones(3), None)
        fm.starts = starts
        return fm

    # frames 2 and 5 prefer the back start by 0.5 %; the person turns slowly (2° a frame)
    costs = [(10.0, 10.1), (10.0, 10.1), (10.05, 10.0), (10.0, 10.1), (10.0, 10.1), (10.05, 10.0)]
    frames = [frame(t, 2.0 * t, f, b) for t, (f, b) in enumerate(costs)]
    choice = _choose_starts(frames, switch_deg=60.0)
    assert all(is_start(choice[t].rotation, frames[t], "front") for t in range(6))
    # a clear preference still wins (a start 30 % better), and a gap resets the chain
    frames2 = [frame(0, 0, 10.0, 10.1), "skipped: no person", frame(2, 0, 13.0, 10.0)]
    choice2 = _choose_starts(frames2, switch_deg=60.0)
    assert set(choice2) == {0, 2} and is_start(choice2[2].rotation, frames2[2], "back")


def is_start(rot, fm, which):
    """Whether ``rot`` is the frame's front (the smaller yaw) or back start."""
    from bodycorr.geometry.rigid import rotation_angle_deg

    front = min(fm.starts, key=lambda s: abs(np.arctan2(s[0].rotation[1, 0], s[0].rotation[0, 0])))[0]
    is_front = rotation_angle_deg(rot, front.rotation) < 1
    return is_front if which == "front" else not is_front


def test_smoothing_blends_outputs_only(seq, template):
    """Each output is (1 - s) x its frame's own fit + s x the previous output; the fits are the
    same as without smoothing (no frame starts from another), and the first frame is its own fit."""
    depths, cam, truth, ph = seq
    runs = {}
    for s in (0.0, 0.4):
        cfg = TrackConfig(min_valid_pixels=100, max_matches=2000, smoothing=s)
        runs[s] = track(depths, cam, template.mesh, None, cfg, correspondences_fn=_oracle(truth), symmetry=template.symmetry,
                        body=template, phenotypes=ph).vertices  # fmt: skip
    raw, out = runs[0.0], runs[0.4]
    np.testing.assert_allclose(out[0], raw[0])
    for t in (1, 2):
        np.testing.assert_allclose(out[t], 0.6 * raw[t] + 0.4 * out[t - 1], atol=1e-9)
    assert np.abs(raw[2] - raw[0]).max() > 0.01  # the person moves: the blend is not trivial
    with pytest.raises(Exception, match="smoothing"):
        TrackConfig(smoothing=1.0).check()


@pytest.mark.parametrize("field,value,message", [
    ("smoothing", 1.0, "smoothing"), ("match_selection", "best", "match_selection"), ("mirror", "both", "mirror"),
])  # fmt: skip
def test_track_config_rejects_bad_settings(field, value, message):
    from bodycorr.common.errors import BodycorrError

    with pytest.raises(BodycorrError, match=message):
        TrackConfig(**{field: value}).check()


def test_track_reports_progress_per_frame_on_stderr(seq, template, capsys):
    """``progress=True``: a bar per phase on stderr (matching, the shape fits, fitting), redrawn every frame."""
    import re

    from bodycorr.body.articulated import PoseFitConfig

    depths, cam, truth, _ = seq
    cfg = TrackConfig(min_valid_pixels=100, max_matches=500, shape_frames=2, shape_iterations=3,
                      pose=PoseFitConfig(iterations=3, shape=False, closest_point=2.0, max_scan_points=300))  # fmt: skip
    seen = []
    track(depths, cam, template.mesh, None, cfg, correspondences_fn=_oracle(truth), symmetry=template.symmetry, body=template,
          progress=lambda t, s, sec: seen.append((t, s)))  # fmt: skip
    assert [t for t, _ in seen] == [0, 1, 2] and capsys.readouterr().err == ""  # a callback: called per frame, nothing printed
    track(depths, cam, template.mesh, None, cfg, correspondences_fn=_oracle(truth), symmetry=template.symmetry, body=template, progress=True)
    err = capsys.readouterr().err
    for phase, n in (("matching frames", 3), ("estimating the shape", 2), ("fitting frames", 3)):
        done = {int(m) for m in re.findall(rf"track: {phase}:\s+\d+%\|[^|]*\|\s*(\d+)/{n}", err)}
        assert done == set(range(n + 1)), (phase, err)  # every frame (fit) shown as it finishes


def test_track_command_turns_progress_on(monkeypatch, tmp_path):
    import bodycorr.apps.track as tr
    from bodycorr.cli.main import main

    got = {}
    monkeypatch.setattr(tr, "run_track", lambda *a, **k: got.update(k) or "tracked")
    assert main(["track", "synthetic", "-o", str(tmp_path / "o")]) == 0
    assert got["progress"] is True  # and the library's default stays quiet:
    import inspect

    monkeypatch.undo()
    assert inspect.signature(tr.run_track).parameters["progress"].default is False


@pytest.mark.slow
def test_track_checks_that_the_first_frame_is_a_person(seq, tmp_path, capsys):
    """A box is refused with --strict before any tracking (nothing written) and warned about
    without it; a person's first frame passes."""
    from bodycorr.apps.track import _check_first_frame, run_track
    from bodycorr.common.errors import BodycorrError
    from bodycorr.matching.pipeline import load_extractor

    depths, camera = seq[0], seq[1]
    box = np.zeros_like(depths[0])
    box[20:90, 40:90] = 2.0
    folder = tmp_path / "box"
    folder.mkdir()
    for i in range(2):
        np.save(folder / f"f{i:02d}.npy", box)
    with pytest.raises(BodycorrError, match="frame 0 does not look like a person.*--strict"):
        run_track(str(folder), tmp_path / "o", frames=2, strict=True)
    assert not (tmp_path / "o" / "track.json").exists()
    extractor = load_extractor(None)
    capsys.readouterr()
    assert not _check_first_frame(np.stack([np.zeros_like(box), box]), camera, extractor, False).is_person
    assert "frame 1 does not look like a person" in capsys.readouterr().err
    assert _check_first_frame(depths, camera, extractor, True).is_person
