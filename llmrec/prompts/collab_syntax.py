"""Template syntax for collaborative tokens (issue 15): ``{{ item_token(h.item_id) }}``, ``{{ user_token() }}``,
``{{ taste_token(target_id) }}`` and ``{{ match_token(target_id) }}``.

A call renders a *marker* into the prompt text: ``⟨item:50⟩`` for item ``50``, ``⟨user⟩`` for the user of
the sample (the SASRec user vector of the sample's history), and two *interaction* markers that put the
user-item comparison itself into one position (:mod:`llmrec.collab.match` gives their vectors):
``⟨taste:50⟩`` (item 50 against the user's liked minus disliked history items; needs ratings) and
``⟨match:50⟩`` (item 50 against the SASRec user vector; history order only). The marker is what
``llmrec prompts render`` shows. Text never reaches the language model with markers in it: :mod:`llmrec.collab.tokens` splits the
text at the markers, tokenises the text pieces, and puts exactly **one** input position per marker, whose
input embedding is the projected collaborative vector (CoLLM, LLaRA).

An item id inside a marker may not contain whitespace or the brackets ``⟨``/``⟩`` (refused with a ValueError
at render time), so a marker is unambiguous.

This module has no dependencies (it is registered as Jinja globals by :mod:`llmrec.prompts.template`).
"""

from __future__ import annotations

import re

__all__ = ["item_token", "user_token", "taste_token", "match_token", "PAIR_KINDS", "MARKER_RE", "split_markers",
           "has_markers", "source_places_tokens", "source_places_pairs",
           "TEMPLATE_GLOBALS"]

_OPEN, _CLOSE = "\u27e8", "\u27e9"
#: Interaction markers: ``⟨KIND:ID⟩`` compares item ``ID`` with the sample's user (:mod:`llmrec.collab.match`).
PAIR_KINDS = ("taste", "match")
#: One marker: group ``kind`` is ``item`` / ``taste`` / ``match`` with the item id in group ``id``; ``⟨user⟩``
#: matches group ``user``.
MARKER_RE = re.compile(_OPEN + r"(?:(?P<kind>item|taste|match):(?P<id>[^\s" + _OPEN + _CLOSE + r"]+)|(?P<user>user))"
                       + _CLOSE)


def _marker(kind: str, item_id) -> str:
    s = str(item_id)
    if not s or any(c.isspace() or c in (_OPEN, _CLOSE) for c in s):
        raise ValueError(f"{kind}_token({item_id!r}): an item id must be non-empty without whitespace or ⟨ ⟩")
    return f"{_OPEN}{kind}:{s}{_CLOSE}"


def item_token(item_id) -> str:
    """``⟨item:ID⟩``: one input position holding the projected collaborative vector of item ``ID``.

    Raises:
        ValueError: an empty id, or one with whitespace or ``⟨``/``⟩``.
    """
    return _marker("item", item_id)


def taste_token(item_id) -> str:
    """``⟨taste:ID⟩``: one input position holding item ``ID`` compared with the sample user's taste: the
    elementwise product of its unit item vector with ``unit(mean liked) - unit(mean disliked)`` history item
    vectors, so the entries sum to the liked-minus-disliked cosine (:func:`llmrec.collab.match.taste_vectors`).
    Needs the history's ratings (TALLRec prompts); reranking histories have none.

    Raises:
        ValueError: an empty id, or one with whitespace or ``⟨``/``⟩``.
    """
    return _marker("taste", item_id)


def match_token(item_id) -> str:
    """``⟨match:ID⟩``: one input position holding item ``ID`` compared with the SASRec user vector of the
    sample's history: the elementwise product of the two, whose entries sum to SASRec's next-item score
    (:func:`llmrec.collab.match.match_vectors`). Needs only the history's item order.

    Raises:
        ValueError: an empty id, or one with whitespace or ``⟨``/``⟩``.
    """
    return _marker("match", item_id)


def user_token() -> str:
    """``⟨user⟩``: one input position holding the projected SASRec user vector of the sample's history."""
    return f"{_OPEN}user{_CLOSE}"


def split_markers(text: str) -> list:
    """Split prompt text into pieces: ``str`` for text, ``("item", id)`` / ``("taste", id)`` / ``("match", id)`` /
    ``("user", None)`` for markers, in order (empty text pieces are left out)."""
    out, pos = [], 0
    for m in MARKER_RE.finditer(text):
        if m.start() > pos:
            out.append(text[pos:m.start()])
        out.append((m.group("kind"), m.group("id")) if m.group("kind") is not None else ("user", None))
        pos = m.end()
    if pos < len(text):
        out.append(text[pos:])
    return out


def has_markers(text: str) -> bool:
    """True when the text holds at least one collaborative-token marker."""
    return MARKER_RE.search(text) is not None


_CALL_RE = re.compile(r"\b(?:item_token|user_token|taste_token|match_token)\s*\(")


_PAIR_CALL_RE = re.compile(r"\b(?:taste_token|match_token)\s*\(")


def source_places_pairs(source: str) -> bool:
    """True when template source calls ``taste_token(...)`` or ``match_token(...)`` (interaction markers, whose rows
    come in a form: :data:`llmrec.collab.match.PAIR_FORMS`), judged from the source alone."""
    return _PAIR_CALL_RE.search(source) is not None


def source_places_tokens(source: str) -> bool:
    """True when template source calls ``item_token(...)``, ``user_token()``, ``taste_token(...)`` or
    ``match_token(...)`` (it renders markers for some input), judged from the source alone (no render)."""
    return _CALL_RE.search(source) is not None


#: What the template sandbox exposes.
TEMPLATE_GLOBALS = {"item_token": item_token, "user_token": user_token, "taste_token": taste_token,
                    "match_token": match_token}
