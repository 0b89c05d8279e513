"""Fixed test suites rebuilt from parameters shipped with the package: synthetic-v1 (FAUST's layout on Anny).

A suite is data, not a sampling recipe: its people, poses, cameras and noise streams are stored in
``data/suites/<name>.npz`` (:func:`freeze_parameters` drew them once) and each machine only
re-poses Anny, renders and adds the noise. Drawing the poses again would rerun the pose sampler's
rejection tests, whose outcome may change with the code or the machine (the first figures were
measured on a suite drawn on another machine, which did not come out the same here).

Clothed variants (``synthetic-v1-clothed``): the same people, poses, cameras and noise streams,
each person wearing one outfit (:mod:`bodycorr.render.garments`) in all its poses, frozen in
``data/suites/<name>-clothed.npz`` (:func:`freeze_outfits`). The full meshes are the clothed bodies
(still in the template's vertex order: vertex i is the garment point over template vertex i) and
each view pixel's truth is the body point under the garment.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bodycorr.body.anny_model import get_body_model
from bodycorr.body.shape import identity_rng, sample_identity
from bodycorr.body.template import get_template
from bodycorr.common.cache import cached_arrays, content_hash
from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.camera import Camera, Intrinsics
from bodycorr.geometry.mesh import Mesh
from bodycorr.render.appearance import body_coords
from bodycorr.render.frame import render
from bodycorr.render.garments import GARMENTS_VERSION, GarmentConfig, Outfit, clothe, pack_outfits, sample_outfit, unpack_outfits
from bodycorr.render.noise import DepthNoiseConfig, add_depth_noise
from bodycorr.render.raycast import RayCaster
from bodycorr.render.rig import random_camera
from bodycorr.render.truth import body_truth

SUITES = {
    # 10 test identities x 10 poses; one Kinect v2 view of each; 60 intra- and 40 inter-subject pairs.
    "synthetic-v1": dict(identities=10, poses=10, intra=60, inter=40, seed=2016, version=1),
}
CLOTHED_SUFFIX = "-clothed"
# The clothed variants' garments, identity by identity (cycled): every kind worn by someone.
CLOTHED_PLAN = (("tight_top", "trousers"), ("loose_top", "skirt"), ("tight_top", "shorts"), ("loose_top", "dress"),
                ("loose_top", "trousers"), ("tight_top", "skirt"), ("tight_top", "trousers"), ("tight_top", "dress"),
                ("loose_top", "shorts"), ("loose_top", "trousers"))  # fmt: skip
_OUTFIT_SEED = 11  # the clothed variant's outfit stream: identity_rng("test", identity, seed + 11)


def suite_names() -> list[str]:
    """Every suite :func:`load_suite` knows: each of :data:`SUITES` and its clothed variant."""
    return [n for base in SUITES for n in (base, base + CLOTHED_SUFFIX)]


def _split_clothed(name: str) -> tuple[str, bool]:
    """(base suite name, clothed?) of a suite name."""
    if name.endswith(CLOTHED_SUFFIX) and name[: -len(CLOTHED_SUFFIX)] in SUITES:
        return name[: -len(CLOTHED_SUFFIX)], True
    return name, False


@dataclass(frozen=True, eq=False)
class Suite:
    """A test suite.

    Attributes:
        name: suite name.
        vertices: (S, Vt, 3) float32 full meshes in template topology: vertex i of every mesh is
            template vertex i (as in registered human datasets).
        faces: (Ft, 3) the template's faces.
        identity, pose: (S,) which person and which pose each shape is.
        phenotypes: (S, 6).
        depth_clean, depth_noisy: (S, H, W) float32 Kinect v2 views, metres (0 = none).
        vertex_clean, vertex_noisy: (S, H, W) int32 true template vertex per pixel (-1 = none).
        K: (4,) fx, fy, cx, cy; R: (S, 3, 3), t: (S, 3) the view cameras (world = mesh frame).
        intra, inter: (60, 2), (40, 2) shape index pairs (source, target).
        parameters_sha256: sha256 of the parameters file it was built from (:func:`load_parameters`);
            of a clothed suite, of that file followed by its outfits file.
        outfits: a clothed suite's outfit of each identity (index = identity), else empty.
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    identity: np.ndarray
    pose: np.ndarray
    phenotypes: np.ndarray
    depth_clean: np.ndarray
    depth_noisy: np.ndarray
    vertex_clean: np.ndarray
    vertex_noisy: np.ndarray
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    intra: np.ndarray
    inter: np.ndarray
    parameters_sha256: str = ""
    outfits: tuple[Outfit, ...] = ()

    def __len__(self) -> int:
        return int(self.vertices.shape[0])

    def shape_name(self, i: int) -> str:
        return f"tr_{self.identity[i]:02d}_{self.pose[i]:02d}"

    def mesh(self, i: int) -> Mesh:
        return Mesh(self.vertices[i].astype(np.float64), self.faces, name=f"{self.name}/{self.shape_name(i)}")

    def camera(self, i: int) -> Camera:
        return Camera(_intrinsics(self.K), self.R[i], self.t[i])

    def pairs(self, kind: str) -> np.ndarray:
        if kind not in ("intra", "inter"):
            raise BodycorrError(f"pairs: kind must be 'intra' or 'inter', got {kind!r}.")
        return self.intra if kind == "intra" else self.inter


