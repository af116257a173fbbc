"""Randomness convention: every random draw comes from an explicit
``torch.Generator`` seeded from the config's master seed and a path of names
(experiment, stage, score model, chunk index, ...), so that the same seed and
config give identical outputs on the CPU, and a chunk of work (a block of
clone pairs, of trajectories, a time point of the entropy) draws the same
numbers whether it runs alone or with the others."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *names: object) -> int:
    """A 63-bit seed derived from the master seed and names."""
    h = hashlib.sha256(":".join([str(seed), *map(str, names)]).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def generator(seed: int, *names: object) -> torch.Generator:
    """A CPU generator seeded with :func:`derive_seed`."""
    return torch.Generator().manual_seed(derive_seed(seed, *names))


def shard_blocks(n_items: int, batch: int, shard: int = 0, shards: int = 1) -> list[int]:
    """Indices of the blocks of ``batch`` items (pairs, trajectories, time points) that
    shard ``shard`` of ``shards`` computes: a contiguous, near-equal split of the
    ``ceil(n_items / batch)`` blocks. Every block has its own generator, so the
    shards together compute exactly what one job computes."""
    n_blocks = -(-n_items // batch)
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    lo, hi = shard * n_blocks // shards, (shard + 1) * n_blocks // shards
    return list(range(lo, hi))
