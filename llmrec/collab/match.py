"""Interaction vectors: one collaborative vector that already holds a user-item comparison.

A soft item token (``⟨item:ID⟩``) and a user token (``⟨user⟩``) leave the comparison to the language model:
it has to learn a bilinear form between two input positions from a few labelled prompts, and at 135M
parameters it does not (issue 15: the LM order of a token reranker is at random while the same vectors
order the candidates at +7 standard errors). The two markers here give the projector the comparison in a
form that is *linear in its input*: the elementwise product of the item vector with a user-side vector, whose
entries sum to a known no-LM score. The projector and LoRA still decide what to make of it.

* ``⟨taste:ID⟩`` (:func:`taste_vectors`): ``d * s * unit(v_item) * (unit(mean liked) - unit(mean disliked))``
  over the sample's history item vectors (liked = the protocol's rating rule). Its entries sum to
  ``d * s * (cos(v, mean liked) - cos(v, mean disliked))``: the liked-minus-disliked cosine of
  ``eval/collab_probe.py`` (no-LM test AUC 0.715, UAUC 0.638 on TALLRec's movie test set). A side with no
  history item contributes zero, as in that probe. Mirroring a sample (likes and dislikes swapped) negates it.
* ``⟨match:ID⟩`` (:func:`match_vectors`): ``v_item * u / rms(u)`` with ``u`` the SASRec user vector of the
  history (:meth:`~llmrec.collab.data.CollabModel.user_vectors`; item order only, no rating). Its entries sum
  to SASRec's next-item score ``u . v`` divided by ``rms(u)`` (one positive factor per user, so one user's
  candidates keep SASRec's order).

``d`` is the vector width and ``s`` the RMS of the catalogue's item vectors, so both kinds sit on the item
vectors' scale, which the projector divides by (:class:`~llmrec.collab.projector.ProjectorConfig.in_scale`).
Each kind comes in two forms (:data:`PAIR_FORMS`): the elementwise product itself (``"product"``, ``d`` degrees
of freedom) or its mean in every entry (``"score"``, the default: one degree of freedom, the no-LM score alone;
on 64 TALLRec shots the product form let the projector fit noise, see the README).
Shapes: every function takes and returns float32 ``(n, d)`` arrays (``d`` = ``collab.dim``, 64 for the
default SASRec).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .data import CollabModel

__all__ = ["item_rms", "taste_directions", "taste_vectors", "match_vectors", "PAIR_FORMS", "taste_probe"]

_EPS = 1e-12


def item_rms(collab: CollabModel) -> float:
    """RMS of all catalogue item vector entries (> 0; 1.0 for an all-zero table)."""
    v = float(np.sqrt(np.mean(collab.item_vectors.astype(np.float64) ** 2)))
    return v if v > 0 else 1.0


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(n > _EPS, x / np.maximum(n, _EPS), 0.0)


def taste_directions(collab: CollabModel, histories: Sequence[Sequence[str]],
                     liked: Sequence[Sequence[bool]]) -> np.ndarray:
    """float32 ``(n, d)``: ``unit(mean liked item vectors) - unit(mean disliked item vectors)`` per history (a side
    with no item contributes zero).

    Raises:
        ValueError: ``liked`` and ``histories`` differ in length, or a history and its flags differ (names the row).
        KeyError: an item the collaborative model does not know.
    """
    if len(liked) != len(histories):
        raise ValueError(f"liked has {len(liked)} rows for {len(histories)} histories")
    out = np.zeros((len(histories), collab.dim), np.float64)
    for n, (h, f) in enumerate(zip(histories, liked)):
        if len(h) != len(f):
            raise ValueError(f"history {n}: {len(h)} items but {len(f)} liked flags")
        L = [str(i) for i, x in zip(h, f) if x]
        D = [str(i) for i, x in zip(h, f) if not x]
        if L:
            out[n] += _unit(collab.item_matrix(L).astype(np.float64).mean(0))
        if D:
            out[n] -= _unit(collab.item_matrix(D).astype(np.float64).mean(0))
    return out.astype(np.float32)


#: Forms of an interaction row: ``"score"`` (every entry the same: the comparison's sum spread evenly, one degree
#: of freedom) or ``"product"`` (the elementwise product itself: which latent factors agree, ``d`` degrees of
#: freedom). Both sum to the same score.
PAIR_FORMS = ("score", "product")


def _check_form(form: str) -> None:
    if form not in PAIR_FORMS:
        raise ValueError(f"interaction row form {form!r}: expected one of {', '.join(PAIR_FORMS)}")


def _item_rows(collab: CollabModel, item_ids: Sequence[str], side: np.ndarray, name: str,
               form: str) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``(n, d)`` item vectors and the user-side rows ``side`` checked to match them (and ``form``)."""
    _check_form(form)
    side = np.asarray(side, np.float64)
    if side.shape != (len(item_ids), collab.dim):
        raise ValueError(f"{name} has shape {side.shape}: expected ({len(item_ids)}, {collab.dim})")
    return collab.item_matrix([str(i) for i in item_ids]).astype(np.float64), side


