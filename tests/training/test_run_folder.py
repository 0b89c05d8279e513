"""A training run folder holds one run: a fresh start clears an earlier run's log and weights, a
resumed run drops the log records written after its checkpoint (none is repeated)."""

import json

import pytest

from bodycorr.training.loop import start_run_folder


def _log(out, steps, tail=""):
    (out / "log.jsonl").write_text("".join(json.dumps({"step": s, "total": 1.0}) + "\n" for s in steps) + tail)


def test_resume_keeps_the_log_up_to_the_checkpoint(tmp_path):
    _log(tmp_path, [10, 20, 30], tail='{"step": 40, "tot')  # interrupted while writing step 40
    start_run_folder(tmp_path, 20)
    assert [json.loads(x)["step"] for x in (tmp_path / "log.jsonl").read_text().splitlines()] == [10, 20]


def test_fresh_start_clears_the_older_run(tmp_path):
    _log(tmp_path, [10, 20])
    for name in ("last.pt", "model.pt", "config.json", "val_views.npz"):
        (tmp_path / name).write_bytes(b"old")
    start_run_folder(tmp_path, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "val_views.npz"]


@pytest.mark.slow
def test_no_resume_into_an_old_run_starts_a_clean_log(tmp_path, capsys):
    from bodycorr.cli.main import main

    out = tmp_path / "run"
    assert main(["train", "--config", "bodymap-tiny", "--out", str(out)]) == 0
    first = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert main(["train", "--config", "bodymap-tiny", "--out", str(out), "--no-resume", "--steps", "2"]) == 0
    again = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert first[-1] == 4 and again[-1] == 2 and again == sorted(again) and max(again) == 2
