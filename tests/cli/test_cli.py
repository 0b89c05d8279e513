"""The command line: bad input gives one line on stderr and exit status 2, never a traceback."""

import subprocess
import sys

import pytest

from bodycorr.cli.main import main


def _run(args, capsys):
    code = main(args)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["generate", "--out", "{tmp}/d", "--size", "5"], "--size"),
        (["generate"], "--out"),
        (["generate", "--out", "{tmp}/d", "--count", "0", "--size", "32"], "--count"),
        (["match", "{tmp}/nope.ply", "{tmp}/nope2.ply", "-o", "{tmp}/o", "--model", "{tmp}/missing.pt"], "missing.pt"),
        (["train", "--config", "no-such-config"], "not found"),
        (["generate", "--out", "{tmp}/file/sub", "--size", "32", "--count", "1"], "file"),
        (["track", "{tmp}/nope", "-o", "{tmp}/o"], "not a folder"),
        (["track", "synthetic", "-o", "{tmp}/o", "--phenotypes", "0.5,2"], "--phenotypes"),
        (["track", "{tmp}/nope", "-o", "{tmp}/o", "--phenotypes", "truth"], "synthetic"),
        (["track", "synthetic", "-o", "{tmp}/o", "--free-space", "-1"], "--free-space"),
    ],
)
def test_bad_input_is_one_line(args, needle, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    code, err = _run([a.format(tmp=tmp_path) for a in args], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bodycorr: error:") and needle in lines[0]


@pytest.mark.slow
def test_preview_contact_sheet(tmp_path, capsys):
    code, _ = _run(["generate", "--preview", str(tmp_path / "p.png"), "--count", "4", "--size", "64"], capsys)
    assert code == 0
    from PIL import Image

    im = Image.open(tmp_path / "p.png")
    assert im.size[0] > 300 and im.size[1] > 100


def test_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "bodycorr.cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "match" in out.stdout and "generate" in out.stdout
