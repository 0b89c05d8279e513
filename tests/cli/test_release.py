"""`bodycorr release`: the card is written from the run's records and the benchmark results."""

import json

import pytest

from bodycorr.cli import release as rel
from bodycorr.common.errors import BodycorrError
from bodycorr.common.fileio import file_sha256
from bodycorr.models import create_model, tiny_overrides
from bodycorr.models.io import save_model_file


def _surface_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    save_model_file(create_model("bodymap_unet", **tiny_overrides("bodymap_unet")), run / "model.pt")
    cfg = {"task": "surface", "name": "bodymap-tiny", "model": "bodymap_unet", "code": "geodesic", "seed": 3,
           "train_images": 64, "image": {"size": 64}, "batch_size": 4, "log_every": 10}  # fmt: skip
    (run / "config.json").write_text(json.dumps(cfg))
    log = [{"step": 10, "img_per_s": 8.0}, {"step": 20, "img_per_s": 8.0, "val_geo_mean_cm": 31.5, "val_geo_median_cm": 22.0,
            "val_within_5cm_pct": 6.0, "val_sil_acc_pct": 90.25}]  # fmt: skip
    (run / "log.jsonl").write_text("\n".join(json.dumps(x) for x in log) + "\n")
    row = {"model": str(run / "model.pt"), "acc_5px_pct": 12.5, "acc_10px_pct": 30.0, "acc_20px_pct": 55.0, "AP": 4.0, "AP50": 20.0,
           "AP75": 0.5, "AR": 7.0, "consistency_1_pct": 80.0, "consistency_12_pct": 50.0, "consistency_120_pct": 25.0,
           "cpu_ms_128": 40.0, "cpu_ms_256": 120.0, "cpu_threads": 2, "cpu_load_avg": 0.3,
           "model_sha256": file_sha256(run / "model.pt")}  # fmt: skip
    res = {"config": {"images": 10, "frames": 20, "size": 64, "window": 5}, "results": [row]}
    (tmp_path / "results.json").write_text(json.dumps(res))
    return run


def test_surface_card_has_the_measured_numbers_command_and_note(tmp_path, monkeypatch):
    monkeypatch.setattr(rel, "WEIGHTS", tmp_path / "weights")
    run = _surface_run(tmp_path)
    card = rel.release(run, tmp_path / "results.json", "bm", command="bodycorr train --config x", note="Continued at step 10 with empty scenes.")
    text = card.read_text()
    assert (tmp_path / "weights" / "bm.pt").read_bytes() == (run / "model.pt").read_bytes()
    assert "`bodycorr train --config x`" in text and "Continued at step 10 with empty scenes." in text
    assert "| 12.5 | 30.0 | 55.0 | 4.0 |" in text and "load average 0.3" in text
    assert "mean 31.5 cm" in text and "20 at batch 4 (80 views seen)" in text
    # wall time from the log's throughput: 2 x 10 steps x 4 images / 8 img/s = 10 s
    assert "0.00 h" in text


def test_release_refuses_an_empty_log_and_a_missing_run(tmp_path, monkeypatch):
    monkeypatch.setattr(rel, "WEIGHTS", tmp_path / "weights")
    run = _surface_run(tmp_path)
    (run / "log.jsonl").write_text("")
    with pytest.raises(BodycorrError, match="log.jsonl is empty"):
        rel.release(run, tmp_path / "results.json", "bm")
    with pytest.raises(BodycorrError, match="model file"):
        rel.release(tmp_path / "nowhere", tmp_path / "results.json", "bm")
    assert not (tmp_path / "weights" / "bm.md").exists()


def _depth_results(path, run, groups, **meta):
    """A results.json as 'bodycorr benchmark --model RUN/model.pt' writes it: the first method's groups and its model's digest."""
    model = str(run / "model.pt")
    meta["models"] = {model: {"file": model, "sha256": file_sha256(run / "model.pt")}}
    path.write_text(json.dumps({"suite": "s", "views": 8, "method_order": [model], "groups": groups, "meta": meta}))
    return path


def _depth_run(root, name, steps, init=""):
    run = root / name
    run.mkdir()
    save_model_file(create_model("unet", **tiny_overrides("unet")), run / "model.pt")
    cfg = {"name": name, "model": "unet", "seed": 1, "batch_size": 4, "log_every": 10, "init": init,
           "view": {"size": 64, "noise": "mixed"}}  # fmt: skip
    (run / "config.json").write_text(json.dumps(cfg))
    log = [{"step": s, "img_per_s": 4.0} for s in range(10, steps + 1, 10)]
    log[-1].update(val_mean_cm=30.0, val_median_cm=12.0, val_gross_pct=35.0)
    (run / "log.jsonl").write_text("\n".join(json.dumps(x) for x in log) + "\n")
    return run