PARAMETERS_DIR = Path(__file__).with_name("suites")


def _intrinsics(K: np.ndarray) -> Intrinsics:
    """The suite's Kinect v2 intrinsics from its stored (fx, fy, cx, cy)."""
    k = Intrinsics.kinect_v2()
    return Intrinsics(*(float(x) for x in K), width=k.width, height=k.height)


def _pcg_state(rng: np.random.Generator) -> np.ndarray:
    """(6,) uint64: a PCG64 generator's full state (128-bit state and increment, split in halves)."""
    st = rng.bit_generator.state
    if st["bit_generator"] != "PCG64":
        raise BodycorrError(f"suite parameters: need a PCG64 generator, got {st['bit_generator']}.")
    m = (1 << 64) - 1
    s, inc = st["state"]["state"], st["state"]["inc"]
    return np.array([s >> 64, s & m, inc >> 64, inc & m, st["has_uint32"], st["uinteger"]], dtype=np.uint64)


def _pcg_generator(state: np.ndarray) -> np.random.Generator:
    """The generator :func:`_pcg_state` recorded."""
    w = [int(x) for x in state]
    bg = np.random.PCG64()
    bg.state = {"bit_generator": "PCG64", "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
                "has_uint32": w[4], "uinteger": w[5]}  # fmt: skip
    return np.random.Generator(bg)


