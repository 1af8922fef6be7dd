"""Collaborative tokens inside prompts: one input position per ``⟨item:ID⟩`` / ``⟨user⟩`` marker.

How a marker becomes an input embedding (CoLLM, Zhang et al. TKDE, and LLaRA, Liao et al. SIGIR 2024, build
``inputs_embeds`` and overwrite the placeholder positions with the projected CF embedding; this does the
same inside the embedding layer):

1. :func:`encode_with_tokens` splits the rendered text at the markers
   (:func:`llmrec.prompts.collab_syntax.split_markers`), tokenises the text pieces, and puts one **slot id**
   per marker. Slot ids start at the LM's embedding-table size ``V`` (never a real token): slot
   ``V + r`` is row ``r`` of the :class:`SlotTable` (item rows first, in the collaborative model's catalogue
   order, then one row per distinct user history and per distinct interaction marker, :mod:`.match`). Equal
   ids therefore mean equal vectors, so everything that works on token ids works unchanged: length bucketing,
   the Trainer's collator, and prefix-shared scoring (a shared prefix of ids is a shared prefix of embeddings;
   tests/collab check it within 1e-5).
2. :func:`install` replaces the LM's input embedding module by :class:`CollabEmbedding`, which looks up
   real token ids in the original table and replaces the slot positions by ``projector(table[r])``. The
   LM head (tied to the embedding matrix in SmolLM2) keeps the original ``V`` rows: a slot is never an
   answer.

The projector is a submodule of the model (``...embed_tokens.projector``), so the transformers Trainer
trains it with LoRA (peft ``modules_to_save``: :func:`wrap_peft`), checkpoints it and restores the best
epoch.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from llmrec.prompts.collab_syntax import split_markers

from .data import CollabModel
from .projector import Projector, ProjectorConfig

__all__ = ["CollabEmbedding", "SlotTable", "install", "encode_with_tokens", "find_collab_embedding", "slot_table",
           "wrap_peft", "new_projector"]


class CollabEmbedding(nn.Module):
    """Input embedding with collaborative slots.

    ``forward(ids)``: int64 ``(B, L)`` -> ``(B, L, H)`` in the base table's dtype. ``ids < V``: row of the
    base embedding; ``ids >= V``: ``projector(table[ids - V])`` cast to that dtype.

    Attributes:
        base: the original ``nn.Embedding`` (``weight`` is exposed, so weight tying keeps working).
        projector: :class:`Projector` (trainable).
        table: float32 ``(R, in_dim)`` buffer of collaborative vectors (not saved: rebuilt from the
            collaborative model by :class:`SlotTable`).
        slots: the :class:`SlotTable` that fills ``table`` (the last one made for this module), or None
            before one is made; read it with :func:`slot_table`.

    Raises:
        IndexError: (forward) a slot id past the table (names the id and the table size).
    """

    def __init__(self, base: nn.Embedding, projector: Projector):
        super().__init__()
        self.base = base
        self.projector = projector
        self.vocab = int(base.weight.shape[0])
        self.register_buffer("table", torch.zeros(0, projector.config.in_dim), persistent=False)
        self.slots = None  # set by SlotTable (a plain attribute: not a parameter, buffer or submodule)

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def num_embeddings(self) -> int:
        return self.vocab

    @property
    def embedding_dim(self) -> int:
        return int(self.base.weight.shape[1])

    @property
    def padding_idx(self):
        return getattr(self.base, "padding_idx", None)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        slot = ids >= self.vocab
        if not bool(slot.any()):
            return self.base(ids)
        out = self.base(ids.masked_fill(slot, 0))
        rows = ids[slot] - self.vocab
        if int(rows.max()) >= self.table.shape[0]:
            raise IndexError(f"collaborative slot id {int(rows.max()) + self.vocab}: the slot table has "
                             f"{self.table.shape[0]} rows (ids {self.vocab}..{self.vocab + self.table.shape[0] - 1})")
        vec = self.projector(self.table[rows]).to(out.dtype)
        return out.masked_scatter(slot.unsqueeze(-1), vec)


def _inner(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def find_collab_embedding(model: Any) -> CollabEmbedding | None:
    """The model's :class:`CollabEmbedding`, or None when collaborative tokens are not installed."""
    emb = _inner(model).get_input_embeddings()
    return emb if isinstance(emb, CollabEmbedding) else None


