"""The clothed synthetic suites by name in the harness: synthetic-v1-clothed and its remeshed bodies."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_clothed_suites_by_name():
    from bodycorr.data.suite import load_suite
    from bodycorr.evaluation.synthetic import RemeshedPairSuite, pair_suite

    s = pair_suite("synthetic-v1-clothed", max_pairs=2, progress=False)
    bare = load_suite("synthetic-v1")
    assert s.name == "synthetic-v1-clothed" and [p.group for p in s.pairs] == ["inter", "inter", "intra", "intra"]
    assert [(p.source, p.target) for p in s.pairs] == [(bare.shape_name(int(a)), bare.shape_name(int(b)))
                                                       for a, b in np.r_[bare.inter[:2], bare.intra[:2]]]  # fmt: skip
    target = s.pairs[0].target
    mesh = s.surface(target).mesh
    i = s.index[target]
    assert np.allclose(mesh.vertices, s.suite.vertices[i]) and not np.allclose(mesh.vertices, bare.vertices[i], atol=1e-3)
    v = s.view(target, "noisy")
    assert (v.vertex >= 0).mean() > 0.9 and v.vertex.max() < mesh.num_vertices
    assert s.meta["suite_parameters_sha256"] != bare.parameters_sha256[:16]
    for name in ("synthetic-v1-clothed-remeshed", "synthetic-v1-remeshed-clothed"):
        r = pair_suite(name, max_pairs=1, progress=False)
        assert isinstance(r, RemeshedPairSuite) and r.name == "synthetic-v1-clothed-remeshed"
        assert r.remeshed.suite.name == "synthetic-v1-clothed" and len(r.pairs) == 2
        m = r.surface(r.pairs[0].target).mesh
        assert m.num_vertices != len(bare.vertices[0])
