"""Shared fixtures. Tests run on CPU by default; set BODYCORR_TEST_DEVICES=cpu,cuda to add CUDA."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("WARP_LOG_LEVEL", "error")


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        devices = os.environ.get("BODYCORR_TEST_DEVICES", "cpu").split(",")
        metafunc.parametrize("device", devices)


@pytest.fixture(scope="session")
def body_model():
    from bodycorr.body.anny_model import get_body_model

    return get_body_model()


@pytest.fixture(scope="session")
def template():
    from bodycorr.body.template import get_template

    return get_template()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def saved_figures(monkeypatch):
    """The matplotlib figures the code under test saves and closes, kept open for inspection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs: list = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    yield figs
    for f in figs:
        real_close(f)
