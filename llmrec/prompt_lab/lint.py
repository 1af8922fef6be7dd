"""Lint a template: declared vs read variables, answer leaks (static and rendered), verbalizer tokens and
prompt lengths against the model and the training ``max_length``."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from llmrec.model import model_max_positions
from llmrec.prompt_lab.render import _referenced, token_lengths
from llmrec.prompts.render import RERANK_POINTWISE_VARIABLES, is_rerank_template, sample_variables
from llmrec.prompts.template import Template, TemplateRenderError

__all__ = ["DOMAIN_WORDS", "domain_mismatch_words", "PROMPT_VARIABLES", "LEAK_VARIABLES", "LISTWISE_VARIABLES", "Finding", "LintReport", "lint_template"]

PROMPT_VARIABLES = frozenset({"user_id", "item_noun", "liked", "disliked", "history", "target", "target_id", "target_year",
                              "target_genres"})

#: Names that carry the answer; a template reading any of them leaks the label into the prompt.
LEAK_VARIABLES = frozenset({"label", "target_rating", "answer", "output", "response", "target_liked"})

#: Variables of listwise (rerank) templates (:class:`llmrec.rerank.listwise.ListwiseScorer`).
LISTWISE_VARIABLES = frozenset({"history", "candidates"})

#: Item words a template may say literally; one that is not the data's ``item_noun`` is a domain mismatch.
DOMAIN_WORDS = ("movie", "film", "book", "novel", "product", "song", "track", "album", "article", "news", "game",
                "restaurant", "recipe", "podcast", "video", "show", "episode", "app", "course", "hotel", "job")
_JINJA_TAGS = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


def domain_mismatch_words(tpl: Template, item_noun: str) -> list[str]:
    """Item words (:data:`DOMAIN_WORDS`, singular or plural) in the template body's literal text -- outside
    ``{{ }}``/``{% %}``/``{# #}`` -- that are not ``item_noun``: e.g. ``["movie"]`` for a template that says
    "target movie" rendered for ``item_noun="book"``. Sorted, unique."""
    text = _JINJA_TAGS.sub(" ", tpl.body).lower()
    words = set(re.findall(r"[a-z]+", text))
    noun = item_noun.lower().strip()
    own = {noun, noun + "s", noun + "es"} | set(noun.split())
    return sorted(w for w in DOMAIN_WORDS if w not in own and ({w, w + "s"} & words))


_REPR = re.compile(r"[\[{]\{?'[a-z_]+': ")
_METHOD_REPR = re.compile(r"<(?:built-in|bound) method [^>]*>")


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
                  provided: Iterable[str] | None = None, item_noun: str | None = None) -> LintReport:
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
        provided: variable names available to the template; default :data:`PROMPT_VARIABLES`, or for a
            reranking template (:func:`llmrec.prompts.render.is_rerank_template`) what the rerankers give it
            (:data:`LISTWISE_VARIABLES`, :data:`llmrec.prompts.render.RERANK_POINTWISE_VARIABLES`; the samples are
            then rendered through :func:`llmrec.prompts.render.rerank_variables`).
        item_noun: the data's domain word (``"book"``); default the catalog's (``catalog.item_noun``). A template
            whose literal wording names another item kind (says "movie" for books) gets a ``domain-wording``
            warning (use ``{{ item_noun }}``).

    Returns:
        :class:`LintReport` (``exit_code`` 1 when it holds errors).
    """
    if max_length is None:
        from llmrec.train import TrainSettings

        max_length = TrainSettings.max_length
    rep = LintReport(tpl.name)
    listwise = tpl.task == "listwise"
    rerank = is_rerank_template(tpl)  # rendered with what the rerankers give it (llmrec.prompts.render)
    if provided is None:
        provided = LISTWISE_VARIABLES if listwise else RERANK_POINTWISE_VARIABLES if rerank else PROMPT_VARIABLES
    provided = set(provided)
    referenced, declared = _referenced(tpl), set(tpl.variables)
    rep.stats.update({"referenced": sorted(referenced), "declared": sorted(declared),
                      "max_positions": max_positions, "max_length": max_length})

    # ---- variables and static leaks
    for v in sorted(referenced & LEAK_VARIABLES):
        rep.add("error", "answer-leak", f"template reads {v!r} (line {_first_use_line(tpl, v)}), which carries the "
                                        f"answer; the prompt must not depend on the label")
    source = ("the rerankers do not give (a reranking template: named rerank-* or declaring history_ids)"
              if rerank and not listwise else "template_variables does not provide")
    for v in sorted(referenced - provided - LEAK_VARIABLES):
        hint = ("; a reranking template reads history_ids: declare it in the header's 'variables' (or name the "
                "template rerank-*)" if v == "history_ids" and not rerank else "")
        rep.add("error", "undefined-variable",
                f"template reads {v!r} (line {_first_use_line(tpl, v)}), which {source} "
                f"(available: {', '.join(sorted(provided))}){hint}")
    if rerank and "taste_token(" in tpl.body:
        rep.add("error", "taste-in-rerank", "a reranking template calls taste_token, which needs the history's ratings; "
                                            "reranking histories have none: use match_token (llmrec.collab.match)")
    for v in sorted(referenced - declared):
        rep.add("warning", "undeclared-variable",
                f"template reads {v!r} (line {_first_use_line(tpl, v)}) but the header's 'variables' does not list it")
    for v in sorted(declared - referenced):
        extra = "" if v in provided else " (and template_variables does not provide it)"
        rep.add("warning", "unused-variable", f"header declares {v!r} but the body never reads it{extra}")
    noun = item_noun or getattr(catalog, "item_noun", None)
    if noun and not listwise:
        bad = domain_mismatch_words(tpl, noun)
        if bad:
            rep.add("warning", "domain-wording", f"the data's items are {noun!r} but the template's text says "
                                                 f"{', '.join(repr(w) for w in bad)}; write {{{{ item_noun }}}} instead")
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
            v = sample_variables(tpl, s, catalog)
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
    n = sum(bool(_METHOD_REPR.search(t)) for t in texts)
    if n:
        ex = _METHOD_REPR.search(next(t for t in texts if _METHOD_REPR.search(t))).group(0)
        rep.add("warning", "python-repr", f"{n} rendered prompts print a Python object (e.g. {ex!r}...): an attribute "
                                          f"of a plain string, such as h.title where a reranking template's history "
                                          f"items are already titles (write {{{{ h }}}})")
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
