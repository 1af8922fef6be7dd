"""Save and load tuned adapters: peft files plus ``llmrec.json`` (template, verbalizer, protocol, metrics).

An adapter folder holds ``adapter_model.safetensors`` + ``adapter_config.json`` (peft's own format,
safetensors only, never pickle) and ``llmrec.json``. Saving writes a temporary sibling folder, checks it
(non-empty LoRA tensors: TALLRec's users got empty adapters from newer peft), then swaps it into place,
so an interrupted save never damages an adapter saved before.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

from llmrec._atomic import atomic_dir

__all__ = ["AdapterError", "KINDS", "save_adapter", "read_metadata", "recorded_template", "adapter_kind",
           "check_kind", "load_adapter"]

META = "llmrec.json"

#: What an adapter was tuned for (``kind`` in llmrec.json) -> how messages name it.
KINDS = {
    "tallrec": "pointwise TALLRec adapter (llmrec train: P(Yes) that the user likes one target)",
    "rerank-listwise": "listwise reranker adapter (eval/rerank_eval.py: letters over up to 20 candidates)",
    "rerank-pointwise": "pointwise reranker adapter (eval/rerank_eval.py: P(Yes) per candidate after a history)",
}


class AdapterError(ValueError):
    """An adapter folder is missing, corrupt, empty, or does not match the requested template/model."""


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for d in ("llmrec", "torch", "transformers", "peft"):
        try:
            out[d] = md.version(d)
        except md.PackageNotFoundError:
            pass
    return out


def _check_adapter_file(path: Path) -> int:
    """Number of LoRA tensors in ``adapter_model.safetensors``; raises AdapterError if unreadable or empty."""
    from safetensors import safe_open

    f = path / "adapter_model.safetensors"
    if not f.is_file():
        raise AdapterError(f"adapter {path}: adapter_model.safetensors is missing")
    try:
        with safe_open(str(f), framework="pt") as sf:
            keys = list(sf.keys())
            nonzero = any(sf.get_tensor(k).abs().sum() > 0 for k in keys if "lora_B" in k)
    except Exception as e:  # safetensors raises SafetensorError / OSError for bad headers
        raise AdapterError(f"adapter {path}: adapter_model.safetensors is corrupt ({type(e).__name__}: {e})") from e
    if not any("lora_" in k for k in keys):
        raise AdapterError(f"adapter {path}: adapter_model.safetensors holds no LoRA tensors (empty adapter)")
    if not nonzero:
        raise AdapterError(f"adapter {path}: every lora_B tensor is zero (the adapter was never trained)")
    return len(keys)


def template_kind(template: Any) -> str:
    """The adapter kind a template's task and variables imply: listwise -> ``rerank-listwise``; pointwise over a
    ``history`` (titles) or ``history_ids`` and only the pointwise reranker's variables (``history``,
    ``history_ids``, ``target``, ``target_id``) -> ``rerank-pointwise``; other pointwise (TALLRec's ``liked`` /
    ``disliked`` / ``item_noun`` / ``target_genres`` ...) -> ``tallrec``."""
    if template.task == "listwise":
        return "rerank-listwise"
    v = set(template.referenced_variables())
    if v & {"history", "history_ids"} and v <= {"history", "history_ids", "target", "target_id"}:
        return "rerank-pointwise"
    return "tallrec"


def adapter_kind(meta: dict) -> str:
    """The kind of an adapter from its llmrec.json: the recorded ``kind``; for adapters saved before kinds were
    recorded, ``protocol.task`` (``rerank-listwise``/``rerank-pointwise``), ``protocol.name`` ``tallrec-*``, else
    what the recorded template implies (:func:`template_kind`); ``"unknown"`` when none of these tells."""
    k = meta.get("kind")
    if k in KINDS:
        return k
    proto = meta.get("protocol") or {}
    if proto.get("task") in KINDS:
        return proto["task"]
    if str(proto.get("name", "")).startswith("tallrec"):
        return "tallrec"
    try:
        from llmrec.prompts import Template

        t = meta["template"]
        return template_kind(Template.from_string(t["source"], name=t.get("name", "recorded")))
    except Exception:  # a template that no longer parses: the kind is not known
        return "unknown"


def check_kind(adapter_dir: str | os.PathLike, meta: dict, expected: Any, user: str) -> str:
    """Refuse an adapter of another kind than ``expected`` (a kind or a tuple of kinds) in one line naming both;
    ``user`` names what needs it (``"llmrec score"``). An ``"unknown"`` kind passes. Returns the kind.

    Raises:
        AdapterError: ``"adapter A is a pointwise TALLRec adapter (...) (kind 'tallrec'); Reranker.from_pretrained
            needs a listwise reranker adapter (...) or ..."``.
    """
    expected = (expected,) if isinstance(expected, str) else tuple(expected)
    kind = adapter_kind(meta)
    if kind != "unknown" and kind not in expected:
        want = " or ".join(f"a {KINDS[e]} (kind {e!r})" for e in expected)
        raise AdapterError(f"adapter {adapter_dir} is a {KINDS[kind]} (kind {kind!r}); {user} needs {want}")
    return kind


def save_adapter(model: Any, out_dir: str | os.PathLike, *, base_model: str, template: Any, verbalizer: Any,
                 protocol: dict | None = None, metrics: dict | None = None, train: dict | None = None,
                 kind: str | None = None, extra: Callable[[Path], dict] | None = None) -> Path:
    """Save a peft model's adapter and llmrec metadata atomically.

    Args:
        model: a peft ``PeftModel``.
        out_dir: destination folder; an existing adapter there is replaced only after the new one is
            fully written and checked.
        base_model: the ``--base-model`` value it was tuned from.
        template: the :class:`llmrec.prompts.Template` used (name and sha256 are recorded).
        verbalizer: :class:`llmrec.model.Verbalizer` (words and token ids recorded).
        protocol / metrics / train: free-form JSON-serialisable records (data protocol, AUCs, settings).
        kind: what it was tuned for, one of :data:`KINDS`; default: what the template implies
            (:func:`template_kind`). Loading it where another kind is needed is refused (:func:`check_kind`).
        extra: called with the temporary folder after the adapter is written there; may add files beside it
            and returns fields merged into ``llmrec.json`` (collaborative tokens: :mod:`llmrec.collab.adapter`).

    The base model's weight fingerprint (:func:`llmrec.model.base_fingerprint`) is recorded as
    ``base_fingerprint`` (null when its weights are not on disk as safetensors); :func:`load_adapter` checks it.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        AdapterError: the saved adapter is empty or unreadable (the previous one is kept).
        FileExistsError: ``out_dir`` is a file or a non-empty folder that is not an llmrec adapter (it
            would be wiped).
    """
    out = Path(out_dir)
    kind = kind or template_kind(template)
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    with atomic_dir(out, META, "LoRA adapter") as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        n = _check_adapter_file(tmp)
        meta = {
            "format": "llmrec-adapter/1",
            "kind": kind,
            "base_model": base_model,
            "base_fingerprint": _fingerprint_or_none(base_model),
            "template": {"name": template.name, "sha256": template.sha256, "task": template.task,
                         "format": template.format, "source": template.source},
            "verbalizer": {"words": verbalizer.words, "token_ids": verbalizer.token_ids},
            "protocol": protocol or {},
            "metrics": metrics or {},
            "train": train or {},
            "tensors": n,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": _versions(),
        }
        if extra is not None:
            meta.update(extra(tmp))
        (tmp / META).write_text(json.dumps(meta, indent=2, default=str))
    return out


def _fingerprint_or_none(base_model: str) -> str | None:
    from llmrec.model import base_fingerprint

    try:
        return base_fingerprint(base_model)
    except Exception:  # e.g. an embedded model that cannot be fetched: nothing to record
        return None


def read_metadata(adapter_dir: str | os.PathLike) -> dict:
    """The ``llmrec.json`` of an adapter folder.

    Raises:
        FileNotFoundError: the folder or its llmrec.json is missing.
        AdapterError: llmrec.json is not valid JSON or lacks required fields.
    """
    d = Path(adapter_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"adapter folder not found: {d}")
    f = d / META
    if not f.is_file():
        raise FileNotFoundError(f"adapter {d}: {META} is missing (not an llmrec adapter)")
    try:
        meta = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise AdapterError(f"adapter {d}: {META} is not valid JSON ({e})") from e
    for k in ("base_model", "template", "verbalizer"):
        if k not in meta:
            raise AdapterError(f"adapter {d}: {META} lacks field {k!r}")
    return meta


def recorded_template(adapter_dir: str | os.PathLike, meta: dict | None = None):
    """The :class:`llmrec.prompts.Template` an adapter was tuned with, rebuilt from ``llmrec.json`` (no model
    loads: commands resolve it before loading weights).

    Raises:
        FileNotFoundError / AdapterError: as :func:`read_metadata`, or a stored source whose sha256 differs.
    """
    from llmrec.prompts import Template

    d = Path(adapter_dir)
    meta = read_metadata(d) if meta is None else meta
    recorded = Template.from_string(meta["template"]["source"], name=meta["template"]["name"])
    if recorded.sha256 != meta["template"].get("sha256"):
        raise AdapterError(f"adapter {d}: {META} template.sha256 does not match its stored template source "
                           f"(edited by hand?)")
    return recorded


def load_adapter(adapter_dir: str | os.PathLike, *, template: Any = None, allow_template_mismatch: bool = False,
                 base_model: str | None = None, dtype: str = "auto", merge: bool = True,
                 kind: Any = None, user: str = "this command", allow_base_mismatch: bool = False,
                 collab: Any = None):
    """Load base model + adapter for scoring (with its collaborative tokens when it carries them).

    Args:
        adapter_dir: folder written by :func:`save_adapter` (or :func:`llmrec.collab.adapter.save_collab_adapter`).
        template: the template to score with; default: the one recorded in the adapter (rebuilt from
            its stored source). A different template (by sha256) is an error unless
            ``allow_template_mismatch``.
        base_model: load it onto this model instead of the recorded one (e.g. a local copy of it); either way
            the weights must have the recorded fingerprint (``base_fingerprint`` in llmrec.json) unless
            ``allow_base_mismatch``, and the returned metadata's ``loaded_base`` says what was loaded.
        merge: merge LoRA into the base weights (faster scoring; identical scores within fp32 rounding).
        dtype: weight dtype for scoring (:func:`llmrec.precision.weight_dtype`): ``"auto"`` (default) loads and
            merges in float32, then casts to bf16 on a CUDA GPU with bf16 (float32 stays on a CPU).
        kind / user: the adapter kind(s) the caller needs (:data:`KINDS`) and its name for messages; another
            kind is refused before the model loads (:func:`check_kind`). None: any kind.
        collab: for an adapter with collaborative tokens (a ``collab`` record in llmrec.json): the
            :class:`llmrec.collab.data.CollabModel` to run with; default the one stored in the adapter. Its
            content hash must equal the recorded ``collab.sha256``.

    Collaborative tokens: the projector (``collab_projector.safetensors``, checked against ``collab.sha256``) is
    installed on the base model (:func:`llmrec.collab.tokens.install`) before peft loads the adapter; after the
    merge a :class:`llmrec.collab.tokens.SlotTable` is built for the model. Get it with
    ``llmrec.collab.tokens.slot_table(model)`` (None for a text-only adapter); the returned metadata's
    ``loaded_collab`` says which collaborative model was loaded (``{"sha256", "from"}``; absent without tokens).

    Returns:
        ``(model, tokenizer, template, verbalizer, metadata)``.

    Raises:
        FileNotFoundError / AdapterError: missing or corrupt files, empty adapter, template mismatch,
            verbalizer token ids that differ under the loaded tokenizer; a collaborative model whose content
            hash differs from the recorded ``collab.sha256`` (names the field and both short hashes); ``collab``
            given for an adapter without a ``collab`` record; a template with collaborative tokens
            (item_token / user_token) on an adapter without one.
    """
    from peft import PeftModel

    from llmrec.model import cast_for_scoring, load_base_model, peft_wrapping, verbalizer_for

    d = Path(adapter_dir)
    meta = read_metadata(d)
    if kind is not None:
        check_kind(d, meta, kind, user)
    _check_adapter_file(d)
    recorded = recorded_template(d, meta)
    if template is None:
        template = recorded
    elif template.sha256 != meta["template"]["sha256"] and not allow_template_mismatch:
        raise AdapterError(f"adapter {d} was tuned with template {meta['template']['name']!r} "
                           f"(sha256 {meta['template']['sha256'][:12]}), not {template.name!r} "
                           f"(sha256 {template.sha256[:12]}); pass --allow-template-mismatch (allow_template_mismatch=True) to override")
    cm, projector = _collab_parts(d, meta, collab)  # checked before the base model loads
    name = base_model or meta["base_model"]
    where = "base_model" if base_model else f"recorded in {d / META}"
    recorded_fp = meta.get("base_fingerprint")
    actual_fp = _fingerprint_or_none(name) if recorded_fp or base_model else None
    if recorded_fp and actual_fp and actual_fp != recorded_fp and not allow_base_mismatch:
        raise AdapterError(f"adapter {d} was tuned on base model {meta['base_model']!r} (weights sha256 "
                           f"{recorded_fp[:12]}), but {name!r} ({where}) has weights sha256 {actual_fp[:12]}: another "
                           f"model's weights give wrong scores; pass --allow-base-mismatch (allow_base_mismatch=True) "
                           f"to load it anyway")
    if base_model and not recorded_fp:
        import warnings

        warnings.warn(f"adapter {d} records no base-model fingerprint: cannot check that {name!r} is the model it "
                      f"was tuned on ({meta['base_model']!r})", stacklevel=2)
    try:
        model, tok = load_base_model(name, dtype="float32" if dtype == "auto" else dtype)
    except OSError as e:
        if base_model:
            raise  # "base_model 'x': cannot load it ...": the caller's value (the CLI names --base-model)
        raise AdapterError(f"adapter {d}: its base model {name!r} ({where}) cannot be loaded "
                           f"({str(e).split(': ', 1)[-1]}); pass base_model= a local copy of it") from e
    meta = {**meta, "loaded_base": {"base_model": name, "from": "base_model" if base_model else META,
                                    "sha256": actual_fp, "recorded_sha256": recorded_fp,
                                    "mismatch_allowed": bool(recorded_fp and actual_fp and actual_fp != recorded_fp)}}
    if cm is not None:
        from llmrec.collab.tokens import install

        try:
            install(model, projector)  # before peft: its modules_to_save copy of the projector loads onto it
        except ValueError as e:  # projector out_dim != this model's hidden size
            raise AdapterError(f"adapter {d}: its collaborative-token projector does not fit {name!r} ({where}): "
                               f"{e}") from e
        meta["loaded_collab"] = {"sha256": cm.sha256, "from": "collab" if collab is not None else META}
    try:
        with peft_wrapping():
            model = PeftModel.from_pretrained(model, str(d))
    except Exception as e:
        raise AdapterError(f"adapter {d}: peft cannot load it onto {name!r} ({where}): {e}") from e
    if merge:
        model = model.merge_and_unload()
    if dtype == "auto":  # merged in float32 first; bf16 weights on a CUDA GPU (no-op on a CPU)
        cast_for_scoring(model, "auto")
    model.eval()
    if cm is not None:
        from llmrec.collab.tokens import SlotTable, find_collab_embedding

        slots = SlotTable(cm, find_collab_embedding(model))  # the embedding keeps it: llmrec.collab.tokens.slot_table
        slots.pair_form = meta["collab"].get("pair_form", "score")  # ⟨taste⟩ / ⟨match⟩ rows as trained
    probe_item = cm.catalog_items[0] if cm is not None else "0"
    try:
        rendered = template.render(_probe_variables(template, probe_item), tok)
    except Exception:  # a plain template that needs real values: its end is fixed text anyway
        if template.format != "plain":
            raise
        rendered = None
    probe = rendered if template.format != "plain" else None  # plain: the verbalizer follows the bare prompt end
    if cm is None and rendered is not None:
        from llmrec.prompts.collab_syntax import has_markers

        if has_markers(rendered):
            raise AdapterError(f"adapter {d}: template {template.name!r} places collaborative tokens (item_token / "
                               f"user_token), but the adapter has no 'collab' record in {META} (no projector to "
                               f"run them with)")
    verb = verbalizer_for(template, tok, probe or "")
    if template.sha256 == recorded.sha256 and verb.token_ids != meta["verbalizer"]["token_ids"]:
        raise AdapterError(f"adapter {d}: verbalizer token ids {meta['verbalizer']['token_ids']} differ from "
                           f"{verb.token_ids} under the loaded tokenizer (wrong base model?)")
    return model, tok, template, verb, meta


def _collab_parts(d: Path, meta: dict, collab: Any) -> tuple[Any, Any]:
    """``(CollabModel, Projector)`` of an adapter's ``collab`` record (``collab`` given or the stored one), both
    checked against ``collab.sha256``; ``(None, None)`` for an adapter without the record.

    Raises:
        AdapterError: ``collab`` given for an adapter without a record, a ``collab.sha256`` mismatch, a projector
            file that is missing or not one. FileNotFoundError: the stored collaborative model is missing.
    """
    rec = meta.get("collab")
    if not rec:
        if collab is not None:
            raise AdapterError(f"adapter {d}: collab= was given, but {META} has no 'collab' record (the adapter was "
                               f"tuned without collaborative tokens)")
        return None, None
    from llmrec.collab.data import CollabModel
    from llmrec.collab.projector import PROJECTOR_FILE, load_projector

    if collab is not None:
        cm = collab
    else:
        try:
            cm = CollabModel.load(d / rec.get("model", "collab"))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"adapter {d}: collab.model: {e}") from e
        except ValueError as e:  # its files were changed after saving (content hash)
            raise AdapterError(f"adapter {d}: collab.model: {e}") from e
    from llmrec.collab.match import PAIR_FORMS

    if rec.get("pair_form", "score") not in PAIR_FORMS:
        raise AdapterError(f"adapter {d}: collab.pair_form {rec.get('pair_form')!r} in {META}: expected one of "
                           f"{', '.join(PAIR_FORMS)}")
    if cm.sha256 != rec.get("sha256"):
        given = "the collaborative model given (collab=)" if collab is not None else f"the stored one ({d / rec.get('model', 'collab')})"
        raise AdapterError(f"adapter {d}: collab.sha256 {str(rec.get('sha256'))[:12]} is recorded in {META}, but "
                           f"{given} has {cm.sha256[:12]}: its vectors are not the ones the projector was trained on")
    try:
        projector, _ = load_projector(d / rec.get("projector", PROJECTOR_FILE), expect_collab_sha256=cm.sha256)
    except (FileNotFoundError, ValueError) as e:
        raise AdapterError(f"adapter {d}: collab.projector: {e}") from e
    return cm, projector


def _probe_variables(template: Any, item_id: str = "0") -> dict:
    """A neutral render context for finding verbalizer ids (the prompt end is fixed text): empty lists for the
    histories, ``item_id`` for ``target_id`` (``item_token`` refuses an empty id), empty strings otherwise."""
    lists = ("liked", "disliked", "history", "history_ids")
    return {v: [] if v in lists else item_id if v == "target_id" else "" for v in template.referenced_variables()}
