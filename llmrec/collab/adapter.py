"""Adapters with collaborative tokens: the LoRA adapter (peft, safetensors; the projector rides in it as a
``modules_to_save`` module) plus

* ``collab_projector.safetensors``: the projector alone (:func:`llmrec.collab.projector.save_projector`,
  with its config and the collaborative model's content hash in the file's metadata);
* ``collab/``: the collaborative model itself (:meth:`llmrec.collab.data.CollabModel.save`), so the adapter
  is self-contained;
* ``llmrec.json`` field ``collab``: ``{"sha256", "projector", "model", "pair_form"}`` (``pair_form``: how
  ``⟨taste⟩`` / ``⟨match⟩`` rows were built, :data:`llmrec.collab.match.PAIR_FORMS`; loading rebuilds them the
  same way).

Loading is :func:`llmrec.adapter.load_adapter` (it reads the ``collab`` record, installs the projector before
peft loads, and builds the :class:`~llmrec.collab.tokens.SlotTable`: ``llmrec.collab.tokens.slot_table(model)``).
Another collaborative model than the recorded one is refused (:class:`llmrec.adapter.AdapterError` naming
``collab.sha256``), as a template or base-model mismatch is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llmrec.adapter import save_adapter

from .data import CollabModel
from .projector import PROJECTOR_FILE, save_projector

__all__ = ["save_collab_adapter"]


def save_collab_adapter(model: Any, out_dir: str | os.PathLike, *, collab: CollabModel, **kw) -> Path:
    """:func:`llmrec.adapter.save_adapter` for a model from :func:`llmrec.collab.train.attach` (a peft model, not
    merged), adding the projector file, the collaborative model and the ``collab`` record (atomically, in the same
    folder swap). ``kw``: save_adapter's keyword arguments (base_model, template, verbalizer, ...)."""
    from .train import projector_module

    from .tokens import slot_table

    proj = projector_module(model)
    slots = slot_table(model)
    form = slots.pair_form if slots is not None else "score"

    def extra(tmp: Path) -> dict:
        save_projector(tmp / PROJECTOR_FILE, proj, collab.sha256)
        collab.save(tmp / "collab")
        return {"collab": {"sha256": collab.sha256, "projector": PROJECTOR_FILE, "model": "collab", "pair_form": form}}

    return save_adapter(model, out_dir, extra=extra, **kw)
