"""Prompt templates: files with a YAML header, rendered by Jinja2's sandbox, ending at the answer.

A template file (``prompts/*.jinja``) is YAML front matter between ``---`` lines, then a Jinja2 body
that defines the blocks ``instruction`` and ``input`` (and, for ``format: plain``, ``prompt``)::

    ---
    name: tallrec
    task: pointwise              # pointwise (Yes/No) or listwise (index letters)
    format: alpaca               # alpaca | chat | plain
    verbalizer: ["Yes", "No"]    # answer words; the first one is the positive answer
    targets: ["Yes.", "No."]     # training targets for label 1 and label 0
    variables: [liked, disliked, target]
    description: ...
    ---
    {% block instruction %}...{% endblock %}
    {% block input %}...{% endblock %}

The rendered prompt always ends exactly where the answer starts, so the answer position is the last
prompt token: scoring never searches the text for "Yes"/"No" (titles can contain both words).

Rendering uses :class:`jinja2.sandbox.ImmutableSandboxedEnvironment` with ``StrictUndefined``: a
template cannot reach Python internals, the file system or the network, and an undefined variable is an
error naming the template, line and variable.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import jinja2
import jinja2.meta
import jinja2.sandbox
import yaml

__all__ = [
    "Template",
    "TemplateError",
    "TemplateRenderError",
    "EncodedPrompt",
    "ALPACA_WRAPPER",
    "builtin_template_dir",
    "list_templates",
    "load_template",
]

#: The Alpaca wrapper TALLRec trains and scores with (tloen/alpaca-lora ``templates/alpaca.json``).
ALPACA_WRAPPER = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)

_FORMATS = ("alpaca", "chat", "plain")
_TASKS = ("pointwise", "listwise")
_FRONT = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)


class TemplateError(ValueError):
    """A template file is malformed (bad header, unknown format, missing block); names file and field."""


class TemplateRenderError(ValueError):
    """Rendering failed (undefined variable, sandbox violation); names template, line and cause."""


def builtin_template_dir() -> Path:
    """The folder of templates shipped with llmrec (``prompts/`` in the source tree)."""
    return Path(str(importlib.resources.files("llmrec.prompt_files")))


def _search_dirs(extra: Iterable[str | os.PathLike] | None) -> list[Path]:
    """``extra`` (the ``--prompts`` folders), then ``$LLMREC_PROMPTS``, then the built-ins.

    Raises:
        FileNotFoundError / NotADirectoryError: an ``extra`` path does not exist or is not a folder
            (named; a single template file goes to ``--template PATH`` instead).
    """
    dirs = [Path(d) for d in (extra or [])]
    for d in dirs:
        if not d.exists():
            raise FileNotFoundError(f"prompts {d}: template folder not found")
        if not d.is_dir():
            raise NotADirectoryError(f"prompts {d}: not a folder (prompts takes folders of *.jinja "
                                     f"templates; load a single template file by its path instead)")
    env = os.environ.get("LLMREC_PROMPTS")
    if env:
        dirs += [Path(d) for d in env.split(os.pathsep) if d]
    return dirs + [builtin_template_dir()]


def list_templates(prompt_dirs: Iterable[str | os.PathLike] | None = None) -> dict[str, Path]:
    """Map template name -> file for every ``*.jinja`` in the search path (user dirs shadow built-ins).

    Raises:
        FileNotFoundError / NotADirectoryError: a ``prompt_dirs`` entry is not an existing folder.
    """
    found: dict[str, Path] = {}
    for d in _search_dirs(prompt_dirs):
        if d.is_dir():
            for p in sorted(d.glob("*.jinja")):
                found.setdefault(p.stem, p)
    return found


def load_template(name_or_path: str | os.PathLike, prompt_dirs: Iterable[str | os.PathLike] | None = None) -> "Template":
    """Load a template by name (searched in ``prompt_dirs``, ``$LLMREC_PROMPTS``, built-ins) or by path.

    Raises:
        FileNotFoundError: no template of that name or path (message lists the known names), or a
            ``prompt_dirs`` entry does not exist.
        NotADirectoryError: a ``prompt_dirs`` entry is not a folder.
        TemplateError: the file is malformed.
    """
    _search_dirs(prompt_dirs)  # a bad --prompts entry is an error even when a template path is given
    p = Path(name_or_path)
    if p.suffix == ".jinja" or p.is_file():
        if not p.is_file():
            raise FileNotFoundError(f"template file not found: {p}")
        return Template.from_file(p)
    known = list_templates(prompt_dirs)
    if str(name_or_path) not in known:
        raise FileNotFoundError(f"unknown template {str(name_or_path)!r}; known: {sorted(known)}")
    return Template.from_file(known[str(name_or_path)])


@dataclass
class EncodedPrompt:
    """A tokenised prompt.

    Attributes:
        input_ids: prompt token ids (list of int), ending right before the answer.
        answer_pos: index of the last prompt token (``len(input_ids) - 1``); the logits there predict
            the first answer token.
    """

    input_ids: list[int]

    @property
    def answer_pos(self) -> int:
        return len(self.input_ids) - 1


#: Largest string/list a template may build with ``*`` and largest exponent for ``**`` (no memory/CPU bombs).
MAX_REPEAT_LEN = 1_000_000
MAX_POWER_EXPONENT = 1_000


class _Sandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """Immutable sandbox that also bounds ``'a' * n`` / ``[x] * n`` and ``a ** b`` (Jinja's own sandbox
    bounds only ``range``)."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_REPEAT_LEN:
                    raise jinja2.exceptions.SecurityError(
                        f"repetition builds {len(seq) * n} items (limit {MAX_REPEAT_LEN})")
            return left * right
        if operator == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_POWER_EXPONENT:
                raise jinja2.exceptions.SecurityError(f"exponent {right} is too large (limit {MAX_POWER_EXPONENT})")
            return left ** right
        return super().call_binop(context, operator, left, right)


