"""Tools for editing prompt templates: describe, render real samples, lint, diff and A/B-evaluate.

The ``llmrec prompts`` commands (:mod:`llmrec.cli_prompts`) and the playground (:mod:`llmrec.playground`)
are thin layers over these functions; everything here can be called without a CLI or a server.

Sources: TALLRec's protocol and prompt (Bao et al., RecSys 2023); the AUC is
``sklearn.metrics.roc_auc_score``; the paired bootstrap resamples samples with replacement and scores
both templates on the same resample (Efron & Tibshirani 1993, ch. 13 percentile interval).
"""

from __future__ import annotations

import difflib
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from llmrec.prompts import Template, TemplateRenderError

__all__ = [
    "PROMPT_VARIABLES",
    "LEAK_VARIABLES",
    "describe",
    "load_tokenizer",
    "model_max_positions",
    "prompt_variables",
    "render_one",
    "token_lengths",
    "Finding",
    "LintReport",
    "lint_template",
    "diff_renderings",
    "paired_bootstrap_auc",
    "eval_indices",
    "compare_templates",
]

#: Variables :func:`llmrec.samples.tallrec.template_variables` gives a prompt (``label`` removed: the
#: answer never reaches the prompt; see :func:`llmrec.pipeline.render_samples`).
PROMPT_VARIABLES = frozenset({"user_id", "liked", "disliked", "history", "target", "target_id", "target_year",
                              "target_genres"})

#: Names that carry the answer; a template reading any of them leaks the label into the prompt.
LEAK_VARIABLES = frozenset({"label", "target_rating", "answer", "output", "response", "target_liked"})

#: Variables of listwise (rerank) templates (:class:`llmrec.rerank.listwise.ListwiseScorer`).
LISTWISE_VARIABLES = frozenset({"history", "candidates"})

_REPR = re.compile(r"[\[{]\{?'[a-z_]+': ")


# ------------------------------------------------------------------------------------------------ basics
def describe(tpl: Template) -> dict:
    """Header fields, content hash and variables of a template, as a JSON-serialisable dict.

    Keys: ``name, path, task, format, verbalizer, targets, variables`` (declared), ``referenced``
    (read by the body; sorted list), ``description, sha256``.
    """
    return {"name": tpl.name, "path": str(tpl.path) if tpl.path else None, "task": tpl.task, "format": tpl.format,
            "verbalizer": list(tpl.verbalizer), "targets": list(tpl.targets), "variables": list(tpl.variables),
            "referenced": sorted(_referenced(tpl)), "description": tpl.description, "sha256": tpl.sha256}


def _referenced(tpl: Template) -> set[str]:
    """Variables the body reads, minus Jinja's globals (``range``, ``lipsum``, ``namespace``...)."""
    return set(tpl.referenced_variables()) - set(tpl._env.globals)