def freeze_parameters(name: str) -> dict[str, np.ndarray]:
    """Draw suite ``name``'s parameters with the samplers (people, collision-free poses, cameras,
    pairs), as its spec says: what ``data/suites/<name>.npz`` holds. Run once, by
    ``python -m bodycorr.data.suite freeze NAME``; a suite's figures stay comparable only while its
    file is unchanged.

    Returns:
        identity, pose: (S,) int; phenotypes: (S, 6); angles: (S, J, 3) degrees; global_rotation:
        (S, 3, 3); translation: (S, 3); sources: (S,) str; R: (S, 3, 3), t: (S, 3) the cameras;
        noise_rng: (S, 6) uint64 each view's noise stream (:func:`_pcg_state`); K: (4,);
        intra, inter: (P, 2) shape index pairs.
    """
    from bodycorr.body.pose import PoseSampler, PoseSamplerConfig

    spec = _spec(name)
    model = get_body_model()
    sampler = PoseSampler(PoseSamplerConfig(), model=model)
    seed, k = spec["seed"], Intrinsics.kinect_v2()
    keys = ("identity", "pose", "phenotypes", "angles", "global_rotation", "translation", "sources", "R", "t", "noise_rng")
    out: dict[str, list] = {key: [] for key in keys}
    for i in range(spec["identities"]):
        phen = sample_identity("test", i, seed).phenotypes
        for p in range(spec["poses"]):
            rng = identity_rng("test", i * 1000 + p, seed + 7)
            pose = sampler.sample(1, rng)
            v = model(phen[None], pose.to_anny(model)).vertices[0]
            v = v - np.array([*v[:, :2].mean(0), v[:, 2].min()], dtype=np.float32)
            cam = random_camera(rng, k, 0.5 * (v.min(0) + v.max(0)), (2.0, 3.2), (0.0, 20.0), target_jitter=0.05, roll_deg=2.0)
            for key, val in (("identity", i), ("pose", p), ("phenotypes", phen), ("angles", pose.angles[0]),
                             ("global_rotation", pose.global_rotation[0]), ("translation", pose.translation[0]),
                             ("sources", pose.sources[0]), ("R", cam.R), ("t", cam.t), ("noise_rng", _pcg_state(rng))):  # fmt: skip
                out[key].append(val)
    arrays = {key: np.stack(val) if key != "sources" else np.array(val, dtype=str) for key, val in out.items()}
    arrays["K"] = np.array([k.fx, k.fy, k.cx, k.cy])
    rng = np.random.default_rng(seed)
    ident = arrays["identity"]
    all_pairs = [(a, b) for a in range(len(ident)) for b in range(len(ident)) if a != b]
    intra = [pr for pr in all_pairs if ident[pr[0]] == ident[pr[1]]]
    inter = [pr for pr in all_pairs if ident[pr[0]] != ident[pr[1]]]
    arrays["intra"] = np.array(intra)[rng.choice(len(intra), spec["intra"], replace=False)]
    arrays["inter"] = np.array(inter)[rng.choice(len(inter), spec["inter"], replace=False)]
    return arrays


def parameters_path(name: str) -> Path:
    return PARAMETERS_DIR / f"{name}.npz"


def _parameters_bytes(name: str) -> bytes:
    """The raw parameters file of suite ``name`` (one-line errors when it is missing or unreadable)."""
    _spec(name)
    return _read_frozen(parameters_path(name), f"suite {name!r}: its parameters", f"freeze {name}")


def _read_frozen(path: Path, what: str, freeze: str) -> bytes:
    """The bytes of a frozen suite file; one line naming it and the fix when it is missing or unreadable.
    ``what``: "suite NAME: its parameters"; ``freeze``: the ``python -m bodycorr.data.suite`` subcommand that redraws it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BodycorrError(f"{what} {path} are missing; reinstall bodycorr, or draw them anew "
                            f"with `python -m bodycorr.data.suite {freeze}` (a new suite: old figures do not carry over).") from None  # fmt: skip
    except OSError as e:
        raise BodycorrError(f"{what.split(':')[0]}: cannot read {path} ({e}); reinstall bodycorr to restore it.") from None


def _parse_parameters(name: str, data: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {key: z[key] for key in z.files}
    except (OSError, ValueError, KeyError) as e:
        raise BodycorrError(f"suite {name!r}: cannot read {parameters_path(name)} ({e}); reinstall bodycorr to restore it.") from None


def parameters_digest(name: str) -> str:
    """sha256 of suite ``name``'s parameters file: which suite a figure was measured on."""
    return hashlib.sha256(_parameters_bytes(name)).hexdigest()


def load_parameters(name: str) -> dict[str, np.ndarray]:
    """Suite ``name``'s shipped parameters (see :func:`freeze_parameters`)."""
    return _parse_parameters(name, _parameters_bytes(name))