def _sandbox() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    from llmrec.prompts.collab_syntax import TEMPLATE_GLOBALS

    env = _Sandbox(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False,
        trim_blocks=False, lstrip_blocks=False,
    )
    env.globals.update(TEMPLATE_GLOBALS)  # item_token(id) / user_token(): collaborative-token markers (issue 15)
    return env


@dataclass
class Template:
    """A prompt template: header fields plus a sandboxed Jinja2 body.

    Attributes:
        name: template name (file stem unless the header says otherwise).
        task: ``"pointwise"`` or ``"listwise"``.
        format: ``"alpaca"`` (TALLRec's wrapper), ``"chat"`` (the tokenizer's chat template, user turn =
            instruction + blank line + input) or ``"plain"`` (the ``prompt`` block as is).
        verbalizer: answer words; for pointwise, ``[positive, negative]``.
        targets: training target text per verbalizer word (defaults to the words themselves).
        variables: variables the template declares it needs.
        source: full file text; ``sha256`` is its content hash.
    """

    name: str
    task: str
    format: str
    verbalizer: list[str]
    targets: list[str]
    variables: list[str]
    description: str
    source: str
    body: str
    path: Path | None = None
    body_line_offset: int = 0
    _compiled: Any = field(default=None, repr=False)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Template":
        """Parse a template file. Raises :class:`TemplateError` naming the file and field."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise TemplateError(f"template {path}: not UTF-8 text ({e})") from e
        return cls.from_string(text, name=path.stem, path=path)

    @classmethod
    def from_string(cls, text: str, name: str = "<string>", path: Path | None = None) -> "Template":
        """Parse template text (front matter + body). Raises :class:`TemplateError`."""
        where = str(path) if path else name
        m = _FRONT.match(text)
        if not m:
            raise TemplateError(f"template {where}: missing YAML front matter between '---' lines")
        try:
            head = yaml.safe_load(m.group(1)) or {}
        except yaml.YAMLError as e:
            raise TemplateError(f"template {where}: bad YAML header: {e}") from e
        if not isinstance(head, dict):
            raise TemplateError(f"template {where}: header must be a mapping, got {type(head).__name__}")
        body = text[m.end():]
        fmt = head.get("format", "alpaca")
        if fmt not in _FORMATS:
            raise TemplateError(f"template {where}: field 'format' = {fmt!r}, expected one of {_FORMATS}")
        task = head.get("task", "pointwise")
        if task not in _TASKS:
            raise TemplateError(f"template {where}: field 'task' = {task!r}, expected one of {_TASKS}")
        verb = head.get("verbalizer", ["Yes", "No"])
        # YAML 1.1 reads unquoted Yes/No/On/Off as booleans
        hint = lambda v: ' (quote the words: YAML reads unquoted Yes/No as booleans)' if isinstance(v, list) and \
            any(isinstance(w, bool) for w in v) else ''  # noqa: E731
        if not (isinstance(verb, list) and len(verb) >= 2 and all(isinstance(w, str) and w for w in verb)):
            raise TemplateError(f"template {where}: field 'verbalizer' = {verb!r}, expected a list of >= 2 words"
                                f"{hint(verb)}")
        if len(set(verb)) != len(verb):
            raise TemplateError(f"template {where}: field 'verbalizer' = {verb!r} repeats a word")
        targets = head.get("targets", list(verb))
        if not (isinstance(targets, list) and len(targets) == len(verb)
                and all(isinstance(t, str) and t.startswith(w) for t, w in zip(targets, verb))):
            raise TemplateError(f"template {where}: field 'targets' = {targets!r} must give one text per "
                                f"verbalizer word, each starting with that word{hint(targets)}")
        tpl = cls(
            name=str(head.get("name", name)), task=task, format=fmt, verbalizer=verb, targets=targets,
            variables=list(head.get("variables", [])), description=str(head.get("description", "")),
            source=text, body=body, path=path, body_line_offset=text[: m.end()].count("\n"),
        )
        tpl._compile()
        return tpl

    # ----------------------------------------------------------------------------------------------
    @property
    def sha256(self) -> str:
        """Hex sha256 of the template file's content (recorded in adapters)."""
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()

    def _compile(self) -> None:
        env = _sandbox()
        # An empty loader: {% include/import/extends %} of anything (the file system, this template
        # itself -> endless recursion) fails with TemplateNotFound.
        env.loader = jinja2.DictLoader({})
        try:
            self._compiled = env.from_string(self.body)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(f"template {self.name}: syntax error at line "
                                f"{(e.lineno or 0) + self.body_line_offset}: {e.message}") from e
        need = ("prompt",) if self.format == "plain" else ("instruction", "input")
        for b in need:
            if b not in self._compiled.blocks:
                raise TemplateError(f"template {self.name}: format {self.format!r} needs a "
                                    f"'{{% block {b} %}}' in the body")
        self._env = env

    def referenced_variables(self) -> set[str]:
        """Names the body reads from the render context (Jinja2's static analysis)."""
        return jinja2.meta.find_undeclared_variables(self._env.parse(self.body))

    def _render_block(self, block: str, variables: dict[str, Any]) -> str:
        try:
            ctx = self._compiled.new_context(dict(variables))
            return "".join(self._compiled.blocks[block](ctx))
        except jinja2.UndefinedError as e:
            raise TemplateRenderError(f"template {self.name}, line {self._error_line(e)}: {e.message}") from e
        except jinja2.exceptions.SecurityError as e:
            raise TemplateRenderError(f"template {self.name}, line {self._error_line(e)}: "
                                      f"sandbox refused: {e}") from e
        except jinja2.TemplateError as e:
            raise TemplateRenderError(f"template {self.name}, line {self._error_line(e)}: {e}") from e
        except RecursionError as e:  # e.g. {{ self.input() }} inside the input block
            raise TemplateRenderError(f"template {self.name}: rendering recursed too deeply "
                                      f"(a block calls itself?)") from e
        except Exception as e:  # anything else a template can trigger (1/0, range overflow, ...)
            raise TemplateRenderError(f"template {self.name}, line {self._error_line(e)}: "
                                      f"{type(e).__name__}: {e}") from e

    def _error_line(self, exc: BaseException) -> int | str:
        """File line of a render error (``?`` if unknown).

        The compiled template's frame in the traceback maps back to a body line through Jinja's debug
        info; failing that, the first line that uses the variable named in an "is undefined" message.
        """
        tb, line = exc.__traceback__, None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == self._compiled.filename:
                line = self._compiled.get_corresponding_lineno(tb.tb_lineno)
            tb = tb.tb_next
        if line:
            return line + self.body_line_offset
        m = re.match(r"'([^']+)' is undefined", str(getattr(exc, "message", "") or exc))
        if m:
            pat = re.compile(r"(\{\{|\{%)[^}]*\b" + re.escape(m.group(1)) + r"\b")
            for i, line in enumerate(self.body.splitlines(), start=1):
                if pat.search(line):
                    return i + self.body_line_offset
        return "?"

    def render_parts(self, variables: dict[str, Any]) -> dict[str, str]:
        """Render ``instruction`` and ``input`` (alpaca/chat formats), e.g. for alpaca-style JSON export.

        Raises:
            TemplateRenderError: an undefined variable or a sandbox violation (names template and line).
        """
        if self.format == "plain":
            return {"instruction": "", "input": self._render_block("prompt", variables)}
        return {b: self._render_block(b, variables).strip("\n") for b in ("instruction", "input")}

    def render(self, variables: dict[str, Any], tokenizer: Any = None) -> str:
        """The full prompt text, ending exactly where the answer starts.

        Args:
            variables: the render context (e.g. from ``llmrec.samples.tallrec.template_variables``).
            tokenizer: needed for ``format: chat`` (its ``apply_chat_template`` is used).

        Raises:
            TemplateRenderError: rendering failed.
            ValueError: ``format: chat`` without a tokenizer that has a chat template.
        """
        if self.format == "plain":
            return self._render_block("prompt", variables)
        parts = self.render_parts(variables)
        return self.wrap(parts["instruction"], parts["input"], tokenizer)

    def wrap(self, instruction: str, input: str, tokenizer: Any = None) -> str:
        """Wrap already-rendered parts (e.g. from alpaca JSON) in this template's format."""
        if self.format == "alpaca":
            return ALPACA_WRAPPER.format(instruction=instruction, input=input)
        if self.format == "plain":
            return instruction + ("\n" if instruction and input else "") + input
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"template {self.name}: format 'chat' needs a tokenizer with a chat template")
        msg = instruction + ("\n\n" + input if input else "")
        return tokenizer.apply_chat_template([{"role": "user", "content": msg}], tokenize=False,
                                             add_generation_prompt=True)