def slot_table(model: Any) -> "SlotTable | None":
    """The :class:`SlotTable` of a model with collaborative tokens (the one :func:`llmrec.adapter.load_adapter` or
    :func:`llmrec.collab.train.attach` made for it), or None when none is installed (a text-only model)."""
    emb = find_collab_embedding(model)
    return None if emb is None else emb.slots


def new_projector(model: Any, collab: CollabModel, seed: int = 0, hidden: int = 0) -> Projector:
    """A fresh projector sized for ``collab`` (in) and ``model``'s embedding width (out), scaled to both
    (see :mod:`.projector`)."""
    emb = _inner(model).get_input_embeddings()
    W = emb.weight.detach().float()
    V = collab.item_vectors.astype(np.float64)
    cfg = ProjectorConfig(in_dim=collab.dim, out_dim=int(W.shape[1]), hidden=hidden,
                          in_scale=float(np.sqrt((V ** 2).mean())) or 1.0, out_scale=float(W.std()) or 1.0)
    return Projector(cfg, seed=seed)


def install(model: Any, projector: Projector) -> CollabEmbedding:
    """Replace ``model``'s input embedding by a :class:`CollabEmbedding` around it (idempotent: an installed
    one gets the new projector). Install **before** wrapping with peft. Returns the module.

    Raises:
        ValueError: the projector's ``out_dim`` differs from the model's hidden size.
    """
    inner = _inner(model)
    emb = inner.get_input_embeddings()
    if isinstance(emb, CollabEmbedding):
        emb.projector = projector
        return emb
    if projector.config.out_dim != emb.weight.shape[1]:
        raise ValueError(f"projector out_dim {projector.config.out_dim}: the model's embedding width is "
                         f"{emb.weight.shape[1]}")
    ce = CollabEmbedding(emb, projector.to(emb.weight.device))
    inner.set_input_embeddings(ce)
    return ce


def wrap_peft(model: Any, lora, seed: int | None = None) -> Any:
    """LoRA as :func:`llmrec.model.add_lora` (same ``seed`` rule), plus the projector as a peft
    ``modules_to_save`` module, so the Trainer trains, checkpoints and restores it with the adapter."""
    from llmrec.model import add_lora

    return add_lora(model, lora, seed=seed, modules_to_save=["projector"])


