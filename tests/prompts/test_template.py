"""Prompt templates: loading, header validation, sandboxing of hostile templates, error messages, and the
adapter's template-hash check (tiny random Llama, no training)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from llmrec.data import Catalog
from llmrec.prompts import (
    ALPACA_WRAPPER,
    Template,
    TemplateError,
    TemplateRenderError,
    list_templates,
    load_template,
)
from llmrec.samples import Sample, template_variables
from llmrec.samples.tallrec import TALLREC_INSTRUCTION, tallrec_input

HEAD = "---\nname: h\nvariables: [target]\n---\n"


def make(instruction: str, input: str = "x", head: str = HEAD) -> Template:
    return Template.from_string(head + "{% block instruction %}" + instruction + "{% endblock %}"
                                "{% block input %}" + input + "{% endblock %}", name="h")


def toy_catalog() -> Catalog:
    return Catalog.from_records([
        {"item_id": f"i{k}", "title": f"Movie {k} ({1990 + k})", "year": 1990 + k, "genres": ["Drama"] * (k % 2)}
        for k in range(6)
    ])


def toy_sample(label: int = 1) -> Sample:
    return Sample("u1", ["i0", "i1", "i2", "i3"], [5.0, 1.0, 4.0, 2.0], "i5", 5.0 if label else 1.0, label)


def vars_of(sample: Sample) -> dict:
    v = template_variables(sample, toy_catalog())
    v.pop("label")
    return v


# ------------------------------------------------------------------------------------------ built-ins
def test_builtin_templates_load():
    names = set(list_templates())
    assert {"tallrec", "tallrec-chat", "tallrec-short", "tallrec-genres"} <= names
    for n in names:  # every shipped template loads and declares exactly what it reads
        t = load_template(n)
        assert set(t.referenced_variables()) <= set(t.variables) | {"range"}, n
        assert set(t.variables) <= set(t.referenced_variables()), n
    for n in ("tallrec", "tallrec-chat", "tallrec-short", "tallrec-genres"):
        t = load_template(n)
        assert t.task == "pointwise" and t.verbalizer == ["Yes", "No"]


def test_tallrec_template_is_tallrecs_prompt():
    v = vars_of(toy_sample())
    expected = ALPACA_WRAPPER.format(instruction=TALLREC_INSTRUCTION, input=tallrec_input(v))
    assert load_template("tallrec").render(v) == expected
    assert expected.endswith("### Response:\n")


def test_genres_and_short_templates_render():
    v = vars_of(toy_sample())
    g = load_template("tallrec-genres").render(v)
    assert "- Movie 1 (1991) [Drama]: disliked" in g and "- Movie 0 (1990): liked" in g
    assert "Target movie: Movie 5 (1995) [Drama]" in g and g.endswith("### Response:\n")
    s = load_template("tallrec-short").render(v)
    assert "Liked: Movie 0 (1990); Movie 2 (1992)\nDisliked: Movie 1 (1991); Movie 3 (1993)\nTarget: Movie 5 (1995)" in s


def test_history_order_and_length_templates_render():
    """tallrec-recent-first == TALLRec's prompt with each list reversed; tallrec-last5 keeps the 5 most recent."""
    sample = Sample("u1", ["i0", "i1", "i2", "i3", "i4", "i5"], [5.0, 1.0, 4.0, 2.0, 5.0, 1.0], "i5", 5.0, 1)
    v = vars_of(sample)
    r = load_template("tallrec-recent-first").render(v)
    assert 'User Preference: "Movie 4 (1994)", "Movie 2 (1992)", "Movie 0 (1990)"\n' in r
    assert 'User Unpreference: "Movie 5 (1995)", "Movie 3 (1993)", "Movie 1 (1991)"\n' in r
    assert r.replace('"Movie 4 (1994)", "Movie 2 (1992)", "Movie 0 (1990)"',
                     '"Movie 0 (1990)", "Movie 2 (1992)", "Movie 4 (1994)"').replace(
        '"Movie 5 (1995)", "Movie 3 (1993)", "Movie 1 (1991)"',
        '"Movie 1 (1991)", "Movie 3 (1993)", "Movie 5 (1995)"') == load_template("tallrec").render(v)
    f = load_template("tallrec-last5").render(v)  # i0 (liked) is the 6th most recent: dropped
    assert 'User Preference: "Movie 2 (1992)", "Movie 4 (1994)"\n' in f
    assert 'User Unpreference: "Movie 1 (1991)", "Movie 3 (1993)", "Movie 5 (1995)"\n' in f