def _build(params: dict[str, np.ndarray], shapes: np.ndarray | None = None, outfits: list[Outfit] | None = None) -> dict[str, np.ndarray]:
    """Pose, render and add noise to the suite's shapes (all, or the indices ``shapes``); with
    ``outfits`` (one per identity) each body wears its identity's outfit."""
    from bodycorr.body.pose import Pose

    model, template = get_body_model(), get_template()
    coords = body_coords(template) if outfits is not None else None
    k = _intrinsics(params["K"])
    S = len(params["identity"])
    idx = np.arange(S) if shapes is None else np.asarray(shapes, dtype=np.int64)
    out: dict[str, list] = {key: [] for key in ("vertices", "depth_clean", "depth_noisy", "vertex_clean", "vertex_noisy")}
    caster = None
    for s in idx:
        pose = Pose(params["angles"][s : s + 1], params["global_rotation"][s : s + 1], params["translation"][s : s + 1])
        v = model(params["phenotypes"][s : s + 1], pose.to_anny(model)).vertices[0]
        v = v - np.array([*v[:, :2].mean(0), v[:, 2].min()], dtype=np.float32)
        if outfits is not None:
            v = clothe(outfits[int(params["identity"][s])], coords, v, model.faces)
        caster = RayCaster(v, model.faces) if caster is None else (caster.update(v) or caster)
        frame = render(caster, Camera(k, params["R"][s], params["t"][s]))
        noisy = add_depth_noise(frame, DepthNoiseConfig.preset("kinect_v2"), _pcg_generator(params["noise_rng"][s]))
        out["vertices"].append(v[template.template_to_full])
        out["depth_clean"].append(frame.depth)
        out["depth_noisy"].append(noisy.depth)
        out["vertex_clean"].append(body_truth(frame, template).template_vertex)
        out["vertex_noisy"].append(body_truth(noisy, template).template_vertex)
    arrays = {key: np.stack(val) for key, val in out.items()}
    arrays["vertices"] = arrays["vertices"].astype(np.float32)
    for key in ("identity", "pose", "phenotypes", "R", "t"):
        arrays[key] = params[key][idx]
    for key in ("K", "intra", "inter"):
        arrays[key] = params[key]
    return arrays


def _spec(name: str) -> dict:
    if name not in SUITES:
        raise BodycorrError(f"suite {name!r}: unknown. Known suites: {', '.join(suite_names())}.")
    return SUITES[name]


def outfits_path(name: str) -> Path:
    """Where suite ``name``'s (base name) clothed variant's outfits are frozen."""
    return PARAMETERS_DIR / f"{name}{CLOTHED_SUFFIX}.npz"


def freeze_outfits(name: str) -> dict[str, np.ndarray]:
    """Draw the outfits of suite ``name``'s clothed variant: identity ``i`` wears the garments of
    :data:`CLOTHED_PLAN` ``[i % 10]`` (and hair volume for most), their sizes drawn by
    :func:`~bodycorr.render.garments.sample_outfit` from ``identity_rng("test", i, seed + 11)``:
    what ``data/suites/<name>-clothed.npz`` holds (``python -m bodycorr.data.suite freeze-clothed NAME``)."""
    spec = _spec(name)
    outfits = []
    for i in range(spec["identities"]):
        top, bottom = CLOTHED_PLAN[i % len(CLOTHED_PLAN)]
        config = GarmentConfig(kinds=(top, bottom, "hair"))  # type: ignore[arg-type]
        outfits.append(sample_outfit(identity_rng("test", i, spec["seed"] + _OUTFIT_SEED), config))
    return pack_outfits(outfits)


def _outfits_bytes(name: str) -> bytes:
    return _read_frozen(outfits_path(name), f"suite {name + CLOTHED_SUFFIX!r}: its outfits", f"freeze-clothed {name}")


def load_outfits(name: str) -> list[Outfit]:
    """The frozen outfits (one per identity) of suite ``name``'s clothed variant (``name`` without the suffix)."""
    return _parse_outfits(name, _outfits_bytes(name))


