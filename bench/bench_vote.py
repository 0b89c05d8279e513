"""Multi-view aggregation of per-vertex descriptors: the plain mean against agreement voting.

Each full mesh gets per-vertex descriptors from ``--views`` renders; with voting
(``DescriptorExtractor(vote_iters=n)``) views that disagree with the majority at a vertex are
outvoted instead of averaged in. Scored through the harness on remeshed synthetic-v1 full-full
pairs, plain nearest neighbours (no refinement), so the aggregation's own effect shows.

Run:  .venv/bin/python bench/bench_vote.py [--model shipped] [--max-pairs 10] [--iters 0,1,3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shipped")
    ap.add_argument("--max-pairs", type=int, default=10)
    ap.add_argument("--iters", default="0,1,3")
    ap.add_argument("--power", type=float, default=4.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("-o", "--out", default="out/bench-vote")
    a = ap.parse_args()
    from bench_spectral_tune import print_groups

    from bodycorr.evaluation.harness import HarnessConfig, ModelMethod, make_method, run_benchmark
    from bodycorr.evaluation.synthetic import pair_suite
    from bodycorr.matching.extract import DescriptorExtractor

    base = make_method(a.model)
    methods = []
    for it in (int(x) for x in a.iters.split(",")):
        ex = base.extractor
        ex = DescriptorExtractor(ex.model, size=ex.size, device=str(ex.device), batch_size=ex.batch_size, vote_iters=it, vote_power=a.power)
        methods.append(ModelMethod(ex, name=f"vote {it}" if it else "mean", views=base.views))
    res = run_benchmark(pair_suite("synthetic-v1-remeshed", a.max_pairs), methods,
                        HarnessConfig(kinds=("full-full",), max_points=1000, workers=a.workers), a.out, progress=True)  # fmt: skip
    print_groups(res)


if __name__ == "__main__":
    main()
