"""The k-shot TALLRec recipe: load the data and its splits, the shipped defaults (template, augmentation,
epoch budget), k-shot LoRA tuning (:func:`tune_k_shot`) and the like-rate baselines / blends.

It wires the one-job layers together (samples -> prompts -> scoring -> train); the CLI and ``eval/``
scripts call it. The scorer itself is :class:`llmrec.scoring.PointwiseScorer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llmrec import assets
from llmrec.data import load_dataset
from llmrec.prompts.template import Template
from llmrec.samples.tallrec import Sample, TallrecSplits, tallrec_splits
from llmrec.scoring.pointwise import PointwiseScorer

__all__ = ["load_tallrec", "load_protocol", "encode_sample_set", "like_rate_scores", "like_rate_product", "probe_x_like_rate", "KShotRun", "tune_k_shot", "LikeRateBlend",
           "DEFAULT_TEMPLATE", "TEXT_TEMPLATE", "DEFAULT_AUGMENT", "TALLREC_EPOCHS", "MIN_STEPS", "epoch_budget"]


#: The shipped k-shot recipe on TALLRec-movie data (issue 15; README "Interaction tokens"): the 5 most recent
#: history items as collaborative tokens plus one ⟨taste⟩ token comparing the target with them (score form), LoRA
#: and the projector tuned together, mirrored samples as augmentation. Over 5 seeds at 64 shots, with the default
#: collaborative model, it beat the text recipe on AUC (+0.021), UAUC (+0.101) and x like-rate AUC (+0.013; README
#: "The default recipe"). It needs a collaborative model
#: (:func:`llmrec.collab.data.load_or_fit_collab`; ``llmrec train`` and ``eval/tallrec_auc.py`` fit the default one
#: on first use) and item ids, so zero-shot scoring, alpaca records and your own ``--interactions`` use
#: :data:`TEXT_TEMPLATE`.
DEFAULT_TEMPLATE = "tallrec-last5-taste"
#: The text-only recipe (the best text row of ``eval/levers.py``, ``last5+mirror``; README "Accuracy levers"):
#: TALLRec's prompt on the 5 most recent history items. The default wherever collaborative tokens cannot be used.
TEXT_TEMPLATE = "tallrec-last5"
DEFAULT_AUGMENT = "mirror"
#: Epochs of the un-augmented recipe (TALLRec-style, early stopping on validation AUC).
TALLREC_EPOCHS = 10
#: Fewest optimizer steps of the default budget: 10 epochs of 64 shots at batch 8. Below 64 shots the
#: epoch budget grows to reach it (16 shots: 20 epochs; +0.06 mean test AUC over 5 seeds, README).
MIN_STEPS = 80


def epoch_budget(augment: Sequence[str], copies: int = 1, epochs: int = TALLREC_EPOCHS, *, shots: int | None = None,
                 batch_size: int = 8, min_steps: int = MIN_STEPS) -> int:
    """Maximum epochs of the default recipe: the steps of ``epochs`` un-augmented epochs, at least ``min_steps``.

    Each augmentation adds ``copies`` samples per k-shot sample, so the training set is
    ``m = 1 + len(augment) * copies`` times larger and ``epochs / m`` epochs (rounded half up, at least 1)
    keep the optimizer steps (``mirror`` x1: 10 -> 5; ``rotate`` x2: 10 -> 3). With ``shots`` given, the
    budget is raised until an epoch count reaches ``min_steps`` steps of ``batch_size`` prompts (per process):
    16 shots + mirror = 32 prompts = 4 steps per epoch -> 20 epochs. Early stopping still ends runs sooner.

    Raises:
        ValueError: ``copies``, ``epochs``, ``shots`` or ``batch_size`` below 1 (names it), ``min_steps < 0``.
    """
    for name, v in {"copies": copies, "epochs": epochs, "batch_size": batch_size, "shots": shots}.items():
        if v is not None and v < 1:
            raise ValueError(f"{name} {v}: must be >= 1")
    if min_steps < 0:
        raise ValueError(f"min_steps {min_steps}: must be >= 0")
    m = 1 + len(augment) * copies
    budget = max(1, int(epochs / m + 0.5))
    if shots is None:
        return budget
    return max(budget, math.ceil(min_steps / math.ceil(shots * m / batch_size)))


def load_tallrec(data: str | Path | None = None):
    """Read a dataset (default: the embedded MovieLens-100K) and build TALLRec's splits.

    Returns:
        ``(RecData, TallrecSplits)``; on ML-100K train/valid/test = 8000/1000/1000 samples.

    Raises:
        FileNotFoundError / ValueError: from the readers (they name the file, field and value), or no samples
            at all (the message says why: every user has <= 10 ratings).
    """
    rec = load_dataset(data if data is not None else assets.ml100k_dir())
    splits = tallrec_splits(rec.interactions)
    if not (len(splits.train) or len(splits.valid) or len(splits.test)):
        from llmrec.samples.tallrec import HISTORY_LEN

        counts = rec.interactions.frame["user_id"].value_counts()
        raise ValueError(f"data {data if data is not None else 'ml-100k'}: no TALLRec samples: every user has <= "
                         f"{HISTORY_LEN} ratings (most: {int(counts.max()) if len(counts) else 0}; a sample is "
                         f"{HISTORY_LEN} history ratings and a target)")
    return rec, splits


def load_protocol(data: str | Path | None = None, config=None, *, interactions: str | Path | None = None,
                  items: str | Path | None = None, columns=None, rating_scale=None, item_id: str | None = None,
                  title: str | None = "title", item_noun: str | None = None):
    """Read a dataset -- a MovieLens folder (``data``, default the embedded ML-100K) or the user's own
    interactions file (``interactions`` + ``items``, :func:`llmrec.data.read_tabular`) -- and build the samples of
    a protocol (:func:`llmrec.samples.protocol.build_protocol`; default: TALLRec-movie for a MovieLens folder, a
    custom protocol with the threshold derived from the rating scale for the user's file).

    Returns:
        :class:`llmrec.samples.protocol.ProtocolResult` (splits, catalogue with the item text, the like rule).

    Raises:
        FileNotFoundError / ValueError: from the readers and the protocol (they name the file, line, field, value).
    """
    from llmrec.data.tabular import ColumnMap, read_tabular
    from llmrec.samples.protocol import TALLREC_MOVIE, ProtocolConfig, build_protocol

    if interactions is not None:
        rec = read_tabular(interactions, items, columns=columns or ColumnMap(), rating_scale=rating_scale,
                           item_id=item_id, title=title, item_noun=item_noun or "item")
        config = config or ProtocolConfig()
        source = str(interactions)
    else:
        rec = load_dataset(data if data is not None else assets.ml100k_dir())
        config = config or TALLREC_MOVIE
        source = str(data or "ml-100k")
    return build_protocol(rec, config, source=source)


def encode_sample_set(scorer: PointwiseScorer, sset, samples: Sequence[Sample] | None = None):
    """Render and tokenise a :class:`llmrec.samples.records.SampleSet` (or ``samples`` made from it, e.g.
    augmented): structured JSONL through the scorer's template and the set's catalogue; TALLRec alpaca records in
    their own wording (:meth:`SampleSet.alpaca`; all of them: the records as read), wrapped in the template's format.
    Returns :class:`llmrec.scoring.pointwise.Prompts` with the labels."""
    if sset.kind == "jsonl":
        return scorer.encode_samples(list(sset.samples if samples is None else samples), sset.catalog)
    if samples is None:
        return scorer.encode_alpaca(sset.records)
    return scorer.encode_alpaca(sset.alpaca(samples, answers=tuple(scorer.template.targets[:2])))


def like_rate_scores(samples: Sequence[Sample]) -> np.ndarray:
    """No-model baseline: fraction of liked items among the history, liked = ``rating > s.like_threshold`` (each
    sample's protocol threshold; TALLRec-movie: 3). (N,) float64.

    Raises:
        ValueError: a sample with an empty history (names its index and user): it has no like-rate.
    """
    for i, s in enumerate(samples):
        if not len(s.history_ratings):
            raise ValueError(f"sample {i} (user {s.user_id!r}): empty history, no like-rate")
    return np.array([np.mean([r > s.like_threshold for r in s.history_ratings]) for s in samples], dtype=np.float64)


def like_rate_product(p_yes: np.ndarray, samples: Sequence[Sample], prior: float = 1.0) -> np.ndarray:
    """The LM's P(Yes) times the like-rate as a product of experts: ``logit(p) + logit(r)`` per sample.

    ``r = (n_liked + prior) / (n + 2 prior)`` is the smoothed (Laplace) like-rate of the sample's own
    history (no labels beyond the sample, nothing fitted, so it scores one (user, item) as well as a
    batch). Returns (N,) float64 log-odds. Hinton's product of experts, with both experts weighted 1.

    Raises:
        ValueError: ``p_yes`` and ``samples`` differ in length, or ``prior <= 0``.
    """
    p = np.clip(np.asarray(p_yes, dtype=np.float64), 1e-6, 1 - 1e-6)
    if p.shape != (len(samples),):
        raise ValueError(f"p_yes has shape {p.shape}; expected ({len(samples)},), one score per sample")
    if not prior > 0:
        raise ValueError(f"prior {prior}: must be > 0")
    n = np.array([len(s.history_ratings) for s in samples], dtype=np.float64)
    r = (like_rate_scores(samples) * n + prior) / (n + 2 * prior)
    return np.log(p / (1 - p)) + np.log(r / (1 - r))


def probe_x_like_rate(samples: Sequence, probe: np.ndarray) -> np.ndarray:
    """float64 ``(n,)`` log-odds: ``logit(r) + z(probe) * sd(logit r)``, the no-LM probe weighted like the like-rate
    ``r`` (Laplace-smoothed, :func:`like_rate_product`); z over the scored set itself (no label, nothing
    fitted). ``eval/collab_probe.py``'s "cosine probe x like-rate" with :func:`llmrec.collab.match.taste_probe`.

    Raises:
        ValueError: ``probe`` and ``samples`` differ in length, or ``probe`` is constant.
    """
    probe = np.asarray(probe, dtype=np.float64)
    if probe.shape != (len(samples),):
        raise ValueError(f"probe has shape {probe.shape} for {len(samples)} samples")
    sd = probe.std()
    if not sd > 1e-12 * max(1.0, float(np.abs(probe).max())):
        raise ValueError("a probe that is constant over the samples cannot be z-scored")
    lr = like_rate_product(np.full(len(samples), 0.5), samples)  # logit(0.5) = 0: logit(r) alone
    return lr + (probe - probe.mean()) / sd * lr.std()


@dataclass
class KShotRun:
    """Result of :func:`tune_k_shot`: the tuned scorer and the run's record (JSON-serialisable)."""

    scorer: PointwiseScorer
    record: dict
    val_samples: list = None


def tune_k_shot(model: Any, tokenizer: Any, template: Template, splits: TallrecSplits, catalog, *, shots: int,
                seed: int, settings, lora=None, val_size: int = 128, val_seed: int = 1234,
                dtype: str = "auto", augment: str | Sequence[str] = (), augment_copies: int = 1,
                encode=None, scorer: PointwiseScorer | None = None) -> KShotRun:
    """LoRA-tune on ``shots`` samples drawn from the train split with ``seed`` (TALLRec's k-shot protocol).

    The validation subset for early stopping is ``val_size`` samples of the valid split, drawn with
    ``val_seed`` (the same for every run, so runs are comparable). ``augment`` (names from
    :data:`llmrec.samples.augment.AUGMENTATIONS`) adds ``augment_copies`` new samples per k-shot sample and
    method, made from those samples only (:func:`llmrec.samples.augment.augment_samples`, seeded with
    ``seed``). ``encode(scorer, samples) -> Prompts`` renders them (default: the template over ``catalog``; samples
    parsed from TALLRec alpaca records pass one that keeps their own wording, see :func:`encode_sample_set`).
    ``scorer``: the scorer that encodes (default a :class:`PointwiseScorer` of ``template``; prompts with
    collaborative tokens pass a :class:`llmrec.collab.train.CollabScorer` over ``model``). Returns a :class:`KShotRun`.

    Raises:
        ValueError: ``shots`` < 1 or larger than the train split (names the value); an unknown augmentation.
    """
    from llmrec.samples.augment import augment_samples, parse_augmentations
    from llmrec.samples.kshot import sample_k_shot
    from llmrec.train import train_lora

    if shots < 1:
        raise ValueError(f"shots {shots}: must be >= 1 for tuning (0 = zero-shot, no tuning)")
    augment = parse_augmentations(augment)
    train = sample_k_shot(splits.train, shots, seed)
    if augment:
        train = augment_samples(train, augment, copies=augment_copies, seed=seed)
    val = sample_k_shot(splits.valid, min(val_size, len(splits.valid)), val_seed) if val_size > 0 else []
    scorer = scorer or PointwiseScorer(model, tokenizer, template, dtype=dtype)
    enc = encode or (lambda sc, ss: sc.encode_samples(ss, catalog))
    tr = enc(scorer, train)
    va = enc(scorer, val) if val else None
    result = train_lora(model, tokenizer, scorer.verbalizer, tr.input_ids, tr.labels.tolist(), settings, lora,
                        va.input_ids if va else None, va.labels.tolist() if va else None)
    scorer.model = result.model
    record = {"shots": shots, "seed": seed, "augment": list(augment), "augment_copies": augment_copies if augment else 0,
              "train_samples": len(train), "val_size": len(val), "best_val_auc": result.best_val_auc,
              "val_auc_history": result.val_auc_history, "epochs_run": result.epochs_run,
              "train_seconds": result.train_seconds, "train_tokens": result.train_tokens,
              "train_positives": int(tr.labels.sum()), "settings": result.settings}
    return KShotRun(scorer, record, val)


@dataclass
class LikeRateBlend:
    """Logistic blend of the LM's logit(P(Yes)) with the history like-rate (Platt-style calibration).

    ``score = w_lm * logit(p) + w_like * like_rate + b``, fitted by logistic regression on a labelled
    validation subset (the same one early stopping uses); monotone in ``p`` when ``w_lm > 0``.
    """

    w_lm: float
    w_like: float
    bias: float

    @staticmethod
    def _features(p_yes: np.ndarray, like_rate: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(p_yes, dtype=np.float64), 1e-6, 1 - 1e-6)
        return np.stack([np.log(p / (1 - p)), np.asarray(like_rate, dtype=np.float64)], axis=1)

    @classmethod
    def fit(cls, p_yes: np.ndarray, like_rate: np.ndarray, labels: np.ndarray) -> "LikeRateBlend":
        """Fit on (N,) arrays. Raises ValueError if the labels hold one class only."""
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(labels)
        if len(set(y.tolist())) < 2:
            raise ValueError("blend labels hold one class only")
        lr = LogisticRegression(C=1.0).fit(cls._features(p_yes, like_rate), y)
        return cls(float(lr.coef_[0, 0]), float(lr.coef_[0, 1]), float(lr.intercept_[0]))

    def __call__(self, p_yes: np.ndarray, like_rate: np.ndarray) -> np.ndarray:
        """(N,) blended scores (log-odds)."""
        f = self._features(p_yes, like_rate)
        return f[:, 0] * self.w_lm + f[:, 1] * self.w_like + self.bias