def test_depth_card_follows_the_init_chain(tmp_path, monkeypatch):
    """A fine-tune started from another run's weights: the card counts both runs and gives both commands."""
    monkeypatch.setattr(rel, "WEIGHTS", tmp_path / "weights")
    first = _depth_run(tmp_path, "small", 20)
    second = _depth_run(tmp_path, "medium", 30, init=str(first / "last.pt"))
    g = {"AE_cm": 40.0, "WE_cm": 80.0, "median_cm": 15.0, "within_5cm_pct": 10.0, "within_10cm_pct": 30.0, "gross_pct": 40.0,
         "flip_share_of_gross_pct": 70.0}  # fmt: skip
    _depth_results(tmp_path / "results.json", second, {"full-full/inter/clean": g})
    text = rel.release(second, tmp_path / "results.json", "depth").read_text()
    assert f"bodycorr train --config small --out {first} && bodycorr train --config medium --out {second}" in text
    assert "50 training steps" in text and "50 at batch 4 (200 views): 20 of `small`; 30 of `medium` (from" in text
    # wall time: 5 log records x 10 steps x 4 images / 4 img/s = 50 s
    assert "0.01 h" in text and "| full-full/inter/clean | 40.00 | 80.00 | - | 15.00 |" in text  # results without AEa
    g["AE_area_cm"] = 21.5
    _depth_results(tmp_path / "results.json", second, {"full-full/inter/clean": g})
    assert "| full-full/inter/clean | 40.00 | 80.00 | 21.50 | 15.00 |" in rel.release(second, tmp_path / "results.json", "depth").read_text()


def test_depth_card_names_the_suite_it_was_measured_on(tmp_path, monkeypatch):
    """The card records the suite's parameters digest, so a figure can be traced to one suite."""
    monkeypatch.setattr(rel, "WEIGHTS", tmp_path / "weights")
    run = _depth_run(tmp_path, "small", 20)
    g = {"AE_cm": 40.0, "WE_cm": 80.0, "median_cm": 15.0, "within_5cm_pct": 10.0, "within_10cm_pct": 30.0, "gross_pct": 40.0,
         "flip_share_of_gross_pct": 70.0}  # fmt: skip
    _depth_results(tmp_path / "results.json", run, {"full-full/inter/clean": g}, suite_parameters_sha256="0123abcd4567ef89")
    assert "Suite parameters: sha256 0123abcd4567ef89" in rel.release(run, tmp_path / "results.json", "depth").read_text()


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "..", "", "x" * 65, "sub/../x", "name with space"])
def test_release_refuses_a_name_that_is_not_a_plain_file_name(tmp_path, monkeypatch, name):
    """--name becomes <name>.pt and <name>.md in the package: a path would write outside it."""
    monkeypatch.setattr(rel, "WEIGHTS", tmp_path / "weights")
    run = _depth_run(tmp_path, "small", 20)
    _depth_results(tmp_path / "results.json", run, {})
    with pytest.raises(BodycorrError, match="plain file name") as e:
        rel.release(run, tmp_path / "results.json", name)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "weights").exists() and not (tmp_path / "escape.pt").exists()


def test_release_refuses_results_of_another_model(tmp_path, monkeypatch):
    """The card's figures must be this model's: results measured on another file (or not saying
    which) are refused with a line naming both files; nothing is shipped."""
    monkeypatch.setattr(rel, "WEIGHTS", tmp_path / "weights")
    g = {"AE_cm": 40.0, "WE_cm": 80.0, "median_cm": 15.0, "within_5cm_pct": 10.0, "within_10cm_pct": 30.0, "gross_pct": 40.0,
         "flip_share_of_gross_pct": 70.0}  # fmt: skip
    run, other = _depth_run(tmp_path, "small", 20), _depth_run(tmp_path, "other", 20)
    torch_file = other / "model.pt"  # another training: other weights, other bytes
    save_model_file(create_model("unet", **{**tiny_overrides("unet"), "base_width": 6}), torch_file)
    _depth_results(tmp_path / "results.json", other, {"full-full/inter/clean": g})
    with pytest.raises(BodycorrError) as e:
        rel.release(run, tmp_path / "results.json", "depth")
    msg = str(e.value)
    assert "results.json" in msg and str(other / "model.pt") in msg and str(run / "model.pt") in msg and "\n" not in msg
    (tmp_path / "old.json").write_text(json.dumps({"suite": "s", "views": 8, "groups": {"full-full/inter/clean": g}}))
    with pytest.raises(BodycorrError, match="do not record which model"):
        rel.release(run, tmp_path / "old.json", "depth")
    assert not (tmp_path / "weights").exists()
    # the image model's card: the row of this file, by its digest, not the first row
    (tmp_path / "s").mkdir()
    srun = _surface_run(tmp_path / "s")
    res = json.loads((tmp_path / "s" / "results.json").read_text())
    res["results"][0]["model_sha256"] = "0" * 64
    (tmp_path / "s" / "results.json").write_text(json.dumps(res))
    with pytest.raises(BodycorrError, match="no figures for model file"):
        rel.release(srun, tmp_path / "s" / "results.json", "bm")
    assert not (tmp_path / "weights").exists()
