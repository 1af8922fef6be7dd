"""k-shot training subsets (TALLRec, Bao et al., RecSys 2023: k in 16, 64, 256 drawn from the train split).

TALLRec draws with ``datasets.Dataset.shuffle(seed=seed).select(range(k))``, i.e. the first ``k`` entries
of ``numpy.random.default_rng(seed).permutation(n)``. :func:`sample_k_shot` uses the same draw, so for
the same train split and seed it picks the same samples, in the same order, as the authors' runs.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

__all__ = ["k_shot_indices", "sample_k_shot"]

T = TypeVar("T")


def k_shot_indices(n: int, k: int, seed: int) -> list[int]:
    """Indices of a seeded k-shot draw from ``n`` items: ``default_rng(seed).permutation(n)[:k]``.

    Returns:
        ``list[int]`` of ``k`` distinct indices in ``[0, n)``, in draw order; deterministic in ``(n, k, seed)``.

    Raises:
        TypeError: ``k`` or ``seed`` is not an int.
        ValueError: ``k < 0`` or ``k > n`` (the message names ``k`` and ``n``), or ``seed < 0``.
    """
    for name, v in (("k", k), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
    if k < 0:
        raise ValueError(f"k={k} must be >= 0")
    if k > n:
        raise ValueError(f"k={k} is larger than the {n} samples to draw from")
    if seed < 0:
        raise ValueError(f"seed={seed} must be >= 0")
    if k == 0:
        return []
    return [int(i) for i in np.random.default_rng(int(seed)).permutation(n)[:k]]


def sample_k_shot(train_samples: Sequence[T], k: int, seed: int) -> list[T]:
    """Draw ``k`` distinct training samples with ``seed`` (see :func:`k_shot_indices`).

    Args:
        train_samples: any sequence (a ``list[Sample]``, a list of alpaca dicts, a ``datasets.Dataset``
            -- rows come back as its dicts).
        k: how many (0 -> ``[]``).
        seed: numpy Generator seed.

    Returns:
        ``list`` of ``k`` elements of ``train_samples`` in draw order (the same as TALLRec's
        ``shuffle(seed=seed).select(range(k))``).

    Raises:
        TypeError / ValueError: as :func:`k_shot_indices` (``k > len(train_samples)`` names ``k``).
    """
    idx = k_shot_indices(len(train_samples), k, seed)
    return [train_samples[i] for i in idx]
