"""The host-decided order of every pipeline: which samples a run sees, in which order, on
which rank (:func:`sample_order`), and the seeds derived from the run's seed."""
from __future__ import annotations

import numpy as np

from src.errors import DataError, HourNASError


def seed_words(*parts: int) -> list[int]:
    """``parts`` as 32-bit words: the seed of a ``np.random.default_rng``."""
    return [int(p) & 0xFFFFFFFF for p in parts]


def sample_order(indices: np.ndarray, *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                 shard: tuple[int, int] | None = None) -> np.ndarray:
    """The order a run visits ``indices`` in one epoch, before resuming skips any batches.

    Shuffling permutes with ``np.random.default_rng([seed, epoch])``. A shard ``(rank, size)``
    takes every ``size``-th item from position ``rank`` (``len // size`` items), so all ranks run
    the same number of steps; the ``len % size`` items at the end of the (shuffled) order sit
    out this epoch. Strided, not contiguous: with a per-rank batch of ``B / size``, the k-th
    batches of the ranks together are exactly the k-th batch of ``B`` a single process takes
    from the same order, so a data-parallel step (mean of the ranks' gradients) computes the
    single-process full-batch step.
    """
    order = np.asarray(indices, dtype=np.int64).reshape(-1)
    if shuffle:
        order = order[np.random.default_rng(seed_words(seed, epoch)).permutation(len(order))]
    if shard is not None:
        rank, size = shard
        if size < 1 or not 0 <= rank < size:
            raise HourNASError(f"shard must be (rank, size) with 0 <= rank < size, got {shard}")
        per = len(order) // size
        if per == 0:
            raise DataError(f"{len(order)} samples cannot be split over {size} shards")
        order = order[:per * size][rank::size]
    return order


def num_batches(num_samples: int, batch_size: int, drop_remainder: bool) -> int:
    return num_samples // batch_size if drop_remainder else -(-num_samples // batch_size)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split of ``range(n)`` into (weights, architecture) parts, e.g. 80% / 20%
    for ``val_fraction=0.2``. Both are sorted; they are disjoint and cover."""
    if not 0.0 < val_fraction < 1.0:
        raise HourNASError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = int(round(n * val_fraction))
    if n_val < 1 or n_val >= n:
        raise DataError(f"cannot split {n} training samples with val_fraction {val_fraction}")
    perm = np.random.default_rng(seed_words(seed, 0x5EA12C4)).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
