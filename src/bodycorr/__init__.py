"""bodycorr: dense correspondences between human bodies (depth, scans, meshes, images)."""

__version__ = "0.1.0"

from bodycorr.common.errors import BodycorrError

__all__ = ["BodycorrError", "__version__"]
