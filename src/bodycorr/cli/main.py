"""The ``bodycorr`` command: thin subcommands, each parsing into a config and calling one library function."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from bodycorr.common.errors import BodycorrError


def _cmd_generate(a: argparse.Namespace) -> None:
    from bodycorr.data.views import ViewConfig

    cfg = ViewConfig(size=a.size, noise=a.noise, framing=a.framing, clothed_share=a.clothed_share)
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

    cfg = load_config(a.config)  # a depth (TrainConfig) or image-to-surface (SurfaceTrainConfig) config
    over = {}
    if a.steps:
        over["steps"] = a.steps
    if a.threads:
        over["threads"] = a.threads
    if a.workers is not None:
        over["workers"] = a.workers
    if a.device:
        over["device"] = a.device
    for flag, key in (("cpu_hours", "max_cpu_s"), ("snapshot_cpu_hours", "snapshot_cpu_s")):
        if getattr(a, flag) is not None:
            if not hasattr(cfg, key):
                raise BodycorrError(f"train --{flag.replace('_', '-')}: config {cfg.name} (an image-model run) does not support it.")
            over[key] = getattr(a, flag) * 3600.0
    cfg = dataclasses.replace(cfg, **over)
    if getattr(cfg, "task", "depth") == "surface":
        from bodycorr.training.surface import train_surface as train
    else:
        from bodycorr.training.loop import train
    out = a.out or f"runs/{cfg.name}"
    rec = train(cfg, out, resume=not a.no_resume)
    _emit(a, _train_report(rec, out), {k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()})


def _train_report(rec: dict, out: str) -> str:
    parts = [f"trained to step {rec['step']}" if "step" in rec else "nothing left to train"]
    if "total" in rec:
        parts.append(f"loss {rec['total']:.3f}")
    if "val_mean_cm" in rec:
        parts.append(f"validation: mean {rec['val_mean_cm']:.1f} cm, median {rec['val_median_cm']:.1f} cm, {rec['val_gross_pct']:.1f} % over 20 cm")
    if "val_geo_mean_cm" in rec:
        parts.append(f"validation: geodesic mean {rec['val_geo_mean_cm']:.1f} cm, median {rec['val_geo_median_cm']:.1f} cm, "
                     f"silhouette {rec['val_sil_acc_pct']:.1f} %")  # fmt: skip
    return ", ".join(parts) + f"; model in {Path(out) / 'model.pt'}, log in {Path(out) / 'log.jsonl'}"


def _cmd_match(a: argparse.Namespace) -> None:
    from bodycorr.matching.pipeline import MatchOptions, match_files

    res = match_files(a.source, a.target, a.out, MatchOptions(model=a.model, views=a.views, up=a.up, units=a.units,
                                                                intrinsics=a.intrinsics, refine=a.refine, strict=a.strict))  # fmt: skip
    _emit(a, res, lambda: _read_json(Path(a.out) / "summary.json"))


def _cmd_register(a: argparse.Namespace) -> None:
    from bodycorr.matching.register import RegisterOptions, register_file

    res = register_file(a.scan, a.out, RegisterOptions(model=a.model, views=a.views, up=a.up, units=a.units, intrinsics=a.intrinsics, fit=a.fit,
                                                       strict=a.strict))  # fmt: skip
    _emit(a, res, lambda: _read_json(Path(a.out) / "summary.json"))


def _cmd_demo(a: argparse.Namespace) -> None:
    from bodycorr.matching.demo import run_demo, run_image_demo
    from bodycorr.matching.image import DEFAULT_IMAGE_MODEL

    text = [run_demo(a.out, seed=a.seed, model=a.model, refine=a.refine)]
    if DEFAULT_IMAGE_MODEL.exists():
        text.append(run_image_demo(a.out, seed=a.seed))
    _emit(a, "\n".join(text), lambda: {"match": _read_json(Path(a.out) / "summary.json"),
                                        "image": _read_json(Path(a.out) / "image" / "summary.json") if len(text) > 1 else None})  # fmt: skip


def _cmd_track(a: argparse.Namespace) -> None:
    from dataclasses import replace

    from bodycorr.apps.track import TrackConfig, run_track

    cfg = TrackConfig(model=a.deform)
    if a.free_space is not None:
        if not a.free_space >= 0:
            raise BodycorrError(f"--free-space {a.free_space}: give a weight >= 0 (0 turns the term off).")
        cfg = replace(cfg, pose=replace(cfg.pose, free_space=a.free_space))
    if a.smoothing is not None:
        cfg = replace(cfg, smoothing=a.smoothing)
    cfg.check()
    res = run_track(a.seq, a.out, model=a.model, frames=a.frames, intrinsics=a.intrinsics, config=cfg, seed=a.seed, phenotypes=a.phenotypes,
                    progress=True, strict=a.strict)
    _emit(a, res, lambda: _read_json(Path(a.out) / "track.json"))


def _cmd_benchmark(a: argparse.Namespace) -> None:
    from bodycorr.evaluation.harness import HarnessConfig, format_comparison, format_issues, make_methods, run_benchmark

    if a.registrations and a.meshes:
        raise BodycorrError("benchmark: give --registrations DIR or --meshes DIR, not both.")
    if a.registrations or a.meshes:
        from bodycorr.evaluation.userdata import UserSuiteConfig, load_user_suite

        suite = load_user_suite(UserSuiteConfig(
            folder=a.registrations or a.meshes, format="registrations" if a.registrations else "index-files",
            pairs=a.pairs, name_rule=a.name_rule, gt_dir=a.gt_dir, gt_suffix=a.gt_suffix, gt_layout=a.gt_layout,
            index_base=a.index_base, symmetry=a.symmetry, units=a.units, up=a.up, geodesic=a.geodesic,
            max_pairs=a.max_pairs, seed=a.seed))  # fmt: skip
    else:
        from bodycorr.evaluation.synthetic import pair_suite

        suite = pair_suite(a.suite, a.max_pairs, geodesic=a.geodesic)
    specs = ([a.model] if a.model or not a.compare else []) + list(a.compare or [])
    cfg = HarnessConfig(kinds=tuple(a.kinds.split(",")), noise=tuple(a.noise.split(",")), max_points=a.points, seed=a.seed,
                        workers=a.workers)  # fmt: skip
    res = run_benchmark(suite, make_methods(specs, views=a.views), cfg, a.out)
    print(format_comparison(res))
    if res.issues:
        print(format_issues(res))
    print(f"results in {a.out}/results.json, plots in {a.out}/ (cumulative.png, pairs_sorted.png, heatmap.png)")


def _cmd_image(a: argparse.Namespace) -> None:
    from bodycorr.matching.image import run_image

    res = run_image(a.image, a.out, model=a.model, progress=True, strict=a.strict)
    if res["empty"]:
        text = f"no person found in {a.image}: wrote an empty silhouette to {a.out}"
    else:
        scaled = f", scaled from {res['scaled_from'][1]}x{res['scaled_from'][0]}" if res.get("scaled_from") else ""
        pl = res["plausibility"]
        looks = "looks like a person" if pl["is_person"] else "does NOT look like a person"
        text = (f"mapped {res['person_pixels']} person pixels of {a.image} ({res['size'][1]}x{res['size'][0]}{scaled}) to the template, "
                f"mean confidence {res['mean_confidence']:.2f}, {res['seconds']:.2f} s; outputs in {a.out}; "
                f"silhouette: {looks} (plausibility {pl['score']:.2f}; {pl['share'] * 100:.0f} % of the image, {pl['components']} "
                f"blob{'s' if pl['components'] != 1 else ''}, the largest {pl['largest_share'] * 100:.0f} % of it)")  # fmt: skip
    _emit(a, text, res)


def _cmd_transfer(a: argparse.Namespace) -> None:
    from bodycorr.apps.transfer import run_transfer

    res = run_transfer(a.source, a.target, a.out, model=a.model)
    text = (f"painted the person of {a.source} onto the person of {a.target} ({res['source_pixels']} and {res['target_pixels']} "
            f"person pixels; {res['texture_coverage'] * 100:.0f} % of the template seen in {a.source}); outputs in {a.out}")  # fmt: skip
    _emit(a, text, res)


def _cmd_view(a: argparse.Namespace) -> None:
    from bodycorr.apps.viewer import serve

    if not 0 <= a.port <= 65535:
        raise BodycorrError(f"--port {a.port}: give a port in 0..65535 (0: any free one).")
    serve(a.folder, port=a.port, host=a.host)


def _cmd_benchmark_image(a: argparse.Namespace) -> None:
    from bodycorr.evaluation.surface import SurfaceBenchConfig, format_surface_table, run_surface_benchmark

    specs = ([a.model] if a.model or not a.compare else []) + list(a.compare or [])
    cfg = SurfaceBenchConfig(images=a.images, frames=a.frames, size=a.size, seed=a.seed)
    res = run_surface_benchmark(specs, cfg, a.out)
    print(format_surface_table(res))
    print(f"results in {a.out}/results.json, pictures in {a.out}/")


def _cmd_release(a: argparse.Namespace) -> None:
    from bodycorr.cli.release import release

    print(f"wrote {release(a.run, a.results, a.name, a.command, a.note)}")


def _cmd_export(a: argparse.Namespace) -> None:
    if a.ply:
        if not a.result:
            raise BodycorrError("export --ply: give the result folder too: bodycorr export --ply OUT_DIR RESULT_DIR.")
        if a.model or a.size or a.no_check:
            raise BodycorrError("export --ply: --model, --size and --no-check belong to --onnx. Drop them.")
        from bodycorr.matching.ply_export import export_result_ply

        for f in export_result_ply(a.result, a.ply):
            print(f"wrote {f}")
        return
    if a.result:
        raise BodycorrError(f"export --onnx: unexpected argument {a.result!r}. Pick the network with --model FILE|depth|image; "
                            "for coloured meshes of a result folder use --ply OUT_DIR RESULT_DIR.")  # fmt: skip
    from bodycorr.matching.describe import DEFAULT_MODEL
    from bodycorr.matching.image import DEFAULT_IMAGE_MODEL
    from bodycorr.models.export import export_onnx

    shipped = {None: DEFAULT_MODEL, "depth": DEFAULT_MODEL, "image": DEFAULT_IMAGE_MODEL}
    model = a.model if a.model not in shipped or (a.model and Path(a.model).is_file()) else shipped[a.model]
    if a.model in shipped and not Path(model).is_file():
        raise BodycorrError(f"export --onnx: no shipped model at {model}. Pass a model file with --model runs/NAME/model.pt.")
    print(export_onnx(model, a.onnx, size=a.size, verify=not a.no_check))


def _scan_options(p: argparse.ArgumentParser) -> None:
    """The options of commands that describe scans with the depth model (match, register)."""
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--model", help="model file (default: the shipped model)")
    p.add_argument("--views", type=int, default=48)
    p.add_argument("--up", help="up axis: x, y, z, -x, -y, -z or 'auto' (default)", default="auto")
    p.add_argument("--units", default="auto", choices=["auto", "m", "cm", "mm"])
    p.add_argument("--intrinsics", help="intrinsics JSON for depth images (default: Kinect v2)")
    p.add_argument("--strict", action="store_true",
                   help="refuse an input that does not look like a person (by default: a warning on stderr and lowered confidences)")


def _json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the machine-readable summary (JSON) instead of the short report")


def _emit(a: argparse.Namespace, text: str, data) -> None:
    """Print the short human report, or with ``--json`` the summary (``data``: a dict, or a function giving one)."""
    if getattr(a, "json", False):
        print(json.dumps(data() if callable(data) else data, indent=2, sort_keys=True, default=str))
    else:
        print(text)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


REFINERS = ["auto", "none", "spectral", "body", "template", "register"]  # bodycorr.matching.refiners' registry (a test keeps them equal)


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
    g.add_argument("--clothed-share", type=float, default=0.0,
                   help="share of people wearing garments (tops, trousers, shorts, skirts, dresses, hair volume); 0 = bare bodies")
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
    t.add_argument("--cpu-hours", type=float, help="stop after this many CPU-hours (the run and its data workers, across resumes)")
    t.add_argument("--snapshot-cpu-hours", type=float, help="keep a model every this many CPU-hours in OUT/snapshots/")
    t.add_argument("--no-resume", action="store_true")
    _json_option(t)
    t.set_defaults(func=_cmd_train)

    m = sub.add_parser("match", help="dense correspondences between two scans (mesh, point cloud or depth image)")
    m.add_argument("source")
    m.add_argument("target")
    _scan_options(m)
    m.add_argument("--refine", default="auto", choices=REFINERS,
                   help="auto (default): Anny fitted onto both scans (a complete mesh or cloud from its spectral map to the template "
                        "and its descriptors, a partial scan from its descriptors) and the map read through the two fits, "
                        "writing them; "
                        "none: plain nearest neighbours; spectral: ZoomOut anchored to the descriptors, whole-body flips tested; "
                        "template: fit the body template onto both scans (mirror-aware) and map through it, writing the fitted "
                        "templates; body: the same with the Anny body (pose and shape) fitted first; register: deform the source "
                        "mesh onto the target from the matches")  # fmt: skip
    _json_option(m)
    m.set_defaults(func=_cmd_match)

    rg = sub.add_parser("register", help="fit the body template onto a scan: a mesh in the template's topology, Anny's pose and shape, "
                                         "each scan point's template coordinates, a picture of the fit")
    rg.add_argument("scan")
    _scan_options(rg)
    rg.add_argument("--fit", default="body+graph", choices=["body+graph", "body"],
                    help="body+graph (default): Anny's pose and shape, then a deformation graph for the detail; body: Anny alone")
    _json_option(rg)
    rg.set_defaults(func=_cmd_register)

    d = sub.add_parser("demo", help="match a noisy partial scan of one synthetic person to another person's full mesh, and map an RGB image to the template")
    d.add_argument("-o", "--out", default="out/demo")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--model", help="model file (default: the shipped model)")
    d.add_argument("--refine", choices=[r for r in REFINERS if r != "register"], default="auto",
                   help="refine as `match --refine` does (default auto: Anny fitted onto the view and onto the full mesh, "
                        "the latter from its spectral map to the template, and the map read through the fits; none: the plain map)")
    _json_option(d)
    d.set_defaults(func=_cmd_demo)
    tr = sub.add_parser("track", help="track the template through a depth sequence (performance capture from one camera)")
    tr.add_argument("seq", help="folder of depth images (PNG mm / NPY m, sorted by name), or 'synthetic' (engine motion with truth)")
    tr.add_argument("-o", "--out", required=True, help="output folder (frame_NNNN.ply, track.gif, errors.png)")
    tr.add_argument("--model", help="model file (default: the shipped model)")
    tr.add_argument("--frames", type=int, help="number of frames (default: all; synthetic: 20)")
    tr.add_argument("--intrinsics", help="intrinsics JSON for the depth images (default: Kinect v2)")
    tr.add_argument("--deform", choices=["body", "body+graph", "graph"], default="body",
                    help="what deforms each frame from rest: Anny's bones at a fixed shape (default), then a deformation graph, or the graph alone")
    tr.add_argument("--phenotypes", help="the person's shape: 6 values in [0, 1] (gender,age,muscle,weight,height,proportions), "
                                         "or 'truth' for a synthetic sequence (default: estimated from 15 frames)")
    tr.add_argument("--seed", type=int, default=0, help="synthetic sequence: which test-split person")
    tr.add_argument("--free-space", type=float,
                    help="weight of the body fit's free-space term: no body vertex in front of the measured depth "
                         "(default 0: off; 3 was the tuned weight; the frames must hold only the person)")  # fmt: skip
    tr.add_argument("--smoothing", type=float,
                    help="weight of the previous output in each frame's output, in [0, 1) (default 0.3; 0: each frame's own fit); "
                         "the fits themselves never see another frame")  # fmt: skip
    _json_option(tr)
    tr.add_argument("--strict", action="store_true",
                    help="refuse a sequence whose first frame does not look like a person (by default: a warning on stderr)")
    tr.set_defaults(func=_cmd_track)

    b = sub.add_parser("benchmark", help="measure correspondence quality on a synthetic suite or your own folder of meshes",
                       description="Geodesic correspondence errors (on each target's own surface, cm) of one or more methods "
                                   "on the same pairs: the synthetic suite, a folder of same-topology registrations "
                                   "(--registrations) or of meshes with ground-truth index files (--meshes).")  # fmt: skip
    b.add_argument("--suite", default="synthetic-v1", help="synthetic suite (when no folder is given): synthetic-v1 (bodies in the template's vertex order), "
                        "synthetic-v1-remeshed (the same bodies, each remeshed on its own: the honest full-mesh figures), "
                        "synthetic-v1-clothed (the same people in clothes: tops, trousers, shorts, skirts, dresses, hair; truth = the body under them) "
                        "or synthetic-v1-clothed-remeshed (those, remeshed)")
    b.add_argument("--registrations", metavar="DIR", help="folder of registrations in one topology (vertex i = same point)")
    b.add_argument("--meshes", metavar="DIR", help="folder of meshes, each with a ground-truth index file (see --gt-*)")
    b.add_argument("--pairs", metavar="FILE", help="pair list: 'source target [group]' per line (default: all pairs by --name-rule)")
    b.add_argument("--name-rule", default=r"(?P<subject>.+)_(?P<pose>[^_]+)",
                   help="regex on file stems with a (?P<subject>...) group: same subject = intra, else inter")  # fmt: skip
    b.add_argument("--gt-dir", metavar="DIR", help="folder of the index files (default: the mesh folder)")
    b.add_argument("--gt-suffix", default=".txt", help="index file of mesh NAME.ext is NAME<suffix> (default .txt)")
    b.add_argument("--gt-layout", default="per-vertex", choices=["per-vertex", "per-reference"],
                   help="per-vertex: line i = reference point of vertex i; per-reference (.vts): line k = vertex at reference point k")  # fmt: skip
    b.add_argument("--index-base", type=int, default=0, choices=[0, 1], help="index files and --symmetry are 0- or 1-based")
    b.add_argument("--symmetry", metavar="FILE", help="left/right map: mirror vertex per vertex (registrations) or per reference point")
    b.add_argument("--units", default="auto", choices=["auto", "m", "cm", "mm"], help="units of the mesh files")
    b.add_argument("--up", default="auto", help="up axis of the folder's meshes (x, y, z, -y, ...; default: longest axis)")
    b.add_argument("--geodesic", default="graph", choices=["graph", "heat", "template"],
                   help="geodesics on each target's own surface: graph (default) or heat; synthetic suite: only the source "
                        "points whose truth is one of --points shared truth vertices (default 250; 0 = all, slow) are "
                        "evaluated; 'template' (synthetic only): every point, template table scaled to each target (fast, approximate)")  # fmt: skip
    b.add_argument("--points", type=int, help="evaluated source points per pair (0 = all; default 2000 for folders; synthetic: truth vertices shared by all pairs, default 250)")
    b.add_argument("--model", help="model file (default: the shipped model; with --compare: listed first)")
    b.add_argument("--compare", nargs="+", metavar="METHOD",
                   help="methods side by side: model files / checkpoints and baselines (baseline:rigid-nn, baseline:nn)")  # fmt: skip
    b.add_argument("-o", "--out", default="out/benchmark")
    b.add_argument("--views", type=int, default=48)
    b.add_argument("--kinds", default="full-full,partial-full,partial-partial")
    b.add_argument("--noise", default="clean,noisy")
    b.add_argument("--max-pairs", type=int, default=0,
                   help="quick check: synthetic: first N pairs of each set; folders: N pairs per group sampled with --seed")  # fmt: skip
    b.add_argument("--seed", type=int, default=0, help="seed of the point subsets, the pair sample and the rendered views")
    b.add_argument("--workers", type=int, default=2, help="processes describing shapes with models (1 = none; default 2)")
    b.set_defaults(func=_cmd_benchmark)

    im = sub.add_parser("image", help="map every person pixel of an RGB image to the body template (vertex, barycentrics, UV)")
    im.add_argument("image", help="PNG or JPEG image, or sample:NAME, a photograph shipped in scikit-image (astronaut, camera: people; "
                                  "chelsea, coffee, rocket: none)")  # fmt: skip
    im.add_argument("-o", "--out", required=True, help="output folder (correspondence.npz/.png, overlay.png, overlay_legend.png, silhouette.png, summary.json)")
    im.add_argument("--model", help="image model file (default: the shipped model)")
    im.add_argument("--strict", action="store_true",
                    help="refuse a photo whose silhouette does not look like a person (by default: a warning on stderr)")
    _json_option(im)
    im.set_defaults(func=_cmd_image)

    tf = sub.add_parser("transfer", help="paint person A's appearance onto person B through the template (texture transfer)")
    tf.add_argument("source", help="image A (appearance)")
    tf.add_argument("target", help="image B (pose and shape)")
    tf.add_argument("-o", "--out", required=True, help="output folder (transfer.png, side_by_side.png, texture.png)")
    tf.add_argument("--model", help="image model file (default: the shipped model)")
    _json_option(tf)
    tf.set_defaults(func=_cmd_transfer)

    vw = sub.add_parser("view", help="an interactive 3-D viewer in the browser for an output folder of match, register, track, image or demo")
    vw.add_argument("folder", help="output folder (the demo's: its image/ sub-folder is shown too)")
    vw.add_argument("--port", type=int, default=8080, help="port (default 8080; the next free one if taken; 0: any free one)")
    vw.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    vw.set_defaults(func=_cmd_view)

    bi = sub.add_parser("benchmark-image", help="measure image-to-template maps on synthetic test people (2D accuracy, GPS AP/AR, temporal consistency)")
    bi.add_argument("--model", help="image model file (default: the shipped model; with --compare: listed first)")
    bi.add_argument("--compare", nargs="+", metavar="MODEL", help="several image model files side by side")
    bi.add_argument("--images", type=int, default=200, help="test views (test identities only)")
    bi.add_argument("--frames", type=int, default=150, help="frames of the motion sequence for temporal consistency (0 = skip)")
    bi.add_argument("--size", type=int, default=128, help="image side in pixels (the 2D windows are in these pixels)")
    bi.add_argument("--seed", type=int, default=0)
    bi.add_argument("-o", "--out", default="out/benchmark-image")
    bi.set_defaults(func=_cmd_benchmark_image)

    r = sub.add_parser("release", help="ship a trained model into the package with its model card")
    r.add_argument("--run", required=True, help="training run folder")
    r.add_argument("--results", required=True, help="results.json from 'bodycorr benchmark'")
    r.add_argument("--name", default="depth-unet")
    r.add_argument("--command", default="", help="the training command(s) as run, when not the plain 'bodycorr train --config NAME'")
    r.add_argument("--note", default="", help="a paragraph for the card (e.g. how the run was continued)")
    r.set_defaults(func=_cmd_release)

    x = sub.add_parser("export", help="export a network to ONNX, or a result folder to coloured PLY meshes",
                       description="--onnx FILE: the depth or image network as an ONNX graph (dynamic batch, height and width; "
                                   "the input normalisation and the image decoding inside), checked against PyTorch in "
                                   "onnxruntime before it is written (needs the 'export' extra). --ply OUT_DIR RESULT_DIR: "
                                   "coloured PLY meshes of a match, demo, register or image folder, both sides in one "
                                   "correspondence colour code, for MeshLab or Blender.")  # fmt: skip
    xg = x.add_mutually_exclusive_group(required=True)
    xg.add_argument("--onnx", metavar="FILE", help="write the network to FILE (.onnx)")
    xg.add_argument("--ply", metavar="OUT_DIR", help="write coloured PLY files of RESULT_DIR to OUT_DIR")
    x.add_argument("result", nargs="?", metavar="RESULT_DIR", help="with --ply: the -o folder of match, demo, register or image")
    x.add_argument("--model", help="with --onnx: a model file, or 'depth' (default) / 'image' for the shipped depth / image model")
    x.add_argument("--size", type=int, help="with --onnx: the working size checked (default: the model's training size)")
    x.add_argument("--no-check", action="store_true", help="with --onnx: skip the onnxruntime parity check")
    x.set_defaults(func=_cmd_export)
    return p


# What each command reads and writes (argument -> noun for messages), checked before any library
# import or work: a mistyped or unwritable path fails in a second with one line, not after minutes.
_OUT_DIRS = {cmd: ("out",) for cmd in ("generate", "train", "match", "register", "demo", "track", "benchmark", "image", "transfer",
                                        "benchmark-image")} | {"export": ("ply",)}  # fmt: skip
_OUT_FILES = {"generate": ("preview",), "export": ("onnx",)}
_IN_FILES = {
    "match": (("model", "model file"), ("source", "input"), ("target", "input"), ("intrinsics", "intrinsics")),
    "register": (("model", "model file"), ("scan", "input"), ("intrinsics", "intrinsics")),
    "demo": (("model", "model file"),), "track": (("model", "model file"), ("intrinsics", "intrinsics")),
    "image": (("model", "image model file"), ("image", "image")),
    "transfer": (("model", "image model file"), ("source", "image"), ("target", "image")),
    "benchmark-image": (("model", "image model file"),), "benchmark": (("pairs", "pair list"), ("symmetry", "symmetry file")),
    "release": (("results", "benchmark results"),),
}  # fmt: skip
_IN_DIRS = {"benchmark": (("registrations", "mesh folder"), ("meshes", "mesh folder"), ("gt_dir", "ground-truth folder")),
            "release": (("run", "training run folder"),)}  # fmt: skip


def _precheck(a: argparse.Namespace) -> None:
    """One line for a missing input or an output that cannot be written, before the command starts."""
    from bodycorr.common.errors import check_readable
    from bodycorr.common.fileio import check_output_dir, check_output_file

    for attr, what in _IN_FILES.get(a.cmd, ()):
        if a.cmd == "image" and attr == "image":
            from bodycorr.data.samples import check_sample, is_sample

            if is_sample(a.image):
                check_sample(a.image)
                continue
        if getattr(a, attr, None):
            check_readable(getattr(a, attr), what)
    for attr, what in _IN_DIRS.get(a.cmd, ()):
        d = getattr(a, attr, None)
        if d and not Path(d).is_dir():
            raise BodycorrError(f"{what} {d}: {'not a folder' if Path(d).exists() else 'no such folder'}. Check the path.")
    for attr in _OUT_DIRS.get(a.cmd, ()):
        if getattr(a, attr, None):
            check_output_dir(getattr(a, attr))
    for attr in _OUT_FILES.get(a.cmd, ()):
        if getattr(a, attr, None):
            check_output_file(getattr(a, attr))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("WARP_LOG_LEVEL", "error")
    args = build_parser().parse_args(argv)
    try:
        _precheck(args)
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