class SlotTable:
    """The rows behind slot ids: every catalogue item of ``collab`` (row = catalogue order), then user rows.

    Args:
        collab: the collaborative model.
        embedding: the installed :class:`CollabEmbedding` whose ``table`` buffer this keeps in sync; it records
            this table as its ``slots`` (:func:`slot_table` finds it from the model).
    """

    def __init__(self, collab: CollabModel, embedding: CollabEmbedding):
        self.collab, self.embedding = collab, embedding
        embedding.slots = self
        items = collab.item_vectors.astype(np.float32)
        self._buf = torch.from_numpy(items.copy()).to(embedding.base.weight.device)  # rows 0.._n-1 in use
        self._n = len(collab.catalog_items)
        self._user_row: dict[tuple, int] = {}
        self._pair_row: dict[tuple, int] = {}
        self.pair_form = "score"  # form of ⟨taste⟩ / ⟨match⟩ rows (llmrec.collab.match.PAIR_FORMS)
        self._sync()

    @property
    def vocab(self) -> int:
        return self.embedding.vocab

    def _sync(self) -> None:
        dev = self.embedding.base.weight.device
        if self._buf.device != dev:  # the model moved since the last append
            self._buf = self._buf.to(dev)
        self.embedding.table = self._buf[: self._n]  # a view: the rows in use

    def item_slot(self, item_id: str) -> int:
        """Slot id of a catalogue item. Raises KeyError naming an unknown id."""
        r = self.collab._row.get(str(item_id))
        if r is None:
            raise KeyError(f"item_token({item_id!r}): item not in the collaborative model's catalogue")
        return self.vocab + r

    def add_users(self, histories: Sequence[Sequence[str]]) -> list[int]:
        """Slot ids for user histories (item ids, oldest first); new histories get a row (the SASRec user
        vector, :meth:`CollabModel.user_vectors`) appended to the table."""
        keys = [tuple(str(i) for i in h) for h in histories]
        new = [k for k in dict.fromkeys(keys) if k not in self._user_row]
        if new:
            self._append(self._user_row, new, self.collab.user_vectors([list(k) for k in new]))
        return [self.vocab + self._user_row[k] for k in keys]

    def _append(self, index: dict, new_keys: list, rows: np.ndarray) -> None:
        """Give each new key the next row and append ``rows`` (one per key, in order) to the table."""
        rows = np.asarray(rows, np.float32)
        if rows.shape != (len(new_keys), self._buf.shape[1]):
            raise ValueError(f"slot table: {len(new_keys)} new keys need rows of shape "
                             f"({len(new_keys)}, {self._buf.shape[1]}), got {rows.shape}")
        if not new_keys:
            return
        rows = torch.from_numpy(rows)
        self._sync()
        start, end = self._n, self._n + len(new_keys)
        if end > len(self._buf):  # grow by doubling: appending n rows in many calls costs O(n) copies, not O(n^2)
            grown = self._buf.new_zeros((max(end, 2 * len(self._buf)), self._buf.shape[1]))
            grown[:start] = self._buf[:start]
            self._buf = grown
        self._buf[start:end] = rows.to(self._buf.device)
        for k in new_keys:
            index[k] = self._n
            self._n += 1
        self._sync()

    def add_pairs(self, kind: str, item_ids: Sequence[str], histories: Sequence[Sequence[str]],
                  liked: Sequence[Sequence[bool]] | None = None) -> list[int]:
        """Slot ids for interaction markers (:mod:`llmrec.collab.match`): ``kind`` ``"taste"`` (item against the
        history's liked minus disliked items; needs ``liked``) or ``"match"`` (item against the SASRec user vector
        of the history), in the form ``self.pair_form`` (:data:`llmrec.collab.match.PAIR_FORMS`). New (item,
        history, flags, form) keys get a row appended to the table.

        Raises:
            ValueError: an unknown kind, lengths differ, or ``"taste"`` without ``liked`` (no ratings).
            KeyError: an item the collaborative model does not know (names the id).
        """
        from .match import match_vectors, taste_directions, taste_vectors

        if kind not in ("taste", "match"):
            raise ValueError(f"interaction marker kind {kind!r}: expected 'taste' or 'match'")
        if len(histories) != len(item_ids) or (liked is not None and len(liked) != len(item_ids)):
            raise ValueError(f"{len(item_ids)} item ids, {len(histories)} histories, "
                             f"{'no' if liked is None else len(liked)} liked rows: one each per marker")
        if kind == "taste" and liked is None:
            raise ValueError("taste_token needs the history's ratings (liked flags); these prompts have none (reranking "
                             "histories are item order only): use match_token")
        for i in item_ids:  # an unknown id is refused before any row is added
            if str(i) not in self.collab._row:
                raise KeyError(f"{kind}_token({i!r}): item not in the collaborative model's catalogue")
        form = self.pair_form  # a changed form gets new rows, not stale ones
        keys = [(kind, str(i), tuple(str(x) for x in h), tuple(bool(x) for x in liked[n]) if kind == "taste" else (),
                 form) for n, (i, h) in enumerate(zip(item_ids, histories))]
        new = [k for k in dict.fromkeys(keys) if k not in self._pair_row]
        if new:
            items = [k[1] for k in new]
            if kind == "taste":
                rows = taste_vectors(self.collab, items, taste_directions(self.collab, [k[2] for k in new],
                                                                          [k[3] for k in new]), self.pair_form)
            else:
                rows = match_vectors(self.collab, items, self.collab.user_vectors([list(k[2]) for k in new]),
                                     self.pair_form)
            self._append(self._pair_row, new, rows)
        return [self.vocab + self._pair_row[k] for k in keys]

    def vector(self, slot_id: int) -> np.ndarray:
        """float32 ``(in_dim,)`` behind a slot id (what the projector receives)."""
        return self.embedding.table[int(slot_id) - self.vocab].cpu().numpy()


