"""Few-shot data augmentation that uses only the k labelled samples (no other labels).

Each TALLRec sample holds 11 rated items: 10 history items (whose like/dislike the prompt shows) and the
target. The augmentations below make new training samples from one sample's own items:

``rotate``
    a history item becomes the target (its own rating gives the label) and the old target joins the
    history as its newest item. Up to 10 new samples per sample, each a different question about the same
    user; this is the strongest source of new (history, label) pairs.
``permute``
    the history items in a random order (ratings move with their items); label unchanged. Teaches that
    the answer should not depend on list order.
``drop``
    1 to 3 random history items removed (at least one kept); label unchanged. History-length robustness.
``mirror``
    every like becomes a dislike and vice versa, the label too (rating ``r -> low + high - r`` on the
    sample's rating scale, MovieLens' 1..5: ``6 - r``; a rating that would keep its side of the threshold,
    e.g. a 3 on 1..5, which is not liked, becomes ``threshold + 1`` so that it flips). Encodes "same taste as the history -> same answer"; it also
    asserts the opposite of any item-quality signal, which is why it is measured, not assumed.

The augmented samples keep the original's ``user_id``. The like rule (``rating > threshold``) is each sample's
own (``Sample.like_threshold``, set by the protocol that built it). Deterministic in ``seed``.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Sequence

from .tallrec import Sample

__all__ = ["AUGMENTATIONS", "augment_samples", "parse_augmentations"]

AUGMENTATIONS = ("rotate", "permute", "drop", "mirror")


def parse_augmentations(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"rotate,permute"`` (or a list) -> ``("rotate", "permute")``; ``""``/``None``/``"none"`` -> ``()``.

    Raises:
        ValueError: an unknown name (the message names it and lists :data:`AUGMENTATIONS`) or a repeat.
    """
    if spec is None:
        return ()
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n and n != "none"]
    for n in names:
        if n not in AUGMENTATIONS:
            raise ValueError(f"augment: unknown augmentation {n!r}; expected a comma list of {', '.join(AUGMENTATIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"augment: {','.join(names)!r} names an augmentation twice")
    return tuple(names)


def _label(rating: float, threshold: float) -> int:
    return int(float(rating) > threshold)


def _rotate(s: Sample, j: int, threshold: float) -> Sample:
    hist = s.history[:j] + s.history[j + 1:] + [s.target]
    rates = s.history_ratings[:j] + s.history_ratings[j + 1:] + [s.target_rating]
    r = s.history_ratings[j]
    return replace(s, history=hist, history_ratings=rates, target=s.history[j], target_rating=r,
                   label=_label(r, threshold))


def _permute(s: Sample, rng: random.Random, threshold: float) -> Sample:
    order = list(range(len(s.history)))
    rng.shuffle(order)
    return replace(s, history=[s.history[i] for i in order], history_ratings=[s.history_ratings[i] for i in order])


def _drop(s: Sample, rng: random.Random, threshold: float) -> Sample:
    n = len(s.history)
    m = rng.randint(1, min(3, n - 1))
    gone = set(rng.sample(range(n), m))
    keep = [i for i in range(n) if i not in gone]
    return replace(s, history=[s.history[i] for i in keep], history_ratings=[s.history_ratings[i] for i in keep])


def _flip(r: float, threshold: float, total: float = 6.0) -> float:
    f = total - float(r)
    if _label(f, threshold) == _label(r, threshold):  # the middle rating (3 on 1-5): push it across
        f = threshold + 1.0 if f <= threshold else threshold
    return f


def _mirror(s: Sample, rng: random.Random, threshold: float) -> Sample:
    total = 6.0 if s.rating_scale is None else float(s.rating_scale[0]) + float(s.rating_scale[1])
    rates = [_flip(r, threshold, total) for r in s.history_ratings]
    t = _flip(s.target_rating, threshold, total)
    return replace(s, history_ratings=rates, target_rating=t, label=_label(t, threshold))


_FNS = {"permute": _permute, "drop": _drop, "mirror": _mirror}


def augment_samples(samples: Sequence[Sample], methods: str | Sequence[str], copies: int = 1, seed: int = 0,
                    like_threshold: float | None = None) -> list[Sample]:
    """The originals followed by ``copies`` augmented samples per original and method.

    Args:
        samples: the k labelled samples (``list[Sample]``).
        methods: names from :data:`AUGMENTATIONS` (comma string or sequence); empty -> originals only.
        copies: new samples per original and method (``rotate`` draws distinct history positions while
            there are any left; ``mirror`` is deterministic, so it makes one copy whatever ``copies`` is).
        seed: ``random.Random`` seed; the same arguments give the same list.
        like_threshold: liked means ``rating > like_threshold``; None (default): each sample's own
            ``like_threshold`` (TALLRec-movie: 3).

    Returns:
        ``list[Sample]`` of length ``len(samples) * (1 + copies * n_methods)`` (``mirror`` counting 1), the
        originals first, in input order. Samples with an empty history are passed through unaugmented.

    Raises:
        ValueError: unknown method, or ``copies`` < 1 (names the value).
    """
    names = parse_augmentations(methods)
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValueError(f"augment_copies={copies!r}: must be an int >= 1")
    rng = random.Random(seed)
    out = list(samples)
    for name in names:
        for s in samples:
            if not s.history or (name == "drop" and len(s.history) < 2):
                continue
            th = s.like_threshold if like_threshold is None else like_threshold
            if name == "mirror":
                out.append(_mirror(s, rng, th))
                continue
            if name == "rotate":  # distinct positions first, so copies <= len(history) never repeat
                pos = rng.sample(range(len(s.history)), min(copies, len(s.history)))
                pos += [rng.randrange(len(s.history)) for _ in range(copies - len(pos))]
                for j in pos:
                    out.append(_rotate(s, j, th))
                continue
            for _ in range(copies):
                out.append(_FNS[name](s, rng, th))
    return out