def _in_form(P: np.ndarray, form: str) -> np.ndarray:
    if form == "score":
        P = np.repeat(P.mean(-1, keepdims=True), P.shape[-1], axis=-1)
    return P.astype(np.float32)


def taste_vectors(collab: CollabModel, item_ids: Sequence[str], directions: np.ndarray,
                  form: str = "score") -> np.ndarray:
    """float32 ``(n, d)`` rows of ``⟨taste⟩`` markers, one per item id.

    ``form="product"``: ``d * item_rms * unit(v_item) * direction`` (elementwise). ``form="score"``: that row's
    mean in every entry. Either way ``row.sum() / (d * item_rms)`` equals ``cos(v, mean liked) - cos(v, mean
    disliked)``.

    Raises:
        ValueError: ``directions`` is not ``(len(item_ids), d)``, or an unknown form. KeyError: an unknown item.
    """
    V, directions = _item_rows(collab, item_ids, directions, "directions", form)
    return _in_form(collab.dim * item_rms(collab) * _unit(V) * directions, form)


def match_vectors(collab: CollabModel, item_ids: Sequence[str], users: np.ndarray, form: str = "score") -> np.ndarray:
    """float32 ``(n, d)`` rows of ``⟨match⟩`` markers, one per item id and user vector.

    ``form="product"``: ``v_item * u / rms(u)`` (elementwise). ``form="score"``: that row's mean in every entry.
    Either way ``row.sum() * rms(u)`` equals SASRec's score ``u . v_item``; an all-zero ``u`` gives a zero row.

    Raises:
        ValueError: ``users`` is not ``(len(item_ids), d)``, or an unknown form. KeyError: an unknown item.
    """
    V, users = _item_rows(collab, item_ids, users, "users", form)
    rms = np.sqrt((users ** 2).mean(-1, keepdims=True))
    return _in_form(np.where(rms > _EPS, V * users / np.maximum(rms, _EPS), 0.0), form)


def taste_probe(collab: CollabModel, samples: Sequence) -> np.ndarray:
    """float64 ``(n,)`` no-LM scores: ``cos(t, mean liked) - cos(t, mean disliked)`` of the item vectors of each
    sample's target ``t`` and history (liked = rating > the sample's like threshold, as the prompt splits it; a side
    with no item counts 0). The sum of the sample's ``⟨taste⟩`` product row over ``d * item_rms``: what the
    ``⟨taste⟩`` token hands the LM (``eval/collab_probe.py``'s "liked-disliked cosine").

    Raises:
        KeyError: an item the collaborative model does not know.
    """
    dirs = taste_directions(collab, [s.history for s in samples],
                            [[r > s.like_threshold for r in s.history_ratings] for s in samples])
    V, dirs = _item_rows(collab, [s.target for s in samples], dirs, "directions", "product")
    return (_unit(V) * dirs).sum(-1)

