"""Body shapes (identities): Anny phenotype vectors sampled per split, never shared across splits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from bodycorr.body.anny_model import PHENOTYPES

Split = Literal["train", "val", "test"]
_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}

# Phenotype ranges per population, in Anny's [0, 1] units. Anny's age axis: below about 0.4 gives
# children and babies; 0.5 is a young adult, 1.0 an elder.
POPULATIONS: dict[str, dict[str, tuple[float, float]]] = {
    "adult": {  # teenagers to elders (the default)
        "gender": (0.0, 1.0), "age": (0.42, 1.0), "muscle": (0.0, 1.0),
        "weight": (0.0, 1.0), "height": (0.0, 1.0), "proportions": (0.0, 1.0),
    },
    "all": {  # children included
        "gender": (0.0, 1.0), "age": (0.15, 1.0), "muscle": (0.0, 1.0),
        "weight": (0.0, 1.0), "height": (0.0, 1.0), "proportions": (0.0, 1.0),
    },
}  # fmt: skip


@dataclass(frozen=True)
class Identity:
    """A person: a phenotype vector with a stable name.

    Attributes:
        split: the split it belongs to.
        index: its number within the split.
        phenotypes: (6,) float64 in [0, 1], :data:`PHENOTYPES` order.
    """

    split: str
    index: int
    phenotypes: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:06d}"


def identity_rng(split: Split, index: int, seed: int = 0) -> np.random.Generator:
    """The random stream of one identity: disjoint streams per (seed, split, index)."""
    if split not in _SPLIT_STREAM:
        raise ValueError(f"unknown split {split!r}; choose train, val or test")
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM[split], index, 0x5EED]))


def sample_identity(split: Split, index: int, seed: int = 0, population: Literal["adult", "all"] = "adult") -> Identity:
    """The ``index``-th identity of ``split``: the same seed always gives the same person.

    Splits draw from disjoint random streams of continuous values, so no two splits share a
    person (a test checks it on samples).
    """
    rng = identity_rng(split, index, seed)
    ranges = POPULATIONS[population]
    lo = np.array([ranges[k][0] for k in PHENOTYPES])
    hi = np.array([ranges[k][1] for k in PHENOTYPES])
    ph = lo + (hi - lo) * rng.random(len(PHENOTYPES))
    # Extreme weight with extreme muscle is rare in people; pull the pair a little towards the middle.
    ph[3] = 0.5 + (ph[3] - 0.5) * (1.0 - 0.3 * abs(ph[2] - 0.5))
    return Identity(split=split, index=index, phenotypes=ph)
