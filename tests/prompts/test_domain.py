"""Templates parametrised by domain (issue 19): ``{{ item_noun | default("movie") }}`` renders movie data exactly as
the movie wording did (and a context without ``item_noun`` too), book data in book words, and lint warns when a template's literal wording names another kind of item."""

from __future__ import annotations

import pytest

from llmrec.data import Catalog
from llmrec.prompt_lab.lint import domain_mismatch_words, lint_template
from llmrec.prompts import Template, list_templates, load_template
from llmrec.samples import Sample, template_variables

NOUN_TEMPLATES = ["tallrec", "tallrec-chat", "tallrec-last5", "tallrec-rate", "tallrec-recent-first", "tallrec-short"]


def _catalog(noun: str) -> Catalog:
    return Catalog.from_records([{"item_id": f"i{k}", "title": f"Title {k}", "year": None, "genres": []}
                                 for k in range(6)], item_noun=noun)


SAMPLE = Sample("u1", ["i0", "i1", "i2", "i3"], [5.0, 1.0, 4.0, 2.0], "i5", 5.0, 1)


@pytest.mark.parametrize("name", NOUN_TEMPLATES)
def test_item_noun_movie_renders_the_movie_wording(name, tiny_tokenizer):
    """The reference is the template with every ``{{ item_noun | default("movie") }}`` written out as the literal
    word, i.e. the movie-only template as it was: same text, byte for byte."""
    tpl = load_template(name)
    assert "{{ item_noun | default(\"movie\") }}" in tpl.body and "item_noun" in tpl.variables
    literal = Template.from_string(tpl.source.replace("{{ item_noun | default(\"movie\") }}", "movie"), name=name)
    v = template_variables(SAMPLE, _catalog("movie"))
    v.pop("label")
    tok = tiny_tokenizer if tpl.format == "chat" else None
    if tok is not None and not getattr(tok, "chat_template", None):
        pytest.skip("the tiny tokenizer has no chat template")
    assert tpl.render(v, tok) == literal.render(v, tok)
    old_context = {k: x for k, x in v.items() if k != "item_noun"}  # callers that pass no item_noun: movie
    assert tpl.render(old_context, tok) == literal.render(v, tok)
    assert "target movie" in tpl.render(v, tok)
    b = template_variables(SAMPLE, _catalog("book"))
    b.pop("label")
    text = tpl.render(b, tok)
    assert "movie" not in text and "book" in text


def test_lint_warns_on_domain_wording():
    assert domain_mismatch_words(load_template("tallrec-genres"), "book") == ["movie"]
    assert domain_mismatch_words(load_template("tallrec"), "book") == []
    assert domain_mismatch_words(load_template("tallrec-genres"), "movie") == []
    codes = {f.code for f in lint_template(load_template("item-prior"), item_noun="book").warnings}
    assert "domain-wording" in codes
    codes = {f.code for f in lint_template(load_template("tallrec-last5"), [SAMPLE], _catalog("book")).warnings}
    assert "domain-wording" not in codes
    for name in NOUN_TEMPLATES:  # every noun template is clean for any domain
        assert domain_mismatch_words(load_template(name), "product") == [], name
    assert set(NOUN_TEMPLATES) <= set(list_templates())
