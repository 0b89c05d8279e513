"""bodycorr view in a real browser: headless chromium (driven through the DevTools protocol) shows
the source and the target in the colour code, and a click on the source marks its match."""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyshapes import icosphere

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars"]  # fmt: skip
SIZE = (1280, 800)
PANEL = 360  # the control panel covers the right edge of the page
BACKGROUND = 255


class Chromium:
    """Headless chromium on a page, driven through the DevTools protocol (the websockets client viser brings)."""

    def __init__(self, url: str):
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="bodycorr-chromium-")
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={SIZE[0]},{SIZE[1]}",
                                      "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 20
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start")
            time.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        self.ws = connect(next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"], max_size=None)
        self.ids = itertools.count(1)
        self.call("Page.navigate", url=url)

    def call(self, method: str, **params):
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def text(self) -> str:
        return self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''", returnByValue=True)["result"].get("value", "")

    def screenshot(self) -> tuple[np.ndarray, bytes]:
        from PIL import Image

        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), png

    def click(self, x: int, y: int) -> None:
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def match_folder(tmp_path_factory):
    """``bodycorr match`` outputs (the real writer) of two tiny "bodies" (stretched icospheres), plain map."""
    from bodycorr.geometry.mesh import Mesh
    from bodycorr.matching.extract import DescriptorExtractor
    from bodycorr.matching.inputs import ScanInput
    from bodycorr.matching.pipeline import match_scans, write_outputs
    from bodycorr.models.registry import create_model

    torch.manual_seed(0)
    ex = DescriptorExtractor(create_model("unet", base_width=4, max_width=16, num_levels=3).eval(), size=32)
    v, f = icosphere(3)
    a = Mesh(v * [0.25, 0.15, 0.85], f, "a")
    b = Mesh(v * [0.3, 0.18, 0.8] + [1.0, 0, 0], f, "b")
    res = match_scans(ScanInput("mesh", a.vertices, "a.ply", mesh=a), ScanInput("mesh", b.vertices, "b.ply", mesh=b), ex,
                      views=4, up="z", refine="none")  # fmt: skip
    out = tmp_path_factory.mktemp("match")
    write_outputs(res, out)
    return out


def _coloured(img: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels that are not the white background."""
    return np.abs(img.astype(np.int32) - BACKGROUND).sum(-1) > 40


def _hue_bins(img: np.ndarray, mask: np.ndarray, bins: int = 12, min_pixels: int = 30) -> int:
    """How many of ``bins`` hue bins hold at least ``min_pixels`` saturated pixels of ``mask``."""
    from matplotlib.colors import rgb_to_hsv

    hsv = rgb_to_hsv(img[mask].astype(np.float64) / 255)
    hsv = hsv[(hsv[:, 1] > 0.25) & (hsv[:, 2] > 0.15)]
    counts = np.bincount((hsv[:, 0] * bins).astype(int) % bins, minlength=bins)
    return int((counts >= min_pixels).sum())


def test_viewer_in_headless_chromium(match_folder, tmp_path):
    from bodycorr.apps.viewer import MARKER, start_viewer

    t0 = time.monotonic()
    v = start_viewer(match_folder, port=0)
    browser = None
    try:
        browser = Chromium(v.url)
        h, w = SIZE[1], SIZE[0]
        ok, img, png, previous = False, None, b"", None
        while time.monotonic() - t0 < 25:  # until the scene is in (the panel's text, both shapes) and still (nodes fade in)
            time.sleep(0.5)
            img, png = browser.screenshot()
            h, w = img.shape[:2]
            canvas = _coloured(img)
            canvas[:160], canvas[:, w - PANEL :], canvas[h - 60 :] = False, False, False  # the notice, the panel, the axes
            left, right = canvas[:, : w // 2], canvas[:, w // 2 :]
            drawn = "Click a point" in browser.text() and left.mean() > 0.002 and right.mean() > 0.002
            still = previous is not None and previous.shape == img.shape and np.abs(previous.astype(np.int32) - img).max() <= 8
            if drawn and still:
                ok = True
                break
            previous = img
        shot = Path(os.environ.get("BODYCORR_VIEWER_SCREENSHOT", tmp_path / "viewer.png"))
        shot.write_bytes(png)
        assert ok, f"the scene did not show both shapes within 25 s (screenshot: {shot})"
        assert _hue_bins(img, canvas) >= 4, f"too few hues: the colour code is missing (screenshot: {shot})"
        assert "match: " in browser.text() and "source colours" in browser.text()
        # a click on the source (left) marks it and its match
        ys, xs = np.nonzero(left)
        k = np.argsort(np.hypot(xs - np.median(xs), ys - np.median(ys)))[0]
        browser.click(int(xs[k]), int(ys[k]))
        deadline = time.monotonic() + 8
        while v.selection is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert v.selection is not None and v.selection.info["side"] == "source"
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            time.sleep(0.5)
            img, png = browser.screenshot()
            magenta = (np.abs(img.astype(np.int32) - MARKER).sum(-1) < 60).sum()
            if magenta > 20 and "confidence" in browser.text():
                break
        shot.with_name(shot.stem + "_click.png").write_bytes(png)
        assert magenta > 20, "no selection marker drawn"
        assert f"source point {v.selection.info['source']}" in browser.text()
    finally:
        if browser is not None:
            browser.close()
        v.stop()