def _special_prefix(tokenizer: Any, add_special_tokens: bool) -> list[int]:
    a = tokenizer("x", add_special_tokens=add_special_tokens).input_ids
    b = tokenizer("x", add_special_tokens=False).input_ids
    if a[len(a) - len(b):] != b:
        raise ValueError("this tokenizer adds special tokens after the text; collaborative-token prompts need "
                         "special tokens only before it")
    return list(a[: len(a) - len(b)])


def encode_with_tokens(tokenizer: Any, texts: Sequence[str], histories: Sequence[Sequence[str]] | None,
                       slots: SlotTable, add_special_tokens: bool = True,
                       liked: Sequence[Sequence[bool]] | None = None) -> list[list[int]]:
    """Token ids of prompt texts with one slot id per marker.

    Args:
        texts: rendered prompts (may hold ``⟨item:ID⟩`` / ``⟨user⟩`` / ``⟨taste:ID⟩`` / ``⟨match:ID⟩`` markers).
        histories: per text, the sample's history item ids, oldest first (for ``⟨user⟩``, ``⟨taste⟩``,
            ``⟨match⟩``); None when no text has such a marker.
        slots: the :class:`SlotTable`.
        add_special_tokens: as for the tokenizer (special tokens go before the first piece).
        liked: per text, one bool per history item (the protocol's like rule), for ``⟨taste:ID⟩``; None when the
            histories carry no rating.

    Returns:
        ``list[list[int]]``; a text without markers gets exactly ``tokenizer(text).input_ids``.

    Raises:
        KeyError: a marker names an item the collaborative model does not know.
        ValueError: a user-side marker without a history, ``⟨taste⟩`` without ``liked``; lengths differ.
    """
    if histories is not None and len(histories) != len(texts):
        raise ValueError(f"histories has {len(histories)} entries for {len(texts)} texts")
    if liked is not None and len(liked) != len(texts):
        raise ValueError(f"liked has {len(liked)} entries for {len(texts)} texts")
    pieces = [split_markers(t) for t in texts]
    # user-side markers, by kind: (text index, item id or None), in order
    want: dict[str, list] = {}
    for i, ps in enumerate(pieces):
        for x in ps:
            if isinstance(x, tuple) and x[0] != "item":
                want.setdefault(x[0], []).append((i, x[1]))
    if want and histories is None:
        raise ValueError(f"a prompt holds {', '.join(f'⟨{k}⟩' for k in sorted(want))} but no history was given")
    slot_of: dict[tuple, int] = {}  # (text index, kind, item id) -> slot id
    for kind, reqs in want.items():
        if kind == "user":
            got = slots.add_users([histories[i] for i, _ in reqs])
        else:
            got = slots.add_pairs(kind, [it for _, it in reqs], [histories[i] for i, _ in reqs],
                                  None if liked is None else [liked[i] for i, _ in reqs])
        slot_of.update({(i, kind, it): s for (i, it), s in zip(reqs, got)})
    head = _special_prefix(tokenizer, add_special_tokens)
    out = []
    for i, (text, ps) in enumerate(zip(texts, pieces)):
        if not any(isinstance(x, tuple) for x in ps):
            out.append(list(tokenizer(text, add_special_tokens=add_special_tokens).input_ids))
            continue
        ids = list(head)
        for x in ps:
            if isinstance(x, str):
                ids += tokenizer(x, add_special_tokens=False).input_ids
            elif x[0] == "item":
                ids.append(slots.item_slot(x[1]))
            else:
                ids.append(slot_of[(i, x[0], x[1])])
        out.append(ids)
    return out
