"""The random streams a seed gives: one independent generator per purpose.

A seed becomes generators spawned from np.random.SeedSequence(seed): the train/validation split,
the front end's fitting (or a trained front end's initial weights), the batch order, the random
distortions of training images. What one purpose draws never shifts another's numbers, and `eval`
rebuilds a run's split from its seed alone. A new purpose is appended to STREAMS, which leaves the
streams before it unchanged.
"""

from __future__ import annotations

import numpy as np

STREAMS = ("split", "front_end", "order", "shift")


def rng_streams(seed: int) -> dict[str, np.random.Generator]:
    """{purpose: generator} for every purpose in STREAMS, independent of one another."""
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(STREAMS, children, strict=True)}
