"""Adapters with collaborative tokens: the LoRA adapter (peft, safetensors; the projector rides in it as a
``modules_to_save`` module) plus

* ``collab_projector.safetensors``: the projector alone (:func:`llmrec.collab.projector.save_projector`,
  with its config and the collaborative model's content hash in the file's metadata);
* ``collab/``: the collaborative model itself (:meth:`llmrec.collab.data.CollabModel.save`), so the adapter
  is self-contained;
* ``llmrec.json`` field ``collab``: ``{"sha256", "projector", "model"}``.

Loading with another collaborative model than the recorded one is refused (:class:`llmrec.adapter.AdapterError`
naming ``collab.sha256``), as a template or base-model mismatch is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llmrec.adapter import META, AdapterError, read_metadata, recorded_template, save_adapter

from .data import CollabModel
from .projector import PROJECTOR_FILE, load_projector, save_projector
from .tokens import SlotTable, find_collab_embedding, install

__all__ = ["save_collab_adapter", "load_collab_adapter"]


def save_collab_adapter(model: Any, out_dir: str | os.PathLike, *, collab: CollabModel, **kw) -> Path:
    """:func:`llmrec.adapter.save_adapter` for a model from :func:`llmrec.collab.train.attach` (a peft model, not
    merged), adding the projector file, the collaborative model and the ``collab`` record (atomically, in the same
    folder swap). ``kw``: save_adapter's keyword arguments (base_model, template, verbalizer, ...)."""
    from .train import projector_module

    proj = projector_module(model)

    def extra(tmp: Path) -> dict:
        save_projector(tmp / PROJECTOR_FILE, proj, collab.sha256)
        collab.save(tmp / "collab")
        return {"collab": {"sha256": collab.sha256, "projector": PROJECTOR_FILE, "model": "collab"}}

    return save_adapter(model, out_dir, extra=extra, **kw)


def load_collab_adapter(adapter_dir: str | os.PathLike, *, collab: CollabModel | None = None,
                        base_model: str | None = None, dtype: str = "float32", merge: bool = True):
    """Load base model + collaborative tokens + adapter for scoring.

    Args:
        collab: the collaborative model to run with; default the one stored in the adapter. Its content hash
            must equal the recorded ``collab.sha256``.
        base_model: load onto this model instead of the recorded one.

    Returns:
        ``(model, tokenizer, template, verbalizer, metadata, SlotTable)``.

    Raises:
        AdapterError: not a collaborative-token adapter, or a ``collab.sha256`` mismatch (names the field and
            both hashes); FileNotFoundError: missing files.
    """
    from peft import PeftModel

    from llmrec.model import load_base_model, peft_wrapping, verbalizer_for

    d = Path(adapter_dir)
    meta = read_metadata(d)
    rec = meta.get("collab")
    if not rec:
        raise AdapterError(f"adapter {d}: {META} has no 'collab' record: not an adapter with collaborative tokens")
    cm = collab if collab is not None else CollabModel.load(d / rec.get("model", "collab"))
    if cm.sha256 != rec.get("sha256"):
        raise AdapterError(f"adapter {d}: collab.sha256 {str(rec.get('sha256'))[:12]} is recorded, but the collaborative "
                           f"model given has {cm.sha256[:12]}: its vectors are not the ones the projector was trained on")
    proj, _ = load_projector(d / rec.get("projector", PROJECTOR_FILE), expect_collab_sha256=cm.sha256)
    template = recorded_template(d, meta)
    model, tok = load_base_model(base_model or meta["base_model"], dtype=dtype)
    install(model, proj)
    try:
        with peft_wrapping():
            model = PeftModel.from_pretrained(model, str(d))
    except Exception as e:
        raise AdapterError(f"adapter {d}: peft cannot load it: {e}") from e
    if merge:
        model = model.merge_and_unload()
    model.eval()
    slots = SlotTable(cm, find_collab_embedding(model))
    probe = {v: [] if v in ("liked", "disliked", "history") else "" for v in template.referenced_variables()}
    if "target_id" in probe:  # item_token() refuses an empty id
        probe["target_id"] = cm.catalog_items[0]
    verb = verbalizer_for(template, tok, template.render(probe, tok))
    if verb.token_ids != meta["verbalizer"]["token_ids"]:
        raise AdapterError(f"adapter {d}: verbalizer token ids {meta['verbalizer']['token_ids']} differ from "
                           f"{verb.token_ids} under the loaded tokenizer (wrong base model?)")
    return model, tok, template, verb, meta, slots
