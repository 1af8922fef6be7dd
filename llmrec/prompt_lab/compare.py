"""A/B-evaluate two or more templates: AUC of each on the same validation subset (zero-shot, or each
LoRA-tuned on the same k samples) and paired bootstrap CIs of the differences
(:func:`llmrec.metrics.paired_bootstrap_auc`).

Sources: TALLRec's protocol and prompt (Bao et al., RecSys 2023); the paired bootstrap resamples samples
with replacement and scores both templates on the same resample (Efron & Tibshirani 1993, ch. 13).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any, Callable, Sequence

import numpy as np

from llmrec.metrics import paired_bootstrap_auc
from llmrec.prompts.template import Template

__all__ = ["ES_VAL_SEED", "eval_indices", "compare_templates"]

ES_VAL_SEED = 1234


def eval_indices(n_valid: int, n: int, seed: int, val_size: int) -> list[int]:
    """Indices into the valid split for an A/B evaluation subset.

    The pool excludes the ``val_size`` early-stopping samples :func:`llmrec.recipe.tune_k_shot` draws
    (``k_shot_indices(n_valid, val_size, 1234)``), so tuning never selects on the evaluation samples, and
    the subset is the same for zero-shot and k-shot runs with the same ``n``, ``seed`` and ``val_size``.
    Then ``n`` of the pool are drawn with ``default_rng(seed).permutation``, returned in split order.

    Raises:
        ValueError: ``n`` < 2 or larger than the pool (names both).
    """
    from llmrec.samples.kshot import k_shot_indices

    held = set(k_shot_indices(n_valid, min(val_size, n_valid), ES_VAL_SEED)) if val_size > 0 else set()
    pool = [i for i in range(n_valid) if i not in held]
    if n < 2 or n > len(pool):
        raise ValueError(f"n {n}: must be in [2, {len(pool)}] (valid split {n_valid} minus {len(held)} "
                         f"early-stopping samples)")
    pick = np.random.default_rng(seed).permutation(len(pool))[:n]
    return sorted(pool[i] for i in pick)


def compare_templates(templates: Sequence[Template], splits, catalog, load_model: Callable[[], tuple[Any, Any]], *,
                      n: int = 200, seed: int = 0, shots: int = 0, val_size: int = 32, epochs: int = 3,
                      train_overrides: dict | None = None, lora=None, dtype: str = "auto",
                      n_resamples: int = 1000, log: Callable[[str], None] | None = None) -> dict:
    """A/B-evaluate two (or more) templates on the same validation subset.

    Zero-shot (``shots=0``): one base model scores every template. k-shot: each template LoRA-tunes a
    fresh base model (``load_model()`` again) with :func:`llmrec.recipe.tune_k_shot` on the same
    ``shots`` train samples (``seed``), ``epochs`` epochs, early stopping on ``val_size`` valid samples
    that are excluded from the evaluation subset (:func:`eval_indices`).

    Args:
        templates: 2+ pointwise templates; the first is the reference (A).
        splits / catalog: from :func:`llmrec.recipe.load_tallrec`.
        load_model: returns a fresh ``(model, tokenizer)``.
        n / seed: evaluation subset size and seed (also seeds the k-shot draw and the bootstrap).

    Returns:
        dict with ``indices`` (valid-split indices), ``n, seed, shots, positives``, ``templates``
        (per template: ``name, sha256, auc, seconds``, and ``train`` for k-shot) and ``comparisons``
        (for each template after the first: :func:`paired_bootstrap_auc` of it against the first).

    Raises:
        ValueError: fewer than two templates, a non-pointwise template, a bad ``n``/``shots``/``n_resamples``.
    """
    from llmrec.metrics import auc
    from llmrec.scoring.pointwise import PointwiseScorer
    from llmrec.recipe import tune_k_shot
    from llmrec.train import TrainSettings

    if len(templates) < 2:
        raise ValueError("compare_templates needs at least two templates")
    for t in templates:
        if t.task != "pointwise":
            raise ValueError(f"template {t.name}: task {t.task!r}; A/B evaluation scores pointwise templates")
    if shots < 0:
        raise ValueError(f"shots {shots}: must be >= 0")
    if n_resamples < 1:
        raise ValueError(f"n_resamples {n_resamples!r}: must be >= 1 (no resamples, no interval)")
    log = log or (lambda _m: None)
    idx = eval_indices(len(splits.valid), n, seed, val_size)
    subset = [splits.valid[i] for i in idx]
    labels = np.array([s.label for s in subset], dtype=np.int64)
    results, scores = [], []
    model = tok = None
    for t in templates:
        entry = {"name": t.name, "sha256": t.sha256}
        t0 = time.perf_counter()
        if shots == 0:
            if model is None:
                model, tok = load_model()
            scorer = PointwiseScorer(model, tok, t, dtype=dtype)
        else:
            model, tok = load_model()
            with tempfile.TemporaryDirectory(prefix="llmrec-ab-") as work:
                settings = TrainSettings(output_dir=work, epochs=epochs, seed=seed, progress=False,
                                         **(train_overrides or {}))
                run = tune_k_shot(model, tok, t, splits, catalog, shots=shots, seed=seed, settings=settings,
                                  lora=lora, val_size=val_size, val_seed=ES_VAL_SEED, dtype=dtype)
            scorer = run.scorer
            entry["train"] = {k: run.record.get(k) for k in ("best_val_auc", "epochs_run", "train_seconds",
                                                             "train_positives")}
        P = scorer.encode_samples(subset, catalog)
        s = scorer.score(P)
        entry.update({"auc": auc(labels, s), "seconds": time.perf_counter() - t0, "tokens": P.tokens})
        log(f"{t.name}: AUC {entry['auc']:.4f} ({entry['seconds']:.1f} s)")
        results.append(entry)
        scores.append(s)
    comps = []
    for t, s in zip(templates[1:], scores[1:]):
        c = paired_bootstrap_auc(labels, scores[0], s, n_resamples=n_resamples, seed=seed)
        comps.append({"a": templates[0].name, "b": t.name, **c})
    return {"n": len(idx), "seed": seed, "shots": shots, "val_size": val_size, "positives": int(labels.sum()),
            "indices": idx, "templates": results, "comparisons": comps, "scores": [x.tolist() for x in scores],
            "labels": labels.tolist()}