def _parse_outfits(name: str, data: bytes) -> list[Outfit]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
    except (OSError, ValueError, KeyError) as e:
        raise BodycorrError(f"suite {name + CLOTHED_SUFFIX!r}: cannot read {outfits_path(name)} ({e}); reinstall bodycorr to restore it.") from None
    outfits = unpack_outfits(arrays)
    if len(outfits) != _spec(name)["identities"]:
        raise BodycorrError(f"suite {name + CLOTHED_SUFFIX!r}: {outfits_path(name)} holds {len(outfits)} outfits for "
                            f"{_spec(name)['identities']} people; reinstall bodycorr to restore it.")  # fmt: skip
    return outfits


def load_suite(name: str = "synthetic-v1") -> Suite:
    """The suite called ``name`` (:func:`suite_names`), built from its shipped parameters on first
    use (about a minute) and cached on disk."""
    base, clothed = _split_clothed(name)
    if clothed:
        return _load_clothed(base)
    spec = _spec(name)
    template = get_template()
    data = _parameters_bytes(name)
    digest = hashlib.sha256(data).hexdigest()
    key = content_hash("suite", name, spec, digest, template.mesh.vertices, template.mesh.faces)
    a = cached_arrays("suites", key, lambda: _build(_parse_parameters(name, data)), compress=True)
    return Suite(name=name, faces=template.mesh.faces, parameters_sha256=digest, **{k: a[k] for k in a})


def _load_clothed(base: str) -> Suite:
    """Suite ``base``'s clothed variant: its shapes, cameras and noise with each person in its frozen outfit."""
    spec = _spec(base)
    template = get_template()
    data, odata = _parameters_bytes(base), _outfits_bytes(base)
    outfits = _parse_outfits(base, odata)
    digest = hashlib.sha256(data + odata).hexdigest()
    name = base + CLOTHED_SUFFIX
    key = content_hash("suite", name, spec, digest, GARMENTS_VERSION, template.mesh.vertices, template.mesh.faces)
    a = cached_arrays("suites", key, lambda: _build(_parse_parameters(base, data), outfits=outfits), compress=True)
    return Suite(name=name, faces=template.mesh.faces, parameters_sha256=digest, outfits=tuple(outfits), **{k: a[k] for k in a})


def main(argv: list[str] | None = None) -> None:
    """``python -m bodycorr.data.suite freeze NAME [--out PATH]``: draw a suite's parameters anew;
    ``freeze-remeshed NAME``: remesh its bodies anew (:mod:`bodycorr.data.remeshed`, needs gpytoolbox;
    NAME may be a clothed variant); ``freeze-clothed NAME``: draw its clothed variant's outfits anew."""
    import argparse

    from bodycorr.common.fileio import save_npz_atomic

    ap = argparse.ArgumentParser(prog="python -m bodycorr.data.suite", description=main.__doc__)
    ap.add_argument("action", choices=["freeze", "freeze-remeshed", "freeze-clothed"])
    ap.add_argument("name", choices=sorted(suite_names()))
    ap.add_argument("--out", default=None, help="where to write (default: the packaged parameters file)")
    args = ap.parse_args(argv)
    if args.action == "freeze-clothed":
        base = _split_clothed(args.name)[0]
        path = Path(args.out) if args.out else outfits_path(base)
        save_npz_atomic(path, **freeze_outfits(base))
        print(f"wrote {path}")
        return
    if args.action == "freeze" and _split_clothed(args.name)[1]:
        ap.error("freeze: a clothed variant shares its suite's parameters; freeze the suite, or freeze-clothed for its outfits")
    if args.action == "freeze-remeshed":
        from bodycorr.data.remeshed import freeze_remeshed, remeshed_path

        path = Path(args.out) if args.out else remeshed_path(args.name)
        save_npz_atomic(path, **freeze_remeshed(args.name))
        print(f"wrote {path}")
        return
    path = Path(args.out) if args.out else parameters_path(args.name)
    save_npz_atomic(path, **freeze_parameters(args.name))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
