"""Structured sample records: a JSONL form written and read beside alpaca JSON, and TALLRec-format alpaca
records parsed back into structured samples, so that every feature that needs the history (validation and
early stopping on the user's records, augmentation, the like-rate baseline, UAUC) works on them.

JSONL (one object per line, UTF-8)::

    {"user": "u7", "item_noun": "book", "like_threshold": 5.5, "rating_scale": [1, 10],
     "history": [{"item": "b1", "rating": 8, "text": "Dune by Frank Herbert"}, {"item": "b2", "label": 0}],
     "target": "b9", "target_text": "Emma by Jane Austen", "target_rating": 9, "label": 1}

* ``history`` (non-empty list, oldest first): ``item`` (id, str) and ``rating`` (number) or ``label`` (0/1);
  ``text`` (the item's text in prompts) where the file first names the item, unless a catalogue is given.
* ``target`` (id) and ``label`` (0/1) are required; ``target_rating`` is optional (default: a rating on the
  label's side of the threshold); ``user`` (or ``user_id``) optional (UAUC needs it).
* ``like_threshold`` (liked = rating > it) is needed when the history has ratings; label-only histories use
  ratings 1/0 with threshold 0.5. ``rating_scale`` (``[low, high]``) sets the ``mirror`` augmentation's flip.

TALLRec alpaca (Bao et al. 2023, movie or book wording)::

    input: User Preference: "t1", "t2"\\nUser Unpreference: "t3"\\nWhether the user will like the target book "T"?

is parsed into samples whose item ids are the items' text exactly as the record writes it (``"t1"``, or
TALLRec book's ``"t1" written by A``), liked items rated 1 and the others 0 (threshold 0.5). TALLRec's input
lists the liked items before the disliked ones, so the history order is that, not time. Re-rendering a parsed
record (:meth:`SampleSet.alpaca`) gives back its exact text (checked per record when parsing).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..data.core import Catalog
from ..data.tabular import jsonl_objects
from .tallrec import Sample, template_variables

__all__ = ["SampleSet", "read_samples_jsonl", "write_samples_jsonl", "parse_tallrec_alpaca", "read_sample_file",
           "sample_file_kind", "LABEL_THRESHOLD"]

#: The threshold of label-only histories (ratings 1 = liked, 0 = not).
LABEL_THRESHOLD = 0.5
_LABEL_SCALE = (0.0, 1.0)

_TALLREC_INPUT = re.compile(r"User Preference: ?(?P<liked>[^\n]*)\nUser Unpreference: ?(?P<disliked>[^\n]*)\n"
                            r"Whether the user will like the target (?P<noun>[^\"\n]+?) (?P<target>\"[^\n]*)\?")
_SPLIT = re.compile(r", (?=\")")


@dataclass
class SampleSet:
    """Samples read from a file, with what is needed to render them again.

    Attributes:
        samples: ``list[Sample]`` in file order, or None when the records are alpaca text that is not in
            TALLRec's format (then only ``records`` is usable: no augmentation, like-rate or UAUC;
            ``unstructured`` says why).
        catalog: item text per item id (``Catalog.title``); ``catalog.item_noun`` the domain word.
        kind: ``"jsonl"`` (rendered through the prompt template) or ``"alpaca"`` (rendered in TALLRec's own
            wording by :meth:`alpaca`, exactly as the file writes it).
        source: the file name (for messages).
        records: the alpaca records as read (alpaca kind), else None.
        instruction: the alpaca instruction (alpaca kind: the most common one in the file).
        unstructured: why ``samples`` is None.
    """

    samples: list | None
    catalog: Catalog | None
    kind: str
    source: str
    records: list | None = None
    instruction: str | None = None
    unstructured: str | None = None

    @property
    def item_noun(self) -> str:
        return self.catalog.item_noun if self.catalog is not None else "movie"

    @property
    def has_users(self) -> bool:
        """True when every sample names its user (UAUC is defined)."""
        return bool(self.samples) and all(s.user_id for s in self.samples)

    @property
    def labels(self) -> list[int]:
        if self.samples is not None:
            return [int(s.label) for s in self.samples]
        return [int(r["label"]) for r in self.records]

    def __len__(self) -> int:
        return len(self.samples) if self.samples is not None else len(self.records)

    def subset(self, indices) -> "SampleSet":
        """The set restricted to ``indices`` (a list of positions, in that order)."""
        idx = [int(i) for i in indices]
        return SampleSet(None if self.samples is None else [self.samples[i] for i in idx], self.catalog, self.kind,
                         self.source, None if self.records is None else [self.records[i] for i in idx],
                         self.instruction, self.unstructured)

    def require_structured(self, what: str) -> list:
        """The samples, or ValueError naming ``what`` needs them and why they are not there."""
        if self.samples is None:
            raise ValueError(f"{self.source}: {what} needs structured samples (a history with likes), but "
                             f"{self.unstructured}")
        return self.samples

    def alpaca(self, samples=None, answers: tuple[str, str] = ("Yes.", "No.")) -> list[dict]:
        """Alpaca records of ``samples`` (default: all). Alpaca kind: TALLRec's wording with the file's own
        instruction and item texts (the file's records come back exactly); JSONL kind: TALLRec's wording with
        ``item_noun``. Unstructured alpaca: the records as read."""
        if self.samples is None:
            return [dict(r) for r in self.records]
        samples = self.samples if samples is None else samples
        out = []
        for s in samples:
            if self.kind == "alpaca":
                liked = [i for i, r in zip(s.history, s.history_ratings) if r > s.like_threshold]
                disliked = [i for i, r in zip(s.history, s.history_ratings) if not r > s.like_threshold]
                inp = (f"User Preference: {', '.join(liked)}\nUser Unpreference: {', '.join(disliked)}\n"
                       f"Whether the user will like the target {self.item_noun} {s.target}?")
                rec = {"instruction": self.instruction, "input": inp}
            else:
                from .tallrec import tallrec_input, tallrec_instruction

                v = template_variables(s, self.catalog)
                rec = {"instruction": tallrec_instruction(v["item_noun"]), "input": tallrec_input(v)}
            rec["output"] = answers[0] if s.label else answers[1]
            if s.user_id:
                rec["user"] = s.user_id
            out.append(rec)
        return out


# ----------------------------------------------------------------------------------------------- JSONL
def _num(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        try:
            return float(str(v))
        except ValueError:
            raise ValueError(f"{where} has non-numeric value {v!r}") from None
    return float(v)


def _label01(v, where: str) -> int:
    if isinstance(v, bool) or (isinstance(v, (int, float)) and v in (0, 1)) or v in ("0", "1"):
        return int(v)
    raise ValueError(f"{where} has value {v!r}; expected a label 0 or 1")


def read_samples_jsonl(path: str | os.PathLike, *, catalog: Catalog | None = None, like_threshold: float | None = None,
                       item_noun: str | None = None, unlabelled: bool = False) -> SampleSet:
    """Read structured sample records (module docstring) into a :class:`SampleSet` of kind ``"jsonl"``.

    Args:
        path: the JSONL file.
        catalog: item texts for ids the records give no ``text`` for (an id in neither is an error).
        like_threshold: the threshold of records that carry none (the protocol's).
        item_noun: the domain word when the records carry none (default: the catalogue's, else ``"item"``).
        unlabelled: records to score: ``label`` may be missing (such samples get label -1).

    Raises:
        FileNotFoundError: no such file.
        ValueError: (one line naming the file, line and field) invalid JSON, a missing or empty ``history``, a
            history entry without ``item`` or without ``rating``/``label``, a non-numeric rating, a label that is
            not 0/1, ratings with no like threshold, an item with no text and not in the catalogue, no records.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sample file not found: {path}")
    samples: list[Sample] = []
    line_of: list[int] = []
    texts: dict[str, str] = {}
    nouns: set[str] = set()
    name = path.name
    for n, obj in jsonl_objects(path, "a JSON object (a sample record)"):
        where = f"{name}: line {n}"
        if unlabelled and obj.get("label") is None:
            obj = {**obj, "label": -1}
        for k in ("history", "target", "label"):
            if k not in obj:
                raise ValueError(f"{where}: missing field {k!r} (has {', '.join(sorted(obj)) or 'no fields'})")
        hist = obj["history"]
        if not isinstance(hist, list):
            raise ValueError(f"{where}: field 'history' must be a list of {{item, rating|label}}, got "
                             f"{type(hist).__name__}")
        if not hist:
            raise ValueError(f"{where}: field 'history' is empty (a sample needs at least one rated item)")
        items, ratings, label_only = [], [], True
        for j, h in enumerate(hist):
            hw = f"{where}: field 'history[{j}]'"
            if not isinstance(h, dict) or "item" not in h:
                raise ValueError(f"{hw} must be an object with 'item' and 'rating' or 'label'")
            if "rating" in h:
                ratings.append(_num(h["rating"], hw + " 'rating'"))
                label_only = False
            elif "label" in h:
                ratings.append(float(_label01(h["label"], hw + " 'label'")))
            else:
                raise ValueError(f"{hw} (item {h['item']!r}) has neither 'rating' nor 'label'")
            items.append(str(h["item"]))
            if h.get("text") is not None:
                texts.setdefault(str(h["item"]), str(h["text"]))
        target = str(obj["target"])
        if obj.get("target_text") is not None:
            texts.setdefault(target, str(obj["target_text"]))
        label = -1 if obj["label"] == -1 and unlabelled else _label01(obj["label"], f"{where}: field 'label'")
        th = obj.get("like_threshold", like_threshold)
        scale = obj.get("rating_scale")
        if label_only and "target_rating" not in obj:
            th = LABEL_THRESHOLD if th is None else th
            scale = scale or _LABEL_SCALE
        if th is None:
            raise ValueError(f"{where}: field 'like_threshold' is missing: the history has ratings, so the like rule "
                             f"(liked = rating > threshold) must be given in the record or by the protocol")
        th = _num(th, f"{where}: field 'like_threshold'")
        if scale is not None:
            if not (isinstance(scale, (list, tuple)) and len(scale) >= 2):
                raise ValueError(f"{where}: field 'rating_scale' must be [low, high], got {scale!r}")
            scale = (_num(scale[0], f"{where}: field 'rating_scale'"), _num(scale[1], f"{where}: field 'rating_scale'"))
        if "target_rating" in obj:
            tr = _num(obj["target_rating"], f"{where}: field 'target_rating'")
            if label >= 0 and int(tr > th) != label:
                raise ValueError(f"{where}: field 'label' {label} disagrees with target_rating {tr:g} under the like "
                                 f"rule rating > {th:g}")
        else:
            tr = (1.0 if label == 1 else 0.0) if label_only else (th + 0.5 if label == 1 else th)
        if obj.get("item_noun"):
            nouns.add(str(obj["item_noun"]))
        user = obj.get("user", obj.get("user_id", ""))
        samples.append(Sample(str(user) if user is not None else "", items, ratings, target, tr, label, th, scale))
        line_of.append(n)
    if not samples:
        raise ValueError(f"{name}: holds no sample records")
    if len(nouns) > 1:
        raise ValueError(f"{name}: field 'item_noun' differs between records ({', '.join(sorted(nouns))})")
    noun = next(iter(nouns)) if nouns else item_noun or (catalog.item_noun if catalog is not None else "item")
    records = []
    seen: set[str] = set()
    for n, s in enumerate(samples):
        for item in list(s.history) + [s.target]:
            if item in seen:
                continue
            seen.add(item)
            if item in texts:
                title = texts[item]
            elif catalog is not None and item in catalog:
                title = catalog.title(item)
            else:
                where = "the item catalogue" if catalog is not None else "no item catalogue was given"
                raise ValueError(f"{name}: line {line_of[n]}: field 'item': unknown item {item!r} (no 'text' for it in "
                                 f"the file, and {where}{' lacks it' if catalog is not None else ''})")
            records.append({"item_id": item, "title": title, "year": None, "genres": []})
    return SampleSet(samples, Catalog.from_records(records, item_noun=noun), "jsonl", name)


def write_samples_jsonl(samples, catalog: Catalog, path: str | os.PathLike, *, protocol: dict | None = None) -> Path:
    """Write samples as structured JSONL records (module docstring), atomically.

    Every record carries ``user``, ``item_noun``, ``like_threshold`` and ``rating_scale`` (when known), the
    history as ``{item, rating, text}``, ``target``, ``target_text``, ``target_rating`` and ``label``; with
    ``protocol``, also ``protocol`` (its ``name``) so a reader sees which protocol made them.

    Raises:
        KeyError: an item id not in ``catalog`` (named).
    """
    from llmrec._atomic import write_text_atomic

    lines = []
    for s in samples:
        rec = {"user": s.user_id, "item_noun": catalog.item_noun, "like_threshold": s.like_threshold}
        if s.rating_scale is not None:
            rec["rating_scale"] = list(s.rating_scale)
        rec["history"] = [{"item": i, "rating": float(r), "text": catalog.title(i)}
                          for i, r in zip(s.history, s.history_ratings)]
        rec.update(target=s.target, target_text=catalog.title(s.target), target_rating=float(s.target_rating),
                   label=int(s.label))
        if protocol:
            rec["protocol"] = protocol.get("name", "custom")
        lines.append(json.dumps(rec, ensure_ascii=False))
    write_text_atomic(path, "\n".join(lines) + "\n")
    return Path(path)


# ----------------------------------------------------------------------------------------- alpaca parse
def _split_items(text: str) -> list[str]:
    text = text.strip()
    return _SPLIT.split(text) if text else []


def _unquote(raw: str) -> str:
    return raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' and '"' not in raw[1:-1] else raw


def parse_tallrec_alpaca(records: list[dict], source: str = "records") -> SampleSet:
    """Parse validated alpaca records (with ``label``) in TALLRec's format into a :class:`SampleSet` of kind
    ``"alpaca"`` (module docstring). A user id is taken from a ``user`` / ``user_id`` key where the records
    have one.

    Returns:
        the set; ``samples`` None (``unstructured`` naming the first such record) when a record's input is not in
        TALLRec's format or does not re-render to its exact text, or the records mix item nouns.

    Raises:
        ValueError: a record in TALLRec's format with an empty history (names the source and record index), or
            no records.
    """
    if not records:
        raise ValueError(f"{source}: holds no records")
    samples, texts, nouns = [], {}, set()
    instruction = Counter(r["instruction"] for r in records).most_common(1)[0][0]

    def unstructured(why: str) -> SampleSet:
        return SampleSet(None, None, "alpaca", source, list(records), instruction, why)

    for i, r in enumerate(records):
        m = _TALLREC_INPUT.fullmatch(r["input"])
        if not m:
            return unstructured(f"record {i}'s input is not in TALLRec's format ('User Preference: \"...\"\\nUser "
                                f"Unpreference: ...\\nWhether the user will like the target <noun> \"...\"?')")
        liked, disliked = _split_items(m["liked"]), _split_items(m["disliked"])
        if not liked and not disliked:
            raise ValueError(f"{source}: record {i}: field 'input': empty history (no preferred or unpreferred items)")
        for it in liked + disliked + [m["target"]]:
            if not it.startswith('"'):
                return unstructured(f"record {i}'s item {it!r} is not a quoted title")
            texts.setdefault(it, _unquote(it))
        nouns.add(m["noun"])
        user = r.get("user", r.get("user_id", ""))
        label = int(r["label"])
        samples.append(Sample("" if user is None else str(user), liked + disliked,
                              [1.0] * len(liked) + [0.0] * len(disliked), m["target"], float(label), label,
                              LABEL_THRESHOLD, _LABEL_SCALE))
    if len(nouns) > 1:
        return unstructured(f"the records name different item nouns ({', '.join(sorted(nouns))})")
    catalog = Catalog.from_records([{"item_id": k, "title": v, "year": None, "genres": []} for k, v in texts.items()],
                                   item_noun=nouns.pop())
    out = SampleSet(samples, catalog, "alpaca", source, list(records), instruction)
    for i, (r, back) in enumerate(zip(records, out.alpaca())):
        if back["input"] != r["input"] or back["instruction"] != r["instruction"]:
            what = "input" if back["input"] != r["input"] else "instruction (it differs from the file's most common one)"
            return unstructured(f"record {i}'s {what} does not re-render exactly from its parsed history")
    return out


# ------------------------------------------------------------------------------------------ any file
def sample_file_kind(path: str | os.PathLike) -> str:
    """``"jsonl"`` (``.jsonl``, or content starting with ``{``) or ``"alpaca"`` (``.json``, or content starting
    with ``[``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: neither (names the file and what was expected).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sample file not found: {path}")
    ext = path.suffix.lower()
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if ext == ".json" and head != b"{":
        return "alpaca"
    if head == b"[":
        return "alpaca"
    if head == b"{":
        return "jsonl"
    raise ValueError(f"{path.name}: neither alpaca JSON (a JSON array of instruction/input/output records) nor "
                     f"structured sample JSONL (one {{\"history\", \"target\", \"label\"}} object per line)")


def read_sample_file(path: str | os.PathLike, *, answers: tuple[str, str] = ("Yes.", "No."),
                     catalog: Catalog | None = None, like_threshold: float | None = None,
                     item_noun: str | None = None) -> SampleSet:
    """Read alpaca JSON (parsed into samples when in TALLRec's format) or structured JSONL, by
    :func:`sample_file_kind`.

    Raises:
        FileNotFoundError / ValueError: as :func:`sample_file_kind`, :func:`llmrec.data.read_alpaca_json`,
            :func:`read_samples_jsonl` and :func:`parse_tallrec_alpaca`.
    """
    from ..data.alpaca import read_alpaca_json

    path = Path(path)
    if sample_file_kind(path) == "jsonl":
        return read_samples_jsonl(path, catalog=catalog, like_threshold=like_threshold, item_noun=item_noun)
    return parse_tallrec_alpaca(read_alpaca_json(path, answers=answers), path.name)
