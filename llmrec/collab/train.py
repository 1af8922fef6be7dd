"""Training with collaborative tokens: alignment on implicit next-item data, then few-shot preference tuning.

Everything goes through :func:`llmrec.train.train_lora` -> :func:`llmrec.train.run_trainer` (transformers'
Trainer, so ``accelerate launch`` still works): the model is wrapped by :func:`llmrec.collab.tokens.wrap_peft`
(LoRA + the projector as a peft ``modules_to_save`` module), so the Trainer optimises, checkpoints and
restores the projector with the adapter. Which parameters train in a stage is set by
:func:`set_trainable` (CoLLM's second step: projector only, LoRA frozen).

Orders compared in ``eval/collab_auc.py`` (issue 15):

* ``two-stage``: alignment (LoRA + projector) on implicit next-item Yes/No prompts, then k-shot (both);
* ``collm``: k-shot LoRA on the text-only template, then k-shot projector only on the hybrid template, LoRA
  frozen (CoLLM, Zhang et al., TKDE);
* ``joint``: one k-shot stage, LoRA and projector together from scratch (CoLLM's worst variant).

Alignment data (:func:`alignment_samples`) uses only the collaborative model's users (no TALLRec valid/test
user) and only the order of their interactions: each prompt is a 10-item history from a user's leave-one-out
training sequence (the last item, SASRec's validation item, is left out), all rendered as "preference" (no
rating exists in implicit data), the target either the item that came next (Yes) or one of SASRec's top-20
hard candidates the user never interacted with (No); shuffled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from llmrec.model import LoraSettings, check_context, verbalizer_for
from llmrec.prompts.collab_syntax import source_places_tokens
from llmrec.prompts.render import render_samples
from llmrec.samples.tallrec import HISTORY_LEN, Sample
from llmrec.scoring.pointwise import PointwiseScorer, Prompts

from .data import CollabModel
from .projector import Projector
from .tokens import SlotTable, encode_with_tokens, find_collab_embedding, install, new_projector, wrap_peft

__all__ = ["CollabScorer", "attach", "projector_module", "set_trainable", "alignment_samples", "tune_stage",
           "IMPLICIT_RATING"]

#: What an implicit history item is rendered as (liked: "preference"); alignment prompts carry no rating.
IMPLICIT_RATING = 5.0


class CollabScorer(PointwiseScorer):
    """:class:`~llmrec.scoring.pointwise.PointwiseScorer` whose prompts may hold collaborative tokens.

    ``encode_samples`` renders as usual, then :func:`~llmrec.collab.tokens.encode_with_tokens` maps each
    marker to one slot id (``⟨user⟩`` -> the SASRec user vector of the sample's full history). Scoring is
    unchanged (prefix-shared by default; slots are ordinary ids to it).
    """

    def __init__(self, model: Any, tokenizer: Any, template: Any, slots: SlotTable, **kw):
        super().__init__(model, tokenizer, template, **kw)
        self.slots = slots

    def encode_alpaca(self, records: Sequence[dict]) -> Prompts:
        """As :class:`~llmrec.scoring.pointwise.PointwiseScorer` for a text-only template; refused for a template
        that places collaborative tokens: alpaca records are text, with no item ids for them.

        Raises:
            ValueError: the template calls ``item_token`` / ``user_token`` (names the template).
        """
        if not source_places_tokens(self.template.source):
            return super().encode_alpaca(records)
        raise ValueError(f"template {self.template.name}: collaborative tokens need item ids, and alpaca records "
                         f"are text only; give structured samples (sample JSONL, --user/--target, or a split)")

    def encode_samples(self, samples: Sequence[Sample], catalog) -> Prompts:
        """Render ``samples`` and encode them with one slot id per marker.

        Returns:
            :class:`~llmrec.scoring.pointwise.Prompts` (labels from the samples).

        Raises:
            ValueError: no samples, a prompt past the model's context. KeyError: an item the collaborative
                model does not know.
        """
        texts = render_samples(self.template, samples, catalog, self.tokenizer)
        if not texts:
            raise ValueError("no prompts to encode")
        if self.verbalizer is None:
            self.verbalizer = verbalizer_for(self.template, self.tokenizer, texts[0])
        ids = encode_with_tokens(self.tokenizer, texts, [s.history for s in samples], self.slots,
                                 add_special_tokens=self.template.format != "chat",
                                 liked=[[r > s.like_threshold for r in s.history_ratings] for s in samples])
        check_context(self.model, [len(x) for x in ids])
        return Prompts(ids, np.asarray([s.label for s in samples], np.int64), list(texts))


def attach(model: Any, collab: CollabModel, lora: LoraSettings | None = None, seed: int = 0,
           projector: Projector | None = None) -> tuple[Any, SlotTable]:
    """Install collaborative tokens on a base model and wrap it for training.

    Returns:
        ``(peft model, SlotTable)``; the projector is fresh (``seed``) unless given.
    """
    proj = projector or new_projector(model, collab, seed=seed)
    install(model, proj)
    peft = wrap_peft(model, lora or LoraSettings(), seed=seed)
    return peft, SlotTable(collab, find_collab_embedding(peft))


def joint_scorer(model: Any, tokenizer: Any, template: Any, collab: CollabModel, lora: LoraSettings | None = None,
                 seed: int = 0, pair_form: str = "score", **kw) -> "CollabScorer":
    """The default recipe's k-shot stage set up on a base model: :func:`attach` (LoRA + a fresh projector, seeded),
    ⟨taste⟩ / ⟨match⟩ rows in ``pair_form``, LoRA and projector both trainable (one joint stage, README "The
    default recipe"). Returns the :class:`CollabScorer` over the peft model (``.model``; ``kw``: its ``dtype`` ...).

    Raises:
        ValueError: an unknown ``pair_form``.
    """
    from .match import _check_form

    _check_form(pair_form)
    peft, slots = attach(model, collab, lora, seed=seed)
    slots.pair_form = pair_form
    set_trainable(peft, lora=True, projector=True)
    return CollabScorer(peft, tokenizer, template, slots, **kw)


def projector_module(model: Any) -> Projector:
    """The projector that runs (the trained copy when peft wraps it in ``modules_to_save``)."""
    emb = find_collab_embedding(model)
    if emb is None:
        raise ValueError("model has no collaborative tokens installed")
    p = emb.projector
    if hasattr(p, "modules_to_save"):
        name = p.active_adapter if isinstance(p.active_adapter, str) else p.active_adapter[0]
        return p.modules_to_save[name]
    return p


def set_trainable(model: Any, *, lora: bool, projector: bool) -> dict:
    """Switch ``requires_grad`` of the LoRA and projector parameters; returns ``{"lora": n, "projector": n}``
    trainable parameter counts."""
    n = {"lora": 0, "projector": 0}
    proj = {id(p) for p in projector_module(model).parameters()}
    for name, p in model.named_parameters():
        if id(p) in proj:
            p.requires_grad_(projector)
            n["projector"] += p.numel() if projector else 0
        elif "lora_" in name:
            p.requires_grad_(lora)
            n["lora"] += p.numel() if lora else 0
    return n


def alignment_samples(collab: CollabModel, sequences: dict[str, list[str]], n: int, seed: int = 0,
                      negatives: int = 1, candidates: int = 20, history_len: int = HISTORY_LEN) -> list[Sample]:
    """Implicit next-item Yes/No samples (see the module docstring), shuffled.

    Args:
        sequences: ``{user: items oldest first}`` of the collaborative model's users
            (:func:`llmrec.collab.data.implicit_sequences` with the TALLRec valid/test users excluded).
        n: number of (user, position) draws; each gives one positive and ``negatives`` negatives.
        candidates: SASRec's top-``candidates`` (seen items excluded) from which negatives are drawn.

    Returns:
        ``list[Sample]``, ``n * (1 + negatives)`` long at most; ``history_ratings`` are all
        :data:`IMPLICIT_RATING` (no rating is read), labels 1 (next item) / 0 (hard negative).

    Raises:
        ValueError: a user id of ``sequences`` is among ``collab.excluded`` (a valid/test user), or no
            sequence is long enough.
    """
    bad = set(sequences) & set(collab.excluded)
    if bad:
        raise ValueError(f"sequences holds TALLRec valid/test users {sorted(bad)[:5]}: the alignment stage may not "
                         f"see them")
    g = np.random.default_rng(seed)
    idx = collab._sasrec_index
    pool = [(u, s[:-1]) for u, s in sequences.items() if len(s) - 1 > history_len]  # leave-one-out train part
    if not pool:
        raise ValueError(f"no sequence has more than {history_len + 1} items")
    draws = []
    for _ in range(n):
        u, s = pool[int(g.integers(len(pool)))]
        t = int(g.integers(history_len, len(s)))
        draws.append((u, s, t))
    hist_idx = [np.asarray([idx[i] for i in s[t - history_len:t] if i in idx] or [0], np.int64) for _, s, t in draws]
    top, _ = collab.sasrec.query(hist_idx, min(collab.sasrec.n_items, candidates + 100), exclude_seen=False)
    out = []
    for (u, s, t), cand in zip(draws, top):
        hist = list(s[t - history_len:t])
        seen = set(sequences[u])
        negs = [collab.sasrec_items[j] for j in cand if collab.sasrec_items[j] not in seen][:candidates]
        r = [IMPLICIT_RATING] * history_len
        out.append(Sample(u, hist, r, s[t], IMPLICIT_RATING, 1))
        for j in g.permutation(len(negs))[:negatives]:
            out.append(Sample(u, hist, r, negs[int(j)], 0.0, 0))
    return [out[i] for i in g.permutation(len(out))]


@dataclass
class StageResult:
    record: dict
    model: Any


def tune_stage(model: Any, scorer: PointwiseScorer, train: Sequence[Sample], val: Sequence[Sample], catalog,
               settings, lora: LoraSettings | None = None, *, train_lora_params: bool = True,
               train_projector: bool = True) -> StageResult:
    """One Trainer stage on Yes/No samples through :func:`llmrec.train.train_lora`.

    Args:
        model: the peft model from :func:`attach` (trained in place).
        scorer: encodes the samples (a :class:`CollabScorer` for token templates, the plain scorer for text).
        val: early-stopping samples (both labels); empty = no early stopping, the last epoch is kept.
        train_lora_params / train_projector: which parameters train (:func:`set_trainable`).

    Returns:
        :class:`StageResult` (record: seconds, tokens, trainable counts, validation AUCs).
    """
    from llmrec.train import train_lora

    counts = set_trainable(model, lora=train_lora_params, projector=train_projector)
    if not any(counts.values()):
        raise ValueError("nothing to train: LoRA and projector both frozen")
    scorer.model = model
    tr = scorer.encode_samples(list(train), catalog)
    va = scorer.encode_samples(list(val), catalog) if len(val) else None
    t0 = time.perf_counter()
    res = train_lora(model, scorer.tokenizer, scorer.verbalizer, tr.input_ids, tr.labels.tolist(), settings, lora,
                     va.input_ids if va else None, va.labels.tolist() if va else None)
    rec = {"train_samples": len(train), "trainable": counts, "train_seconds": res.train_seconds,
           "wall_seconds": time.perf_counter() - t0, "best_val_auc": res.best_val_auc,
           "val_auc_history": res.val_auc_history, "epochs_run": res.epochs_run,
           "mean_prompt_tokens": float(np.mean([len(x) for x in tr.input_ids]))}
    scorer.model = res.model
    return StageResult(rec, res.model)