def load_tokenizer(base_model: str) -> Any:
    """The tokenizer of ``base_model`` (embedded name, local folder or HF id) without loading weights.

    Returns a transformers tokenizer with a pad token (EOS if it had none), as
    :func:`llmrec.model.load_base_model` sets it.

    Raises:
        llmrec.assets.AssetError: an embedded model cannot be fetched.
        OSError: transformers cannot load it (message names ``base_model``).
    """
    from transformers import AutoTokenizer

    from llmrec import assets

    try:
        tok = AutoTokenizer.from_pretrained(assets.resolve_model(base_model))
    except (OSError, ValueError) as e:
        raise OSError(f"base_model {base_model!r}: cannot load its tokenizer: {e}") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def model_max_positions(base_model: str) -> int | None:
    """``max_position_embeddings`` (or ``n_positions``/``max_seq_len``) of the model's config; None if absent.

    Raises:
        OSError: the config cannot be loaded.
    """
    from transformers import AutoConfig

    from llmrec import assets

    try:
        cfg = AutoConfig.from_pretrained(assets.resolve_model(base_model))
    except (OSError, ValueError) as e:
        raise OSError(f"base_model {base_model!r}: cannot load its config: {e}") from e
    for k in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        v = getattr(cfg, k, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def prompt_variables(sample, catalog) -> dict:
    """The render context of a sample: ``template_variables`` without ``label`` (as the pipeline renders)."""
    from llmrec.samples.tallrec import template_variables

    v = template_variables(sample, catalog)
    v.pop("label", None)
    return v


def render_one(tpl: Template, sample, catalog, tokenizer: Any = None) -> str:
    """The full prompt text of one sample (ends where the answer starts).

    Raises:
        TemplateRenderError: rendering failed (names template, line and cause).
        ValueError: ``format: chat`` without a tokenizer with a chat template; a listwise template.
    """
    if tpl.task != "pointwise":
        raise ValueError(f"template {tpl.name}: task {tpl.task!r} renders candidate lists (llmrec.rerank), "
                         f"not TALLRec samples")
    return tpl.render(prompt_variables(sample, catalog), tokenizer)


def token_lengths(tpl: Template, tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Prompt lengths in tokens as the scorer encodes them (no added special tokens for chat format)."""
    from llmrec.scoring import encode_prompts

    if not texts:
        return []
    return [len(x) for x in encode_prompts(tokenizer, texts, add_special_tokens=tpl.format != "chat")]


def _first_use_line(tpl: Template, var: str) -> int | None:
    pat = re.compile(r"(\{\{|\{%)[^}]*\b" + re.escape(var) + r"\b")
    for i, line in enumerate(tpl.body.splitlines(), start=1):
        if pat.search(line):
            return i + tpl.body_line_offset
    return None


# ------------------------------------------------------------------------------------------------ lint
@dataclass
class Finding:
    """One lint result. ``level`` is ``"error"``, ``"warning"`` or ``"info"``; ``code`` a stable short id."""

    level: str
    code: str
    message: str


@dataclass
class LintReport:
    """All findings of :func:`lint_template` plus statistics.

    Attributes:
        template: template name.
        findings: list of :class:`Finding`, errors first.
        stats: ``n_samples``, ``rendered``, ``tokens`` (``p50/p95/max/mean`` of prompt tokens, when a
            tokenizer was given), ``max_positions``, ``max_length``, ``answer_tokens``...
    """

    template: str
    findings: list[Finding] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def add(self, level: str, code: str, message: str) -> None:
        self.findings.append(Finding(level, code, message))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def exit_code(self) -> int:
        """1 when there are errors, else 0 (warnings alone pass)."""
        return 1 if self.errors else 0

    def to_dict(self) -> dict:
        return {"template": self.template, "ok": not self.errors, "findings": [asdict(f) for f in self.findings],
                "stats": self.stats}

    def format(self) -> str:
        """Human-readable report: one line per finding, then the statistics and a summary line."""
        order = {"error": 0, "warning": 1, "info": 2}
        lines = [f"{f.level}: [{f.code}] {f.message}" for f in sorted(self.findings, key=lambda f: order[f.level])]
        t = self.stats.get("tokens")
        if t:
            lines.append(f"tokens over {t['n']} prompts: p50 {t['p50']:.0f}, p95 {t['p95']:.0f}, max {t['max']} "
                         f"(+{self.stats.get('answer_tokens', 0)} answer tokens); model max positions "
                         f"{self.stats.get('max_positions')}, training max_length {self.stats.get('max_length')}")
        lines.append(f"{self.template}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return "\n".join(lines)


def lint_template(tpl: Template, samples: Sequence | None = None, catalog=None, tokenizer: Any = None, *,
                  max_positions: int | None = None, max_length: int | None = None,
                  provided: Iterable[str] | None = None) -> LintReport:
    """Check a template for mistakes that silently hurt tuning or scoring.

    Checks:
        * variables: read but not provided by ``template_variables`` (error: rendering fails), read but
          not declared in the header (warning), declared but never read (warning);
        * answer leaks: the body reads ``label``/``target_rating``/... (error); a rendered prompt ends
          with an answer word or target (error when it is the sample's own answer in most prompts, else
          warning); the Alpaca response marker inside the instruction/input (warning);
        * rendering every sample (error with the first failure and the count);
        * with a tokenizer: the verbalizer (:func:`llmrec.model.verbalizer_for`: merges with the prompt end
          or shared first token = error; a word of several tokens = warning, only its first is scored);
          prompt token lengths p50/p95/max against the model's ``max_positions`` and the training
          ``max_length`` (prompt + answer tokens; default ``TrainSettings.max_length``) -- over them,
          truncation would cut the answer position (error); the tokenizer's own ``model_max_length``.

    Args:
        tpl: the template.
        samples / catalog: samples to render (e.g. a TALLRec split) and their catalog; None = static checks.
        tokenizer: the base model's tokenizer; None skips the token checks (an info finding says so).
        max_positions: the model's position limit (:func:`model_max_positions`).
        max_length: training sequence limit; default :class:`llmrec.train.TrainSettings` ``max_length``.
        provided: variable names available to the template; default :data:`PROMPT_VARIABLES`.

    Returns:
        :class:`LintReport` (``exit_code`` 1 when it holds errors).
    """
    if max_length is None:
        from llmrec.train import TrainSettings

        max_length = TrainSettings.max_length
    rep = LintReport(tpl.name)
    listwise = tpl.task == "listwise"
    if provided is None:
        provided = LISTWISE_VARIABLES if listwise else PROMPT_VARIABLES
    provided = set(provided)
    referenced, declared = _referenced(tpl), set(tpl.variables)
    rep.stats.update({"referenced": sorted(referenced), "declared": sorted(declared),
                      "max_positions": max_positions, "max_length": max_length})

    # ---- variables and static leaks
    for v in sorted(referenced & LEAK_VARIABLES):
        rep.add("error", "answer-leak", f"template reads {v!r} (line {_first_use_line(tpl, v)}), which carries the "
                                        f"answer; the prompt must not depend on the label")
    for v in sorted(referenced - provided - LEAK_VARIABLES):
        rep.add("error", "undefined-variable",
                f"template reads {v!r} (line {_first_use_line(tpl, v)}), which template_variables does not provide "
                f"(available: {', '.join(sorted(provided))})")
    for v in sorted(referenced - declared):
        rep.add("warning", "undeclared-variable",
                f"template reads {v!r} (line {_first_use_line(tpl, v)}) but the header's 'variables' does not list it")
    for v in sorted(declared - referenced):
        extra = "" if v in provided else " (and template_variables does not provide it)"
        rep.add("warning", "unused-variable", f"header declares {v!r} but the body never reads it{extra}")
    if tpl.task == "pointwise" and len(tpl.verbalizer) != 2:
        rep.add("warning", "verbalizer", f"pointwise template has {len(tpl.verbalizer)} verbalizer words "
                                         f"{tpl.verbalizer}; only the first two are scored")
    for w in tpl.verbalizer:
        if w != w.strip():
            rep.add("warning", "verbalizer", f"verbalizer word {w!r} has leading/trailing whitespace")

    if listwise and samples is not None:
        rep.add("info", "listwise", "listwise templates render candidate lists (llmrec.rerank), not TALLRec "
                                    "samples: rendering and token checks skipped")
        return rep
    if samples is None or catalog is None:
        rep.add("info", "no-data", "no samples given: rendering and token checks skipped")
        return rep

    # ---- render every sample
    chat_without_tok = tpl.format == "chat" and tokenizer is None
    leaky = bool(referenced & LEAK_VARIABLES)
    blanks = {u: "" for u in referenced - provided - LEAK_VARIABLES}  # stand-ins for undefined variables

    def render(v: dict) -> str:
        if chat_without_tok:
            parts = tpl.render_parts(v)
            return parts["instruction"] + "\n\n" + parts["input"]
        return tpl.render(v, tokenizer)

    texts, labels, fails, first_fail, changed = [], [], 0, None, 0
    for i, s in enumerate(samples):
        try:
            v = prompt_variables(s, catalog)
        except KeyError as e:
            fails += 1
            first_fail = first_fail or f"sample {i}: {e}"
            continue
        try:
            texts.append(render(v))
            labels.append(int(s.label))
            continue
        except (TemplateRenderError, ValueError) as e:
            fails += 1
            first_fail = first_fail or f"sample {i}: {e}"
        if leaky:  # render as if the answer were available, to show what it would leak and check the rest
            try:
                texts.append(render({**blanks, **v, **_answer_values(s, flip=False)}))
                labels.append(int(s.label))
                if i < 50 and render({**blanks, **v, **_answer_values(s, flip=True)}) != texts[-1]:
                    changed += 1
            except (TemplateRenderError, ValueError):
                pass
    rep.stats.update({"n_samples": len(samples), "rendered": len(texts) if not leaky else len(samples) - fails})
    if fails:
        rep.add("error", "render-error", f"{fails} of {len(samples)} samples fail to render; first: {first_fail}")
    if changed:
        rep.add("error", "answer-leak", f"with the answer available, {changed} of {min(50, len(samples))} prompts "
                                        f"change when the label flips")
    if chat_without_tok:
        rep.add("info", "no-tokenizer", "format 'chat' needs a tokenizer to render the full prompt; checked the "
                                        "instruction and input only (pass --base-model)")
    if not texts:
        return rep

    # ---- rendered leaks
    _lint_rendered_leaks(tpl, texts, labels, rep, check_end=not chat_without_tok)

    # ---- tokenizer checks
    if tokenizer is None:
        rep.add("info", "no-tokenizer", "no tokenizer: verbalizer and token-length checks skipped (pass --base-model)")
        return rep
    _lint_tokens(tpl, tokenizer, texts, rep, max_positions, max_length)
    return rep


def _answer_values(sample, flip: bool) -> dict:
    """Values of the answer-carrying variables for a sample (or the opposite answer with ``flip``)."""
    y = 1 - int(sample.label) if flip else int(sample.label)
    rating = (5.0 if y else 1.0) if flip else float(sample.target_rating)
    word = "Yes" if y else "No"
    return {"label": y, "target_rating": rating, "answer": word, "output": word + ".", "response": word,
            "target_liked": bool(y)}


def _lint_rendered_leaks(tpl: Template, texts: list[str], labels: list[int], rep: LintReport, check_end: bool) -> None:
    answers = sorted(set(tpl.verbalizer) | set(tpl.targets), key=len, reverse=True)
    if check_end:
        ends_any, ends_own = 0, 0
        example = None
        for t, y in zip(texts, labels):
            tail = t.rstrip()
            hit = next((a for a in answers if tail.endswith(a)), None)
            if hit is not None:
                ends_any += 1
                example = example or hit
                own = {tpl.verbalizer[0 if y == 1 else 1], tpl.targets[0 if y == 1 else 1]} if tpl.task == "pointwise" \
                    and len(tpl.verbalizer) >= 2 else set()
                ends_own += hit in own
        if ends_any and ends_own > ends_any / 2:
            rep.add("error", "answer-leak", f"{ends_own} of {len(texts)} rendered prompts end with their own answer "
                                            f"(e.g. {example!r}); the prompt must end where the answer starts")
        elif ends_any:
            rep.add("warning", "answer-in-prompt", f"{ends_any} of {len(texts)} rendered prompts end with an answer "
                                                   f"word (e.g. {example!r}); the model will continue after it")
    n = sum(bool(_REPR.search(t)) for t in texts)
    if n:
        ex = _REPR.search(next(t for t in texts if _REPR.search(t))).group(0)
        rep.add("warning", "python-repr", f"{n} rendered prompts print a Python dict/list repr (e.g. {ex!r}...); "
                                          f"history items are dicts: use h.title, h.genres...")
    if tpl.format == "alpaca":
        marker = "### Response:"
        n = sum(t.count(marker) > 1 for t in texts)
        if n:
            rep.add("warning", "answer-boundary", f"{n} rendered prompts contain {marker!r} inside the instruction or "
                                                  f"input; text after it reads like an answer")


def _lint_tokens(tpl: Template, tokenizer: Any, texts: list[str], rep: LintReport, max_positions: int | None,
                 max_length: int) -> None:
    from llmrec.model import verbalizer_for

    verb = None
    try:
        verb = verbalizer_for(tpl, tokenizer, texts[0])
    except ValueError as e:
        rep.add("error", "verbalizer", str(e))
    if verb is not None:
        p_ids = tokenizer(texts[0], add_special_tokens=False).input_ids
        for w in tpl.verbalizer:
            rest = tokenizer(texts[0] + w, add_special_tokens=False).input_ids[len(p_ids):]
            if len(rest) != 1:
                pieces = [tokenizer.decode([i]) for i in rest]
                rep.add("warning", "verbalizer", f"verbalizer word {w!r} is {len(rest)} tokens {pieces} after the "
                                                 f"prompt; only its first token is scored")
        rep.stats["verbalizer_token_ids"] = verb.token_ids
    answer_tokens = max((len(t) for t in verb.target_ids), default=0) if verb else 0
    lens = np.asarray(token_lengths(tpl, tokenizer, texts))
    rep.stats["answer_tokens"] = answer_tokens
    rep.stats["tokens"] = {"n": int(lens.size), "p50": float(np.percentile(lens, 50)),
                           "p95": float(np.percentile(lens, 95)), "max": int(lens.max()), "mean": float(lens.mean()),
                           "min": int(lens.min())}
    longest = int(lens.max())
    if max_positions:
        over = int((lens + answer_tokens > max_positions).sum())
        if over:
            rep.add("error", "too-long", f"{over} prompts (+ answer) exceed the model's {max_positions} positions "
                                         f"(longest {longest}); truncating them would cut the answer position")
        elif longest > 0.9 * max_positions:
            rep.add("warning", "near-limit", f"longest prompt {longest} tokens is within 10% of the model's "
                                             f"{max_positions} positions")
    over = int((lens + answer_tokens > max_length).sum())
    if over:
        rep.add("error", "too-long", f"{over} training examples (prompt + {answer_tokens} answer tokens, longest "
                                     f"{longest + answer_tokens}) exceed the training max_length {max_length}; "
                                     f"train_lora refuses them (truncation would cut the answer position)")
    tml = getattr(tokenizer, "model_max_length", None)
    if isinstance(tml, int) and tml < longest:
        side = getattr(tokenizer, "truncation_side", "right")
        cut = "would cut the answer position" if side == "right" else "would drop the start of the history"
        rep.add("warning", "tokenizer-limit", f"tokenizer.model_max_length {tml} < longest prompt {longest}: "
                                              f"truncation (side {side!r}) {cut}; llmrec never truncates")


# ------------------------------------------------------------------------------------------------ diff
def diff_renderings(a: str, b: str, name_a: str = "A", name_b: str = "B", *, side_by_side: bool = False,
                    width: int = 160, context: int = 3) -> str:
    """Compare two prompt texts line by line.

    Args:
        a, b: the prompt texts; name_a, name_b: labels for the headers.
        side_by_side: two columns of ``width // 2`` characters (long lines wrapped), with a marker column
            (``|`` changed, ``<`` only in A, ``>`` only in B); else a unified diff.
        context: unified diff context lines.

    Returns:
        The diff text; ``""`` (unified) when the texts are equal.
    """
    la, lb = a.splitlines(), b.splitlines()
    if not side_by_side:
        return "\n".join(difflib.unified_diff(la, lb, fromfile=name_a, tofile=name_b, lineterm="", n=context))
    col = max(20, (width - 3) // 2)

    def wrap(s: str) -> list[str]:
        return [s[i:i + col] for i in range(0, len(s), col)] or [""]

    out = [f"{name_a[:col]:<{col}}   {name_b[:col]}", f"{'-' * col}   {'-' * col}"]
    sm = difflib.SequenceMatcher(a=la, b=lb, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        left, right = la[i1:i2], lb[j1:j2]
        mark = {"equal": " ", "replace": "|", "delete": "<", "insert": ">"}[op]
        for k in range(max(len(left), len(right))):
            wl = wrap(left[k]) if k < len(left) else [""]
            wr = wrap(right[k]) if k < len(right) else [""]
            m = mark if op != "replace" else ("|" if k < len(left) and k < len(right) else ("<" if k < len(left) else ">"))
            for r in range(max(len(wl), len(wr))):
                out.append(f"{(wl[r] if r < len(wl) else ''):<{col}} {m if r == 0 else ' '} "
                           f"{wr[r] if r < len(wr) else ''}".rstrip())
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ A/B eval
def paired_bootstrap_auc(labels, scores_a, scores_b, *, n_resamples: int = 1000, seed: int = 0,
                         ci: float = 0.95) -> dict:
    """AUC of two score vectors on the same samples, their difference and a paired bootstrap CI.

    Each resample draws ``n`` sample indices with replacement (``numpy.random.default_rng(seed)``) and
    computes ``AUC(b) - AUC(a)`` on that same resample (``sklearn.metrics.roc_auc_score``); resamples
    holding one class only are skipped (counted in ``skipped``). The interval is the percentile interval.

    Args:
        labels: (n,) 0/1 labels; scores_a, scores_b: (n,) float scores of template A and B.

    Returns:
        ``{"auc_a", "auc_b", "diff"`` (b - a), ``"ci_low", "ci_high", "ci", "n", "n_resamples", "skipped",
        "p_value"}`` (two-sided bootstrap p of ``diff == 0``: twice the smaller tail fraction, capped at 1).

    Raises:
        ValueError: shapes differ, the labels hold one class only, or ``n_resamples`` < 1 (no interval).
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels).astype(np.int64)
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    if not (y.ndim == a.ndim == b.ndim == 1 and y.shape == a.shape == b.shape):
        raise ValueError(f"labels {y.shape}, scores_a {a.shape} and scores_b {b.shape} must be equal 1-D shapes")
    if len(np.unique(y)) < 2:
        raise ValueError(f"labels hold one class only ({np.unique(y).tolist()}); AUC is undefined")
    if not 0 < ci < 1:
        raise ValueError(f"ci {ci!r}: must be in (0, 1)")
    if n_resamples < 1:
        raise ValueError(f"n_resamples {n_resamples!r}: must be >= 1 (no resamples, no interval)")
    auc_a, auc_b = float(roc_auc_score(y, a)), float(roc_auc_score(y, b))
    rng = np.random.default_rng(seed)
    n, diffs, skipped = len(y), [], 0
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        yy = y[idx]
        if yy.min() == yy.max():
            skipped += 1
            continue
        diffs.append(roc_auc_score(yy, b[idx]) - roc_auc_score(yy, a[idx]))
    d = np.asarray(diffs)
    lo, hi = (np.percentile(d, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2]) if d.size else (np.nan, np.nan))
    p = float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()))) if d.size else float("nan")
    return {"auc_a": auc_a, "auc_b": auc_b, "diff": auc_b - auc_a, "ci_low": float(lo), "ci_high": float(hi),
            "ci": ci, "n": n, "n_resamples": n_resamples, "skipped": skipped, "p_value": p}


#: Seed of the early-stopping draw inside :func:`llmrec.pipeline.tune_k_shot` (its ``val_seed`` default).
ES_VAL_SEED = 1234


def eval_indices(n_valid: int, n: int, seed: int, val_size: int) -> list[int]:
    """Indices into the valid split for an A/B evaluation subset.

    The pool excludes the ``val_size`` early-stopping samples :func:`llmrec.pipeline.tune_k_shot` draws
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
    fresh base model (``load_model()`` again) with :func:`llmrec.pipeline.tune_k_shot` on the same
    ``shots`` train samples (``seed``), ``epochs`` epochs, early stopping on ``val_size`` valid samples
    that are excluded from the evaluation subset (:func:`eval_indices`).

    Args:
        templates: 2+ pointwise templates; the first is the reference (A).
        splits / catalog: from :func:`llmrec.pipeline.load_tallrec`.
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
    from llmrec.pipeline import PointwiseScorer, tune_k_shot
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
