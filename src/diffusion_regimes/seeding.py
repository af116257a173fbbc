"""Randomness convention: every random draw comes from a generator made here,
seeded from the config's master seed and a path of names (experiment, a
:class:`Stream`, score model, block index, ...), so that the same seed and config
give identical outputs on the CPU, and a chunk of work (a block of clone pairs, of
trajectories, a time point of the entropy) draws the same numbers whether it runs
alone or with the others.

The stream names are the members of :class:`Stream`: a stage cannot invent one by
a typo, and two stages cannot share one by accident. No other module constructs a
generator or seeds torch's global one (a test checks the source).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from enum import Enum

import numpy as np


class Stream(Enum):
    """The named random streams of the stages (the value enters the derived seed)."""

    SUBSET = "subset"
    REFERENCE = "reference"  # fresh population draws: the null of memorisation
    TRAIN = "train"
    INIT = "init"  # network weights and dropout (torch's global generator, below)
    CLASSIFIER = "classifier"
    CLONING = "cloning"
    BOOTSTRAP = "bootstrap"
    COLLAPSE = "collapse"
    COLLAPSE_CLONING = "collapse-cloning"
    BOOTSTRAP_COLLAPSE = "bootstrap-collapse"
    BOOTSTRAP_MEMORISED = "bootstrap-memorised"
    UTURN = "uturn"
    SANITY = "sanity"  # the points and noise of a network's sanity check
    BOOTSTRAP_UTURN = "bootstrap-uturn"
    ENTROPY = "entropy"
    MEMORISATION = "memorisation"  # samples of every weight snapshot (the same at each: common random numbers)
    DENOISING_LOSS = "denoising-loss"
    QUALITY = "quality"
    BOOTSTRAP_TAU = "bootstrap-tau"
    SYMMETRY = "symmetry"
    THEORY = "theory"  # the reference curves of the theory stage
    REFERENCE_GAUSSIAN = "reference-gaussian"  # points of the class-conditional Gaussian surrogate
    REFERENCE_HELDOUT = "reference-heldout"  # reference points and their noise for phi_H
    # blocks of work inside a stage
    PAIRS = "pairs"
    TRAJECTORIES = "trajectories"
    TIME_POINT = "t"
    BRANCH = "branch"


def _name(value: object) -> str:
    return value.value if isinstance(value, Stream) else str(value)


def derive_seed(seed: int, *names: object) -> int:
    """A 63-bit seed derived from the master seed and names (experiment names, score
    names and block indices as given, streams as :class:`Stream` members)."""
    h = hashlib.sha256(":".join([str(seed), *map(_name, names)]).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def generator(seed: int, *names: object):
    """A CPU ``torch.Generator`` seeded with ``derive_seed(seed, *names)``; without names,
    with ``seed`` itself (a seed a stage already derived for its stream)."""
    import torch

    return torch.Generator().manual_seed(derive_seed(seed, *names) if names else seed)


def numpy_generator(seed: int, *names: object) -> np.random.Generator:
    """A numpy generator seeded with ``derive_seed(seed, *names)``; without names, with ``seed``
    itself."""
    return np.random.default_rng(derive_seed(seed, *names) if names else seed)


@contextlib.contextmanager
def global_torch_seed(seed: int, *names: object) -> Iterator[None]:
    """Seed torch's global generator (network initialisation and dropout draw from it)
    with :func:`derive_seed` for the duration of the block; the previous global state is
    restored afterwards (CPU and CUDA), so nothing else in the process depends on what ran
    inside."""
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_seed(seed, *names))
        yield


def shard_blocks(n_items: int, batch: int, shard: int = 0, shards: int = 1) -> list[int]:
    """Indices of the blocks of ``batch`` items (pairs, trajectories, time points) that
    shard ``shard`` of ``shards`` computes: a contiguous, near-equal split of the
    ``ceil(n_items / batch)`` blocks. Every block has its own generator, so the
    shards together compute exactly what one job computes. Configuration validation
    refuses more shards than blocks, so every shard has work."""
    n_blocks = -(-n_items // batch)
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    lo, hi = shard * n_blocks // shards, (shard + 1) * n_blocks // shards
    return list(range(lo, hi))
