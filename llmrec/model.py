"""Load a base causal LM and its tokenizer; attach LoRA (peft); find the verbalizer's token ids.

Any Hugging Face model id or local folder works as ``base_model``; the embedded names in
:data:`llmrec.assets.MODELS` (default ``smollm2-135m-instruct``) are fetched and converted offline.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from llmrec import assets, precision

__all__ = ["DEFAULT_BASE_MODEL", "LoraSettings", "load_base_model", "add_lora", "Verbalizer", "verbalizer_for",
           "context_length", "check_context", "base_fingerprint", "check_model_name", "cast_for_scoring"]

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"


def _offline() -> bool:
    import os

    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_model_name(base_model: str) -> None:
    """Fail fast, in one line, on a model name that cannot load, instead of letting the hub client retry for tens
    of seconds: a bare name close to an embedded one (``smollm2-360m-instruct``: a typo, not a hub id), or, in
    Hugging Face offline mode (``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1``), a hub id that is not in the
    local hub cache. Embedded names, existing folders and other ids pass.

    Raises:
        OSError: ``"base_model 'x': ..."`` (the CLI names ``--base-model``).
    """
    import difflib
    from pathlib import Path

    if base_model in assets.MODELS or Path(base_model).expanduser().is_dir():
        return
    if base_model.startswith(("/", ".", "~")):  # a folder that does not exist: transformers says so at once
        return
    embedded = ", ".join(assets.MODELS)
    if "/" not in base_model:
        close = difflib.get_close_matches(base_model.lower(), list(assets.MODELS), n=1, cutoff=0.6)
        if close:
            raise OSError(f"base_model {base_model!r}: unknown model name (did you mean {close[0]!r}? embedded: "
                          f"{embedded}; else a local folder or a Hugging Face id owner/name)")
    if _offline():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = isinstance(try_to_load_from_cache(base_model, "config.json"), str)
        except Exception:  # not a valid hub id
            cached = False
        if not cached:
            raise OSError(f"base_model {base_model!r}: not an embedded model ({embedded}), a local folder, or a "
                          f"Hugging Face id in the local hub cache, and Hugging Face offline mode is on (nothing "
                          f"is downloaded)")


def load_base_model(base_model: str = DEFAULT_BASE_MODEL, dtype: str | torch.dtype = "auto",
                    device: str | torch.device | None = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for scoring or tuning.

    Args:
        base_model: embedded model name, local folder or Hugging Face id.
        dtype: weight dtype (:func:`llmrec.precision.weight_dtype`): ``"auto"`` (default) is bf16 on a CUDA GPU
            with bf16 and float32 on a CPU (where scoring still uses bf16 autocast if the CPU runs it natively);
            an explicit name is honoured. Weights put in bf16 by ``"auto"`` are marked
            (``model._llmrec_auto_half = True``) and :func:`llmrec.train.run_trainer` puts them back in float32
            before tuning, so training keeps float32 master weights as before.
        device: torch device; default CUDA if available else CPU.

    Returns:
        ``model`` (``*ForCausalLM``, eval mode) and ``tokenizer`` (with a pad token: EOS if it had none).

    Raises:
        llmrec.assets.AssetError: an embedded model cannot be fetched or converted.
        OSError: the folder or id cannot be loaded by transformers (message names ``base_model``).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars on every load; llmrec shows its own progress
    check_model_name(base_model)
    path = assets.resolve_model(base_model)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    wdt = precision.weight_dtype(dtype, device)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=wdt)
    except (OSError, ValueError) as e:
        raise OSError(f"base_model {base_model!r}: cannot load it with transformers: {e}") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.to(device).eval()
    model.config.use_cache = False
    model._llmrec_auto_half = dtype == "auto" and wdt != torch.float32
    return model, tok


def cast_for_scoring(model: Any, dtype: str | torch.dtype = "auto") -> Any:
    """Put a loaded (and, for scoring, LoRA-merged) model's floating-point weights in
    :func:`llmrec.precision.weight_dtype` ``(dtype, its device)``: bf16 on a CUDA GPU with bf16 for ``"auto"``,
    unchanged (float32) on a CPU. In place; returns ``model``. Marks the model as
    :func:`load_base_model` does, so tuning it later restores float32."""
    params = [p for p in model.parameters() if p.is_floating_point()]
    if not params:
        return model
    wdt = precision.weight_dtype(dtype, params[0].device)
    if any(p.dtype != wdt for p in params):
        model.to(wdt)
        model._llmrec_auto_half = dtype == "auto" and wdt != torch.float32
    return model




@dataclass
class LoraSettings:
    """LoRA hyper-parameters (Hu et al. 2022), TALLRec's defaults.

    Attributes:
        rank: LoRA rank r (> 0).
        alpha: scaling numerator; the update is scaled by ``alpha / rank``.
        dropout: dropout on the LoRA input, in [0, 1).
        target_modules: names of the linear layers to adapt (e.g. ``q_proj``, ``v_proj``; ``all-linear``).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: Sequence[str] | str = field(default_factory=lambda: ["q_proj", "v_proj"])

    def __post_init__(self):
        if not (isinstance(self.rank, int) and self.rank > 0):
            raise ValueError(f"lora rank {self.rank!r}: must be a positive integer")
        if not self.alpha > 0:
            raise ValueError(f"lora alpha {self.alpha!r}: must be > 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora dropout {self.dropout!r}: must be in [0, 1)")
        if isinstance(self.target_modules, str) and self.target_modules != "all-linear":
            self.target_modules = [m for m in self.target_modules.split(",") if m]
        if not self.target_modules:
            raise ValueError("lora target_modules: empty")


