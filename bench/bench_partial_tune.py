"""The default refinement of partial scans (``auto``: the view through Anny fitted onto it, the full
mesh through a spectral map to the template) with each rule for keeping one body-fit candidate, on
tuning pairs kept apart from the benchmark's (noisy Kinect view -> remeshed full mesh).

Run:  .venv/bin/python bench/bench_partial_tune.py [--inter 12] [--intra 8] [--variants residual,energy/body/400,...]

A variant is SELECT[/MODEL[/ITERATIONS]]: the body fit's selection rule, what deforms (body+graph
or body) and its Adam steps (AutoRefiner's partial_select, partial_model, partial_iterations).

Pairs: synthetic-v1-remeshed shapes, not among the 100 test pairs (bench_spectral_tune.tuning_pairs).
Prints mean, worst pair and flips per group and rule.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inter", type=int, default=12)
    ap.add_argument("--intra", type=int, default=8)
    ap.add_argument("--variants", default="residual,residual/body/400")
    ap.add_argument("-o", "--out", default="out/partial-tune")
    a = ap.parse_args()
    from bench_spectral_tune import print_groups, tuning_pairs

    from bodycorr.evaluation.harness import HarnessConfig, RefinerMethod, make_method, run_benchmark
    from bodycorr.evaluation.synthetic import RemeshedPairSuite

    suite = RemeshedPairSuite("synthetic-v1")
    suite.pairs = tuning_pairs(suite, a.inter, a.intra, seed=11)
    plain = make_method("shipped")
    methods = [plain]
    for v in a.variants.split(","):
        parts = v.split("/")
        opts = dict(partial_select=parts[0])
        if len(parts) > 1:
            opts["partial_model"] = parts[1]
        if len(parts) > 2:
            opts["partial_iterations"] = int(parts[2])
        methods.append(RefinerMethod(plain.extractor, name=f"auto {v}", refiner="auto", **opts))
    res = run_benchmark(suite, methods, HarnessConfig(kinds=("partial-full",), noise=("noisy",), workers=1), a.out, progress=True)
    print_groups(res)


if __name__ == "__main__":
    main()
