"""Pair summaries: the area-weighted mean beside the per-point one."""

from __future__ import annotations

import numpy as np

from bodycorr.evaluation.metrics import PairErrors, summarize


def test_summarize_weights_points_by_area():
    e = PairErrors("a->b", np.array([0.0, 10.0], dtype=np.float32), np.zeros(2, bool), weights=np.array([3.0, 1.0]))
    plain = PairErrors("c->d", np.array([4.0, 4.0], dtype=np.float32), np.zeros(2, bool))
    s = summarize([e, plain])
    assert s["AE_cm"] == 4.5 and s["AE_area_cm"] == (2.5 + 4.0) / 2 and s["WE_area_cm"] == 4.0
    assert e.area_mean_cm() == 2.5 and plain.area_mean_cm() == 4.0