@contextlib.contextmanager
def peft_wrapping():
    """Silence the one known-harmless warning of wrapping a transformers 5 model with peft.

    peft reads ``model.is_gradient_checkpointing``, which transformers 5 deprecated in favour of
    ``is_activation_checkpointing`` (FutureWarning on every wrap); only that message is filtered.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


@contextlib.contextmanager
def seeded(seed: int | None):
    """``torch.manual_seed(seed)`` inside the block, the global RNG state (CPU, and CUDA where initialised)
    restored after it; no-op for None.

    Needed because torch's default generator starts from a different seed in every process (torch 2.13:
    ``torch.initial_seed()`` differs between two bare interpreters), so an unseeded LoRA init is not reproducible.
    """
    if seed is None:
        yield
        return
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def add_lora(model: Any, settings: LoraSettings, seed: int | None = None,
             modules_to_save: list[str] | None = None) -> Any:
    """Wrap ``model`` in a fresh peft ``PeftModel`` with a LoRA adapter (B initialised to 0: no change).

    ``seed``: LoRA A is initialised from ``torch.manual_seed(seed)`` (the caller's RNG stream is left as it was);
    None draws it from the global torch RNG, whose start is random per process (not reproducible).
    ``modules_to_save``: peft's list of extra modules trained and saved whole with the adapter (the collaborative
    projector: :func:`llmrec.collab.tokens.wrap_peft`).

    Raises:
        ValueError: naming ``lora target_modules`` when peft finds none of them in ``model``.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    cfg = LoraConfig(task_type=TaskType.CAUSAL_LM, r=settings.rank, lora_alpha=settings.alpha,
                     lora_dropout=settings.dropout,
                     target_modules=settings.target_modules if settings.target_modules == "all-linear"
                     else list(settings.target_modules), modules_to_save=modules_to_save)
    try:
        with peft_wrapping(), seeded(seed):
            return get_peft_model(model, cfg)
    except ValueError as e:
        raise ValueError(f"lora target_modules {settings.target_modules!r}: {e}") from e


@dataclass
class Verbalizer:
    """Answer words and their token ids under one tokenizer, in the context the template puts them.

    Attributes:
        words: answer words; ``words[0]`` is the positive answer for pointwise templates.
        token_ids: first token id of each word as it follows the prompt (list of int, distinct).
        target_ids: full training target ids per word (e.g. ``"Yes."`` + EOS), list of lists of int.
    """

    words: list[str]
    token_ids: list[int]
    target_ids: list[list[int]]


def verbalizer_for(template: Any, tokenizer: Any, example_prompt: str) -> Verbalizer:
    """Token ids of the template's verbalizer words as they follow ``example_prompt``.

    The ids come from tokenising ``prompt + target`` and taking what follows the prompt's own tokens;
    they are never hard-coded.

    Raises:
        ValueError: appending a word changes the prompt's tokens (the boundary merges), a word has no
            token, or two words share their first token (names the template and words).
    """
    p_ids = tokenizer(example_prompt, add_special_tokens=False).input_ids
    token_ids, target_ids = [], []
    for word, target in zip(template.verbalizer, template.targets):
        ids = tokenizer(example_prompt + target, add_special_tokens=False).input_ids
        if ids[: len(p_ids)] != p_ids or len(ids) == len(p_ids):
            raise ValueError(f"template {template.name}: verbalizer target {target!r} merges with the end of the "
                             f"prompt under this tokenizer; end the prompt with a newline or space")
        rest = ids[len(p_ids):]
        token_ids.append(rest[0])
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        target_ids.append(rest + eos)
    if len(set(token_ids)) != len(token_ids):
        raise ValueError(f"template {template.name}: verbalizer words {template.verbalizer} share a first token "
                         f"{token_ids} under this tokenizer")
    return Verbalizer(list(template.verbalizer), token_ids, target_ids)


