"""The Anny body model behind one small interface: phenotypes + bone rotations -> posed vertices."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from bodycorr.common.quiet import init_warp

PHENOTYPES: tuple[str, ...] = ("gender", "age", "muscle", "weight", "height", "proportions")


@dataclass(frozen=True, eq=False)
class PosedBodies:
    """Result of posing a batch of bodies.

    Attributes:
        vertices: (B, V, 3) float32 metres, full Anny topology (body, eyes, tongue).
        bone_poses: (B, J, 4, 4) world transform of every bone.
        bone_heads: (B, J, 3) world position of every joint (bone head).
    """

    vertices: np.ndarray
    bone_poses: np.ndarray
    bone_heads: np.ndarray


class BodyModel:
    """Anny (Apache-2.0 code, CC0 MakeHuman assets) wrapped for bodycorr.

    Conventions (Anny's): Z up, the body faces −Y, left is +X, root at the pelvis, the rest pose
    is an A-pose. Poses are Anny's ``local-ref`` deltas: per bone a rotation relative to rest in
    world-aligned axes, chained parent to child; the root's delta is the global transform.
    Construct with :func:`get_body_model` (cached: the first Anny construction in a fresh
    environment builds a ~800 MB cache and takes about a minute).
    """

    def __init__(self, device: str = "cpu"):
        init_warp()  # before anny initialises warp: no banner on stdout, no CUDA-driver warning on stderr
        import anny  # heavy import, kept local
        self.device = torch.device(device)
        self._anny = anny.Anny().to(dtype=torch.float32, device=self.device)
        self._anny.eval()
        self.bone_labels: tuple[str, ...] = tuple(self._anny.bone_labels)
        self.bone_parents: np.ndarray = np.asarray(self._anny.bone_parents, dtype=np.int64)
        self.faces: np.ndarray = self._anny.faces.cpu().numpy().astype(np.int64)
        self.num_vertices: int = int(self._anny.template_vertices.shape[0])
        self.num_bones: int = len(self.bone_labels)
        self.uv: np.ndarray = self._anny.texture_coordinates.cpu().numpy().astype(np.float32)
        self.face_uv_index: np.ndarray = self._anny.face_texture_coordinate_indices.cpu().numpy().astype(np.int64)
        w = self._anny.vertex_bone_weights.cpu().numpy()
        bi = self._anny.vertex_bone_indices.cpu().numpy()
        self.dominant_bone: np.ndarray = bi[np.arange(len(bi)), w.argmax(1)].astype(np.int64)
        self._dense_weights: torch.Tensor | None = None  # (V, J), built by rest_body

    def bone_index(self, name: str) -> int:
        return self.bone_labels.index(name)

    @torch.no_grad()
    def __call__(self, phenotypes: np.ndarray, pose: np.ndarray | None = None) -> PosedBodies:
        """Pose a batch of bodies.

        Args:
            phenotypes: (B, 6) in [0, 1], columns in :data:`PHENOTYPES` order.
            pose: (B, J, 4, 4) Anny local-ref delta transforms, or None for the rest pose.
        Returns:
            :class:`PosedBodies`.
        """
        ph = torch.as_tensor(np.asarray(phenotypes, dtype=np.float32), device=self.device)
        if ph.ndim == 1:
            ph = ph[None]
        if ph.ndim != 2 or ph.shape[1] != len(PHENOTYPES):
            raise ValueError(f"phenotypes must be (B, {len(PHENOTYPES)}), got {tuple(ph.shape)}")
        b = ph.shape[0]
        if pose is None:
            pp = torch.eye(4, device=self.device).expand(b, self.num_bones, 4, 4).contiguous()
        else:
            pp = torch.as_tensor(np.asarray(pose, dtype=np.float32), device=self.device)
            if pp.shape != (b, self.num_bones, 4, 4):
                raise ValueError(f"pose must be ({b}, {self.num_bones}, 4, 4), got {tuple(pp.shape)}")
        out = self._run(pp, ph)
        poses = out["bone_poses"]
        # Joint positions: the rest bone heads carried by each bone's world transform.
        rest_poses = out["rest_bone_poses"].expand_as(poses)
        rel = poses @ torch.linalg.inv(rest_poses)
        heads_rest = out["rest_bone_heads"].expand(b, -1, -1)
        heads = (rel[..., :3, :3] @ heads_rest[..., None])[..., 0] + rel[..., :3, 3]
        return PosedBodies(
            vertices=out["vertices"].cpu().numpy(),
            bone_poses=poses.cpu().numpy(),
            bone_heads=heads.cpu().numpy(),
        )

    def _run(self, pose: torch.Tensor, phenotypes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Anny's forward pass: pose (B, J, 4, 4), phenotypes (B, 6) in :data:`PHENOTYPES` order -> its output dict."""
        return self._anny(pose_parameters=pose, phenotype_kwargs={k: phenotypes[:, i] for i, k in enumerate(PHENOTYPES)})

    # --- differentiable torch paths (the fitting in :mod:`bodycorr.body.articulated`) ---------------

    def forward_torch(self, pose: torch.Tensor, phenotypes: torch.Tensor) -> torch.Tensor:
        """Differentiable posing: pose (B, J, 4, 4) local-ref deltas, phenotypes (B, 6) -> (B, V, 3) vertices."""
        return self._run(pose, phenotypes)["vertices"]

    @torch.no_grad()
    def rest_body(self, phenotypes: np.ndarray) -> RestBody:
        """The rest body of one fixed shape, for :meth:`skin` (the blend shapes are applied once)."""
        ph = torch.as_tensor(np.asarray(phenotypes, dtype=np.float32).reshape(1, len(PHENOTYPES)), device=self.device)
        pp = torch.eye(4, device=self.device).expand(1, self.num_bones, 4, 4).contiguous()
        out = self._run(pp, ph)
        if self._dense_weights is None:
            w = torch.zeros(self.num_vertices, self.num_bones, device=self.device)
            w.scatter_add_(1, self._anny.vertex_bone_indices.long(), self._anny.vertex_bone_weights.float())
            self._dense_weights = w
        return RestBody(out["rest_vertices"][0], out["rest_bone_poses"][:1])

    def skin(self, pose: torch.Tensor, rest: RestBody, vertices: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable linear blend skinning of some vertices of a fixed-shape body.

        Blends the bone transforms per vertex first ((n, J) weights times (B, J, 12)), so posing a few
        thousand vertices costs a fraction of a full forward pass (which re-applies the blend shapes
        and skins every vertex).

        Args:
            pose: (B, J, 4, 4) local-ref deltas; rest: from :meth:`rest_body`;
            vertices: (n,) full-topology vertex indices, or None for all.
        Returns:
            (B, n, 3) posed vertices, equal to :meth:`forward_torch`'s at those indices.
        """
        b = pose.shape[0]
        transforms, _ = self._anny.get_bone_transforms(pose, rest.bone_poses.expand(b, -1, -1, -1))
        w = self._dense_weights if vertices is None else self._dense_weights[vertices]
        r = rest.vertices if vertices is None else rest.vertices[vertices]
        m = torch.einsum("nj,bjk->bnk", w, transforms[:, :, :3, :].reshape(b, self.num_bones, 12)).reshape(b, -1, 3, 4)
        return (m[..., :3] @ r[..., None])[..., 0] + m[..., 3]


@dataclass(frozen=True, eq=False)
class RestBody:
    """A body of fixed shape at rest (:meth:`BodyModel.rest_body`).

    Attributes:
        vertices: (V, 3) rest vertices; bone_poses: (1, J, 4, 4) rest bone transforms.
    """

    vertices: torch.Tensor
    bone_poses: torch.Tensor


@functools.lru_cache(maxsize=2)
def get_body_model(device: str = "cpu") -> BodyModel:
    """The process-wide :class:`BodyModel` (built once per device)."""
    return BodyModel(device)
