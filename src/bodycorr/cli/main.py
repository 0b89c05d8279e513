"""The ``bodycorr`` command: thin subcommands, each parsing into a config and calling one library function."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from bodycorr.common.errors import BodycorrError


def _cmd_generate(a: argparse.Namespace) -> None:
    from bodycorr.data.views import ViewConfig

    cfg = ViewConfig(size=a.size, noise=a.noise, framing=a.framing)
    if a.preview:
        from bodycorr.data.preview import contact_sheet
        from bodycorr.data.views import ViewGenerator

        gen = ViewGenerator(dataclasses.replace(cfg, views_per_body=1), a.split, a.seed)
        views = [gen.views_of_body(b)[0] for b in range(24 if a.count is None else a.count)]
        path = contact_sheet(views, a.preview, title=f"bodycorr engine preview: {len(views)} {a.split} people (seed {a.seed})")
        print(f"wrote {path}")
        if not a.out:
            return
    if not a.out:
        raise BodycorrError("generate: give --out DIR to write shards, or --preview PNG for a contact sheet.")
    from bodycorr.data.shards import generate_shards

    paths = generate_shards(a.out, a.split, 256 if a.count is None else a.count, cfg, a.seed, a.shard_size, a.workers)
    print(f"{len(paths)} shards in {Path(a.out) / a.split}")


def _cmd_train(a: argparse.Namespace) -> None:
    from bodycorr.training.config import load_config
    from bodycorr.training.loop import train

    cfg = load_config(a.config)
    over = {}
    if a.steps:
        over["steps"] = a.steps
    if a.threads:
        over["threads"] = a.threads
    if a.workers is not None:
        over["workers"] = a.workers
    if a.device:
        over["device"] = a.device
    cfg = cfg.replace(**over)
    rec = train(cfg, a.out or f"runs/{cfg.name}", resume=not a.no_resume)
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()})


def _cmd_match(a: argparse.Namespace) -> None:
    from bodycorr.matching.pipeline import MatchOptions, match_files

    res = match_files(a.source, a.target, a.out, MatchOptions(model=a.model, views=a.views, up=a.up, units=a.units,
                                                                intrinsics=a.intrinsics))  # fmt: skip
    print(res)


def _cmd_demo(a: argparse.Namespace) -> None:
    from bodycorr.matching.demo import run_demo

    print(run_demo(a.out, seed=a.seed, model=a.model))


def _cmd_benchmark(a: argparse.Namespace) -> None:
    from bodycorr.evaluation.synthetic import SuiteEvalConfig, evaluate_suite, format_table
    from bodycorr.matching.pipeline import load_extractor

    cfg = SuiteEvalConfig(suite=a.suite, views=a.views, max_pairs=a.max_pairs,
                          kinds=tuple(a.kinds.split(",")), noise=tuple(a.noise.split(",")))  # fmt: skip
    res = evaluate_suite(load_extractor(a.model), cfg, a.out)
    print(format_table(res))
    print(f"results in {a.out}/results.json, plots in {a.out}/")


def _cmd_release(a: argparse.Namespace) -> None:
    from bodycorr.cli.release import release

    print(f"wrote {release(a.run, a.results, a.name)}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bodycorr", description="Dense correspondences between human bodies.")
    sub = p.add_subparsers(dest="cmd", required=True)

    g = sub.add_parser("generate", help="write shards of synthetic depth views, or a preview contact sheet")
    g.add_argument("--out", help="output folder for shards")
    g.add_argument("--split", default="train", choices=["train", "val", "test"])
    g.add_argument("--count", type=int, help="number of views (default 256; preview: 24 people)")
    g.add_argument("--size", type=int, default=256)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--noise", default="mixed", choices=["none", "kinect_v2", "mixed"])
    g.add_argument("--framing", default="crop", choices=["crop", "sensor"])
    g.add_argument("--shard-size", type=int, default=64)
    g.add_argument("--workers", type=int, default=1)
    g.add_argument("--preview", help="write a contact sheet PNG of sampled people")
    g.set_defaults(func=_cmd_generate)

    t = sub.add_parser("train", help="train a descriptor network (resumes when --out has a checkpoint)")
    t.add_argument("--config", default="depth-small", help="named config in configs/ or a .json path")
    t.add_argument("--out", help="run folder (default runs/<config name>)")
    t.add_argument("--steps", type=int)
    t.add_argument("--threads", type=int)
    t.add_argument("--workers", type=int)
    t.add_argument("--device", choices=["auto", "cpu", "cuda"])
    t.add_argument("--no-resume", action="store_true")
    t.set_defaults(func=_cmd_train)

    m = sub.add_parser("match", help="dense correspondences between two scans (mesh, point cloud or depth image)")
    m.add_argument("source")
    m.add_argument("target")
    m.add_argument("-o", "--out", required=True)
    m.add_argument("--model", help="model file (default: the shipped model)")
    m.add_argument("--views", type=int, default=48)
    m.add_argument("--up", help="up axis: x, y, z, -x, -y, -z or 'auto' (default)", default="auto")
    m.add_argument("--units", default="auto", choices=["auto", "m", "cm", "mm"])
    m.add_argument("--intrinsics", help="intrinsics JSON for depth images (default: Kinect v2)")
    m.set_defaults(func=_cmd_match)

    d = sub.add_parser("demo", help="match a noisy partial scan of one synthetic person to another person's full mesh")
    d.add_argument("-o", "--out", default="out/demo")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--model", help="model file (default: the shipped model)")
    d.set_defaults(func=_cmd_demo)
    b = sub.add_parser("benchmark", help="measure correspondence quality on a synthetic suite")
    b.add_argument("--suite", default="synthetic-v1")
    b.add_argument("--model", help="model file (default: the shipped model)")
    b.add_argument("-o", "--out", default="out/benchmark")
    b.add_argument("--views", type=int, default=48)
    b.add_argument("--kinds", default="full-full,partial-full,partial-partial")
    b.add_argument("--noise", default="clean,noisy")
    b.add_argument("--max-pairs", type=int, default=0, help="first N pairs of each set only (quick check)")
    b.set_defaults(func=_cmd_benchmark)

    r = sub.add_parser("release", help="ship a trained model into the package with its model card")
    r.add_argument("--run", required=True, help="training run folder")
    r.add_argument("--results", required=True, help="results.json from 'bodycorr benchmark'")
    r.add_argument("--name", default="depth-unet")
    r.set_defaults(func=_cmd_release)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("WARP_LOG_LEVEL", "error")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except BodycorrError as e:
        print(f"bodycorr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bodycorr: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