def load_tokenizer(base_model: str) -> Any:
    """The tokenizer of ``base_model`` (embedded name, local folder or HF id) without loading weights.

    Returns a transformers tokenizer with a pad token (EOS if it had none), as
    :func:`load_base_model` sets it.

    Raises:
        llmrec.assets.AssetError: an embedded model cannot be fetched.
        OSError: transformers cannot load it (message names ``base_model``).
    """
    from transformers import AutoTokenizer

    from llmrec import assets

    check_model_name(base_model)
    try:
        tok = AutoTokenizer.from_pretrained(assets.resolve_model(base_model))
    except (OSError, ValueError) as e:
        raise OSError(f"base_model {base_model!r}: cannot load its tokenizer: {e}") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")


def context_length(model: Any) -> int | None:
    """The positions a loaded model (``*ForCausalLM`` or peft model) can attend over: its config's
    ``max_position_embeddings`` (or ``n_positions``/``max_seq_len``/``seq_length``); None if it records none."""
    cfg = getattr(model, "config", None)
    for k in _POSITION_KEYS:
        v = getattr(cfg, k, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def check_context(model: Any, lengths: Sequence[int], what: str = "prompt") -> None:
    """Refuse token sequences longer than the model's context (:func:`context_length`): past it, positions
    are extrapolated and the score is silently wrong. The first one over is named by its index.

    Raises:
        ValueError: ``"prompt 3 has 8245 tokens, more than the model's context of 8192 positions (its config's
            max_position_embeddings); shorten the template or the history"``.
    """
    limit = context_length(model)
    if limit is None:
        return
    for i, n in enumerate(lengths):
        if n > limit:
            raise ValueError(f"{what} {i} has {n} tokens, more than the model's context of {limit} positions (its "
                             f"config's max_position_embeddings); shorten the template or the history")


def model_max_positions(base_model: str) -> int | None:
    """``max_position_embeddings`` (or ``n_positions``/``max_seq_len``) of the model's config; None if absent.

    Raises:
        OSError: the config cannot be loaded.
    """
    from transformers import AutoConfig

    from llmrec import assets

    check_model_name(base_model)
    try:
        cfg = AutoConfig.from_pretrained(assets.resolve_model(base_model))
    except (OSError, ValueError) as e:
        raise OSError(f"base_model {base_model!r}: cannot load its config: {e}") from e
    for k in _POSITION_KEYS:
        v = getattr(cfg, k, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _weights_folder(base_model: str):
    """The local folder holding ``base_model``'s weights (embedded name, folder, or an HF id in the hub cache);
    None when there is none on disk."""
    from pathlib import Path

    path = Path(assets.resolve_model(base_model))
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(base_model, local_files_only=True))
    except Exception:  # not a hub id, or not in the cache: nothing to fingerprint
        return None


def base_fingerprint(base_model: str) -> str | None:
    """sha256 over the base model's weights: every ``*.safetensors`` file of its folder, by name order (name and
    bytes). Two models of the same shape with other weights differ; one copied elsewhere does not. Cached in
    ``<llmrec cache>/fingerprints.json`` by path, size and modification time (hashing reads every byte once).

    Returns:
        the hex digest, or None when the weights are not on disk as safetensors (nothing to compare).
    """
    import hashlib
    import json

    folder = _weights_folder(base_model)
    files = sorted(folder.glob("*.safetensors")) if folder is not None else []
    if not files:
        return None
    key = json.dumps([[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files])
    cache_file = assets.cache_dir() / "fingerprints.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    digest = h.hexdigest()
    try:
        from llmrec._atomic import write_json_atomic

        from pathlib import Path

        keep = {k: v for k, v in cache.items()  # entries of deleted folders go
                if all(Path(f).exists() for f, *_ in json.loads(k))}
        write_json_atomic(cache_file, {**keep, key: digest})
    except OSError:  # a read-only cache only costs the next hash
        pass
    return digest