def test_user_dir_shadows_builtin(tmp_path):
    (tmp_path / "tallrec.jinja").write_text(HEAD + "{% block instruction %}mine{% endblock %}{% block input %}"
                                            "{{ target }}{% endblock %}")
    assert load_template("tallrec", [tmp_path]).path == tmp_path / "tallrec.jinja"
    with pytest.raises(FileNotFoundError, match="unknown template 'nope'.*tallrec"):
        load_template("nope", [tmp_path])


def test_prompts_path_that_is_not_a_folder_is_an_error(tmp_path, capsys):
    f = tmp_path / "mine.jinja"
    f.write_text(HEAD + "{% block instruction %}mine{% endblock %}{% block input %}{{ target }}{% endblock %}")
    with pytest.raises(NotADirectoryError, match=rf"^prompts {re.escape(str(f))}: not a folder"):
        load_template("tallrec", [f])
    with pytest.raises(NotADirectoryError, match=rf"^prompts {re.escape(str(f))}: not a folder"):
        load_template(f, [f])  # also when the template itself is given as a path
    with pytest.raises(FileNotFoundError, match=rf"^prompts {re.escape(str(tmp_path / 'nope'))}: template folder "
                                                 rf"not found"):
        list_templates([tmp_path, tmp_path / "nope"])
    assert list_templates([tmp_path])["mine"] == f  # a real folder still works

    from llmrec.cli import main

    with pytest.raises(SystemExit) as e:
        main(["prompts", "show", "tallrec", "--prompts", str(f)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f"llmrec: error: --prompts {f}: not a folder")


# ------------------------------------------------------------------------------------------ hostile
HOSTILE = {
    "mro-subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "cycler-globals": "{{ cycler.__init__.__globals__ }}",
    "joiner-globals": "{{ joiner.__init__.__globals__['os'] }}",
    "self-context": "{{ self._TemplateReference__context }}",
    "self-dict": "{{ self.__dict__ }}",
    "include-passwd": "{% include '/etc/passwd' %}",
    "include-self": "{% include 'h' %}",
    "import-os": "{% import 'os' as os %}{{ os.system('true') }}",
    "from-import": "{% from 'os' import system %}",
    "lipsum-globals": "{{ lipsum.__globals__ }}",
    "list-append": "{% set x = [].append(1) %}",
    "dict-update": "{% set d = {} %}{{ d.update({'a': 1}) }}",
    "attr-filter": "{{ 1|attr('__class__') }}",
    "format-escape": "{{ '{0.__class__.__base__}'.format(1) }}",
    "format-map": "{{ '{0.__globals__}'.format_map({'0': cycler.__init__}) }}",
    "getattr-builtins": "{{ namespace.__init__.__globals__['__builtins__'] }}",
    "range-bomb": "{% for i in range(10 ** 9) %}{% endfor %}",
    "string-bomb": "{{ 'a' * 10 ** 8 }}",
    "power-bomb": "{{ 2 ** 100000000 }}",
    "recursion": "{{ self.instruction() }}",
    "zero-division": "{{ 1 / 0 }}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_template_is_refused(name):
    with pytest.raises((TemplateRenderError, TemplateError)) as ei:
        make(HOSTILE[name]).render({"target": "T"})
    msg = str(ei.value)
    assert "template h" in msg
    for leak in ("root:", "<function", "__builtins__':", "<module", "subprocess"):
        assert leak not in msg, (name, msg)


def test_hostile_in_input_block_names_line():
    t = make("ok", "line one\n{{ ''.__class__ }}")
    with pytest.raises(TemplateRenderError, match=r"template h, line 6: sandbox refused"):
        t.render({"target": "T"})


def test_extends_is_refused_at_load():
    with pytest.raises(TemplateError, match="template h"):
        make("{% extends '/etc/passwd' %}")


# ------------------------------------------------------------------------------------------ errors
def test_undefined_variable_names_template_line_and_variable():
    t = Template.from_string(HEAD.replace("name: h", "name: mine") + "{% block instruction %}Hello{% endblock %}\n"
                             "{% block input %}\nTarget: {{ target }}\nUser: {{ usr }}{% endblock %}", name="file")
    with pytest.raises(TemplateRenderError) as ei:
        t.render({"target": "T"})
    msg = str(ei.value)
    assert "template mine" in msg and "line 8" in msg and "'usr' is undefined" in msg


@pytest.mark.parametrize("head,field,value", [
    ("format: html\n", "format", "'html'"),
    ("task: rating\n", "task", "'rating'"),
    ('verbalizer: ["Yes"]\n', "verbalizer", "['Yes']"),
    ('verbalizer: ["Yes", "Yes"]\n', "verbalizer", "['Yes', 'Yes']"),
    ('targets: ["Sure", "No"]\n', "targets", "['Sure', 'No']"),
    ("verbalizer: [Yes, No]\n", "verbalizer", "[True, False], expected a list of >= 2 words (quote the words"),
])
def test_header_errors_name_field_and_value(head, field, value):
    text = "---\nname: h\n" + head + "---\n{% block instruction %}i{% endblock %}{% block input %}x{% endblock %}"
    with pytest.raises(TemplateError) as ei:
        Template.from_string(text, name="h")
    assert f"field '{field}' = {value}" in str(ei.value) and "template h" in str(ei.value)


def test_structure_errors(tmp_path):
    with pytest.raises(TemplateError, match="missing YAML front matter"):
        Template.from_string("{% block instruction %}{% endblock %}")
    with pytest.raises(TemplateError, match="bad YAML header"):
        Template.from_string("---\nname: [unclosed\n---\nbody")
    with pytest.raises(TemplateError, match=r"needs a '\{% block input %\}'"):
        Template.from_string(HEAD + "{% block instruction %}i{% endblock %}")
    with pytest.raises(TemplateError, match="syntax error at line 6"):
        Template.from_string(HEAD + "{% block instruction %}i{% endblock %}\n{% block input %}{{ x }{% endblock %}")
    p = tmp_path / "bin.jinja"
    p.write_bytes(b"---\xff\xfe")
    with pytest.raises(TemplateError, match="not UTF-8"):
        load_template(p)


# ------------------------------------------------------------------------------------------ adapter
def test_adapter_records_template_and_refuses_another(tiny_model_dir, tiny_tokenizer, tmp_path):
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmrec.adapter import AdapterError, load_adapter, read_metadata, save_adapter
    from llmrec.model import verbalizer_for
    from llmrec.scoring.pointwise import PointwiseScorer

    tpl, other = load_template("tallrec"), load_template("tallrec-short")
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    cfg = LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                     init_lora_weights=False)
    model = get_peft_model(base, cfg).eval()
    texts = [tpl.render(vars_of(toy_sample(y))) for y in (0, 1)]
    verb = verbalizer_for(tpl, tiny_tokenizer, texts[0])
    sc = PointwiseScorer(model, tiny_tokenizer, tpl, verbalizer=verb)
    before = sc.score(sc.encode(texts))

    out = save_adapter(model, tmp_path / "ad", base_model=str(tiny_model_dir), template=tpl, verbalizer=verb)
    meta = read_metadata(out)
    assert meta["template"]["name"] == "tallrec" and meta["template"]["sha256"] == tpl.sha256

    with pytest.raises(AdapterError, match="tuned with template 'tallrec'.*not 'tallrec-short'"):
        load_adapter(out, template=other)
    m2, tok2, t2, v2, _ = load_adapter(out, template=other, allow_template_mismatch=True)
    assert t2 is other

    m3, tok3, t3, v3, _ = load_adapter(out)  # the recorded template
    assert t3.sha256 == tpl.sha256 and v3.token_ids == verb.token_ids
    sc3 = PointwiseScorer(m3, tok3, t3, verbalizer=v3)
    after = sc3.score(sc3.encode(texts))
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-5)
    assert not np.allclose(before, 0.5)  # the adapter does something (B != 0)
