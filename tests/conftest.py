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
