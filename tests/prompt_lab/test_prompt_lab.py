"""Template tooling: lint, diff, paired bootstrap, A/B evaluation, the ``llmrec prompts`` CLI and the
playground (headless and one real HTTP request). Model checks use the tiny random Llama; data checks use
the embedded MovieLens-100K (TALLRec splits)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from llmrec.prompt_lab.lint import LEAK_VARIABLES, PROMPT_VARIABLES, lint_template
from llmrec.prompt_lab.compare import compare_templates, eval_indices
from llmrec.prompt_lab.render import diff_renderings
from llmrec.metrics import paired_bootstrap_auc
from llmrec.prompts.render import render_one
from llmrec.prompts import Template, load_template
from llmrec.samples import Sample, sample_for_user, template_variables

from tests.conftest import make_tiny_llama

LEAKY = """---
name: leaky
format: plain
verbalizer: ["Yes", "No"]
variables: [liked, target, genre]
---
{% block prompt %}Liked: {{ liked | join(", ") }}
Target: {{ target }} by {{ usr }}
Answer: {{ "Yes" if label else "No" }}{% endblock %}
"""


@pytest.fixture(scope="module")
def ml100k():
    from llmrec.recipe import load_tallrec

    return load_tallrec()


@pytest.fixture()
def cached_data(monkeypatch, ml100k):
    """CLI commands reuse the already loaded splits instead of reading ML-100K again."""
    monkeypatch.setattr("llmrec.recipe.load_tallrec", lambda data=None: ml100k)
    return ml100k


def codes(rep, level=None):
    return {f.code for f in rep.findings if level is None or f.level == level}


# ------------------------------------------------------------------------------------------ variables
def test_prompt_variables_match_template_variables(ml100k):
    rec, splits = ml100k
    v = template_variables(splits.valid[0], rec.catalog)
    assert set(v) - {"label"} == PROMPT_VARIABLES and v["item_noun"] == "movie"
    assert "label" in LEAK_VARIABLES and "target_rating" in LEAK_VARIABLES


def test_sample_for_user(ml100k):
    rec, _ = ml100k
    s = sample_for_user(rec, "1", "1")
    assert s.user_id == "1" and s.target == "1" and len(s.history) == 10 and "1" not in s.history
    assert s.label == int(s.target_rating > 3)
    with pytest.raises(ValueError, match="^user 'nobody'"):
        sample_for_user(rec, "nobody", "1")
    with pytest.raises(ValueError, match="^target 'zz'"):
        sample_for_user(rec, "1", "zz")


# ------------------------------------------------------------------------------------------ lint
@pytest.mark.parametrize("name", ["tallrec", "tallrec-short", "tallrec-genres", "tallrec-chat", "tallrec-rate",
                                  "tallrec-last5", "tallrec-recent-first"])
def test_builtin_templates_lint_clean(name, ml100k, tiny_tokenizer):
    rec, splits = ml100k
    rep = lint_template(load_template(name), splits.valid[:200], rec.catalog, tiny_tokenizer, max_positions=1024)
    assert rep.exit_code == 0, rep.format()
    assert not rep.warnings, rep.format()
    t = rep.stats["tokens"]
    assert t["n"] == 200 and t["p50"] <= t["p95"] <= t["max"] < 1024


@pytest.mark.parametrize("name", ["rerank-pointwise", "rerank-pointwise-tokens", "rerank-pointwise-hybrid",
                                  "rerank-pointwise-match"])
def test_rerank_templates_lint_clean_rendered_as_the_rerankers_render_them(name, ml100k, tiny_model, tiny_tokenizer):
    """Pointwise reranking templates are linted and rendered with what the rerankers give them (titles and ids of
    the history, no rating), not with TALLRec's variables (they read ``history_ids``, which TALLRec samples lack).
    Reference: the text reranker's own render of the same titles for ``rerank-pointwise``; for the token templates,
    one ``⟨item:ID⟩`` marker per history item, in order."""
    from llmrec.rerank import PointwiseRerankScorer

    rec, splits = ml100k
    tpl = load_template(name)
    rep = lint_template(tpl, splits.valid[:100], rec.catalog, tiny_tokenizer, max_positions=1024)
    assert rep.exit_code == 0 and not rep.warnings, rep.format()
    assert rep.stats["rendered"] == 100
    s = splits.valid[0]
    text = render_one(tpl, s, rec.catalog)
    if name == "rerank-pointwise":
        ref = PointwiseRerankScorer(tiny_model, tiny_tokenizer, template=tpl).render(
            [rec.catalog.title(i) for i in s.history], rec.catalog.title(s.target))
        assert text == ref
    else:
        assert [m.split("⟩")[0] for m in text.split("⟨item:")[1:]] == [str(i) for i in s.history[-10:]] + [str(s.target)]
        assert "⟨user⟩" in text and ("⟨match:" in text) == (name == "rerank-pointwise-match")


def test_rerank_template_mistakes_are_named(ml100k, tiny_tokenizer):
    """A reranking template reading TALLRec-only variables, treating its title strings as dicts, or calling
    taste_token (reranking histories have no ratings) is flagged; a TALLRec template reading history_ids gets the
    hint to declare it; render errors say what a reranking template gets; render_samples (prompts eval, scoring)
    renders a reranking template exactly as render_one does."""
    from llmrec.prompts.render import render_samples
    from llmrec.prompts.template import TemplateRenderError

    rec, splits = ml100k
    head = "---\nname: {}\nformat: plain\nvariables: [{}]\n---\n{{% block prompt %}}{}\n{{% endblock %}}"
    liked = Template.from_string(head.format("rerank-liked", "liked", "{{ liked }} next?"))
    rep = lint_template(liked, splits.valid[:5], rec.catalog)
    msg = rep.format()
    assert "undefined-variable" in codes(rep, "error") and "the rerankers do not give" in msg and "history_ids" in msg
    with pytest.raises(TemplateRenderError, match="is a reranking template.*history, history_ids, target, target_id"):
        render_one(liked, splits.valid[0], rec.catalog)
    dicts = Template.from_string(head.format("rerank-titles", "history, target",
                                             "{% for h in history %}{{ h.title }} {% endfor %}{{ target }}?"))
    rep = lint_template(dicts, splits.valid[:5], rec.catalog)
    assert "python-repr" in codes(rep, "warning") and "write {{ h }}" in rep.format()
    taste = Template.from_string(head.format("rerank-taste", "history_ids, target_id",
                                             "{% for i in history_ids %}{{ item_token(i) }}{% endfor %} "
                                             "{{ taste_token(target_id) }}?"))
    assert "taste-in-rerank" in codes(lint_template(taste, splits.valid[:5], rec.catalog), "error")
    ids = Template.from_string(head.format("mine", "target", "{{ history_ids }} {{ target }}?"))
    assert "declare it in the header" in lint_template(ids).format()
    tpl = load_template("rerank-pointwise-match")
    assert render_samples(tpl, splits.valid[:3], rec.catalog) == [render_one(tpl, s, rec.catalog)
                                                                    for s in splits.valid[:3]]


def test_lint_finds_leaks_and_variable_problems(ml100k, tiny_tokenizer):
    rec, splits = ml100k
    rep = lint_template(Template.from_string(LEAKY), splits.valid[:100], rec.catalog, tiny_tokenizer)
    assert rep.exit_code == 1
    assert {"answer-leak", "undefined-variable", "render-error"} <= codes(rep, "error")
    assert {"undeclared-variable", "unused-variable"} <= codes(rep, "warning")
    msgs = "\n".join(f.message for f in rep.findings)
    assert "'label' (line 9)" in msgs and "'usr' (line 8)" in msgs and "'genre'" in msgs
    assert "end with their own answer" in msgs and "change when the label flips" in msgs


def test_lint_static_only_and_warnings_pass():
    t = Template.from_string("---\nname: w\nvariables: [target, liked, extra]\n---\n{% block instruction %}i"
                             "{% endblock %}{% block input %}{{ target }} {{ liked }}{% endblock %}")
    rep = lint_template(t)
    assert rep.exit_code == 0 and codes(rep, "warning") == {"unused-variable"} and "no-data" in codes(rep, "info")


def test_lint_verbalizer_shared_first_token(ml100k, tiny_tokenizer):
    rec, splits = ml100k
    src = load_template("tallrec").source.replace('verbalizer: ["Yes", "No"]', 'verbalizer: ["Yes", "Yes."]') \
        .replace('targets: ["Yes.", "No."]', 'targets: ["Yes", "Yes."]')
    rep = lint_template(Template.from_string(src), splits.valid[:20], rec.catalog, tiny_tokenizer)
    assert "verbalizer" in codes(rep, "error") and "share a first token" in rep.format()


def test_lint_lengths_against_limits(ml100k, tiny_tokenizer):
    rec, splits = ml100k
    tpl = load_template("tallrec")
    rep = lint_template(tpl, splits.valid[:50], rec.catalog, tiny_tokenizer, max_positions=200, max_length=150)
    errs = [f.message for f in rep.findings if f.code == "too-long"]
    assert any("200 positions" in m for m in errs) and any("max_length 150" in m for m in errs)
    assert all("cut the answer position" in m for m in errs)
    assert rep.exit_code == 1
    n = rep.stats["tokens"]["max"]
    ok = lint_template(tpl, splits.valid[:50], rec.catalog, tiny_tokenizer, max_positions=n + 100, max_length=n + 100)
    assert ok.exit_code == 0


def test_lint_python_repr_and_listwise(ml100k):
    rec, splits = ml100k
    src = load_template("tallrec").source.replace('{% for t in liked %}"{{ t }}"', '{% for t in history %}"{{ t }}"')
    rep = lint_template(Template.from_string(src), splits.valid[:10], rec.catalog)
    assert "python-repr" in codes(rep, "warning") and "h.title" in rep.format()
    lw = Template.from_string("---\nname: lw\ntask: listwise\nverbalizer: [\"A\", \"B\"]\nvariables: [history, "
                              "candidates]\n---\n{% block instruction %}i{% endblock %}{% block input %}{{ history }}"
                              "{% for c in candidates %}{{ c.letter }}{% endfor %}{% endblock %}")
    rep = lint_template(lw, splits.valid[:10], rec.catalog)
    assert rep.exit_code == 0 and "listwise" in codes(rep, "info")
    with pytest.raises(ValueError, match="listwise"):
        render_one(lw, splits.valid[0], rec.catalog)


def test_lint_answer_boundary_marker(ml100k):
    rec, splits = ml100k
    src = load_template("tallrec").source.replace('{{ item_noun | default("movie") }} "{{ target }}"?', 'movie "{{ target }}"?\n\n### Response:\nNo.')
    assert src != load_template("tallrec").source
    rep = lint_template(Template.from_string(src), splits.valid[:30], rec.catalog)
    assert "answer-boundary" in codes(rep, "warning")


# ------------------------------------------------------------------------------------------ diff
def test_diff_renderings():
    a, b = "same\nold line\nend", "same\nnew line\nend\nextra"
    u = diff_renderings(a, b, "A", "B")
    assert u.startswith("--- A\n+++ B") and "-old line" in u and "+new line" in u and "+extra" in u
    assert diff_renderings(a, a) == ""
    s = diff_renderings(a, b, "A", "B", side_by_side=True, width=60)
    lines = s.splitlines()
    assert lines[0].startswith("A") and "B" in lines[0]
    assert any("old line" in x and "|" in x and "new line" in x for x in lines)
    assert any(x.strip().startswith("> extra") or x.rstrip().endswith("extra") for x in lines)


# ------------------------------------------------------------------------------------------ bootstrap
def test_paired_bootstrap_auc():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    a = rng.normal(size=300)
    b = y + rng.normal(scale=0.7, size=300)
    r = paired_bootstrap_auc(y, a, b, n_resamples=300, seed=1)
    assert r["auc_a"] == pytest.approx(roc_auc_score(y, a)) and r["auc_b"] == pytest.approx(roc_auc_score(y, b))
    assert r["diff"] == pytest.approx(r["auc_b"] - r["auc_a"])
    assert 0 < r["ci_low"] < r["diff"] < r["ci_high"] and r["p_value"] < 0.01
    assert paired_bootstrap_auc(y, a, b, n_resamples=300, seed=1) == r  # seeded
    same = paired_bootstrap_auc(y, a, a, n_resamples=100, seed=0)
    assert same["diff"] == 0 and same["ci_low"] == same["ci_high"] == 0 and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="one class"):
        paired_bootstrap_auc([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        paired_bootstrap_auc([0, 1], [0.1], [0.2, 0.3])
    for bad in (0, -1):  # no resamples: no interval (not a NaN one)
        with pytest.raises(ValueError, match=rf"n_resamples {bad}: must be >= 1"):
            paired_bootstrap_auc(y, a, b, n_resamples=bad)


def test_compare_templates_refuses_zero_resamples_before_loading(ml100k):
    rec, splits = ml100k

    def loader():
        raise AssertionError("no model may load for a run that cannot report an interval")

    ts = [load_template("tallrec"), load_template("tallrec-short")]
    with pytest.raises(ValueError, match=r"n_resamples 0: must be >= 1"):
        compare_templates(ts, splits, rec.catalog, loader, n=30, n_resamples=0)


def test_eval_indices_exclude_early_stopping_samples():
    from llmrec.samples.kshot import k_shot_indices

    idx = eval_indices(1000, 200, 0, 32)
    assert len(idx) == len(set(idx)) == 200 and idx == sorted(idx)
    assert not set(idx) & set(k_shot_indices(1000, 32, 1234))
    assert idx == eval_indices(1000, 200, 0, 32) != eval_indices(1000, 200, 1, 32)
    with pytest.raises(ValueError, match="^n 999"):
        eval_indices(1000, 999, 0, 32)


def test_compare_templates_zero_and_k_shot(ml100k, tiny_tokenizer):
    from llmrec.metrics import auc
    from llmrec.scoring.pointwise import PointwiseScorer

    rec, splits = ml100k
    ts = [load_template("tallrec"), load_template("tallrec-short")]
    loader = lambda: (make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer)  # noqa: E731
    r = compare_templates(ts, splits, rec.catalog, loader, n=40, seed=0, shots=0, n_resamples=100)
    assert r["n"] == 40 and [t["name"] for t in r["templates"]] == ["tallrec", "tallrec-short"]
    subset = [splits.valid[i] for i in r["indices"]]
    sc = PointwiseScorer(loader()[0], tiny_tokenizer, ts[1])
    P = sc.encode_samples(subset, rec.catalog)
    assert r["templates"][1]["auc"] == pytest.approx(auc(P.labels, sc.score(P)), abs=1e-9)
    c = r["comparisons"][0]
    assert c["a"] == "tallrec" and c["diff"] == pytest.approx(r["templates"][1]["auc"] - r["templates"][0]["auc"])
    assert c["ci_low"] <= c["diff"] <= c["ci_high"]

    k = compare_templates(ts, splits, rec.catalog, loader, n=30, seed=0, shots=4, epochs=1, val_size=8,
                          n_resamples=50, train_overrides={"batch_size": 4})
    assert all("train" in t and t["train"]["epochs_run"] >= 1 for t in k["templates"])
    with pytest.raises(ValueError, match="at least two"):
        compare_templates(ts[:1], splits, rec.catalog, loader)


# ------------------------------------------------------------------------------------------ CLI
def run_cli(args, capsys):
    from llmrec.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_list_show(capsys, tmp_path):
    (tmp_path / "leaky.jinja").write_text(LEAKY)
    code, out, _ = run_cli(["prompts", "list", "--prompts", str(tmp_path)], capsys)
    assert code == 0 and "tallrec-genres" in out and "leaky" in out and "built-in" in out
    code, out, _ = run_cli(["prompts", "list", "--json"], capsys)
    assert {r["name"] for r in json.loads(out)} >= {"tallrec", "tallrec-short"}
    code, out, _ = run_cli(["prompts", "show", "tallrec-short"], capsys)
    assert code == 0 and "sha256:" in out and load_template("tallrec-short").sha256 in out and "{% block input %}" in out
    code, _, err = run_cli(["prompts", "show", "nope"], capsys)
    assert code == 2 and "unknown template 'nope'" in err


def test_cli_render(capsys, cached_data, tiny_model_dir):
    rec, splits = cached_data
    code, out, err = run_cli(["prompts", "render", "tallrec", "--index", "3", "--split", "test",
                              "--base-model", str(tiny_model_dir)], capsys)
    assert code == 0 and out == render_one(load_template("tallrec"), splits.test[3], rec.catalog)
    assert "test[3]" in err and "tokens" in err
    code, out, _ = run_cli(["prompts", "render", "tallrec-genres", "--user", "1", "--target", "1", "--json"], capsys)
    d = json.loads(out)
    assert code == 0 and d["user_id"] == "1" and "Toy Story" in d["text"]
    code, _, err = run_cli(["prompts", "render", "tallrec", "--index", "5000", "--split", "test"], capsys)
    assert code == 2 and "--index 5000" in err
    code, _, err = run_cli(["prompts", "render", "tallrec", "--split", "dev"], capsys)
    assert code == 2 and "--split 'dev'" in err


def test_cli_lint_exit_codes(capsys, cached_data, tiny_model_dir, tmp_path):
    (tmp_path / "leaky.jinja").write_text(LEAKY)
    code, out, _ = run_cli(["prompts", "lint", "tallrec", "--base-model", str(tiny_model_dir), "--split", "valid",
                            "--limit", "100"], capsys)
    assert code == 0 and "0 error(s)" in out and "p95" in out
    code, out, _ = run_cli(["prompts", "lint", "leaky", "--prompts", str(tmp_path), "--split", "valid",
                            "--limit", "50", "--json"], capsys)
    assert code == 1 and not json.loads(out)["ok"]
    (tmp_path / "warn.jinja").write_text(LEAKY.replace("{{ usr }}", "x").replace('{{ "Yes" if label else "No" }}', ""))
    code, out, _ = run_cli(["prompts", "lint", "warn", "--prompts", str(tmp_path), "--no-data"], capsys)
    assert code == 0 and "warning: [unused-variable]" in out


def test_cli_diff(capsys, cached_data):
    code, out, err = run_cli(["prompts", "diff", "tallrec", "tallrec-short", "--index", "0"], capsys)
    assert code == 0 and out.startswith("--- tallrec\n+++ tallrec-short") and "+Liked:" in out
    code, out, _ = run_cli(["prompts", "diff", "tallrec", "tallrec", "--index", "0"], capsys)
    assert "identically" in out
    code, out, _ = run_cli(["prompts", "diff", "tallrec", "tallrec-short", "-y", "--width", "100"], capsys)
    assert code == 0 and " | " in out


def test_cli_eval(capsys, cached_data, tiny_model_dir, tmp_path):
    code, out, _ = run_cli(["prompts", "eval", "tallrec", "tallrec-short", "--n", "30", "--resamples", "50",
                            "--base-model", str(tiny_model_dir), "--out", str(tmp_path / "ab.json")], capsys)
    assert code == 0 and "95% CI" in out and "tallrec-short - tallrec" in out
    res = json.loads((tmp_path / "ab.json").read_text())
    assert res["n"] == 30 and len(res["scores"][0]) == 30


# ------------------------------------------------------------------------------------------ playground
@pytest.fixture()
def pg_context(ml100k, tiny_tokenizer):
    from llmrec.prompt_lab.playground import PlaygroundContext

    rec, splits = ml100k
    return PlaygroundContext(rec, splits, tiny_tokenizer, make_tiny_llama(len(tiny_tokenizer)), "tiny", 1024,
                             {"tallrec": load_template("tallrec").source}, "tallrec")


def test_playground_preview_headless(pg_context):
    from llmrec.prompt_lab.playground import preview

    src = load_template("tallrec").source
    r = preview(src, [0, 1, 5000], "valid", context=pg_context, score=True)
    assert r["error"] is None and r["template"]["name"] == "tallrec"
    ok = [s for s in r["samples"] if s["error"] is None]
    assert [s["index"] for s in ok] == [0, 1] and all(s["tokens"] > 50 and 0 < s["p_yes"] < 1 for s in ok)
    assert ok[0]["text"] == render_one(load_template("tallrec"), pg_context.splits.valid[0], pg_context.rec.catalog)
    assert not r["ok"] and "index 5000" in r["samples"][-1]["error"]
    bad = preview(src.replace("format: alpaca", "format: html"), [0], context=pg_context)
    assert not bad["ok"] and "field 'format' = 'html'" in bad["error"]
    hostile = preview(src.replace("{{ target }}", "{{ cycler.__init__.__globals__ }}"), [0], context=pg_context)
    assert not hostile["ok"] and "sandbox refused" in hostile["samples"][0]["error"]
    assert "undefined-variable" in {f["code"] for f in preview(src.replace("{{ target }}", "{{ tgt }}"), [0],
                                                                 context=pg_context)["lint"]}


def test_playground_http(pg_context):
    from llmrec.prompt_lab.playground import make_server

    srv = make_server(pg_context, "127.0.0.1", 0)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        page = urllib.request.urlopen(base + "/", timeout=10).read().decode()
        assert "<textarea" in page and "/api/preview" in page
        tl = json.loads(urllib.request.urlopen(base + "/api/templates", timeout=10).read())
        assert tl["start"] == "tallrec" and "tallrec" in tl["templates"]
        body = json.dumps({"template": tl["templates"]["tallrec"], "indices": [2], "split": "test"}).encode()
        req = urllib.request.Request(base + "/api/preview", body, {"Content-Type": "application/json"})
        r = json.loads(urllib.request.urlopen(req, timeout=30).read())
        assert r["ok"] and r["samples"][0]["index"] == 2 and r["samples"][0]["text"].endswith("### Response:\n")
        form = urllib.request.Request(base + "/api/preview", b"template=x",
                                      {"Content-Type": "application/x-www-form-urlencoded"})
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(form, timeout=10)
        assert ei.value.code == 415
        rebind = urllib.request.Request(base + "/", headers={"Host": "evil.example:80"})
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(rebind, timeout=10)
        assert ei.value.code == 403
    finally:
        srv.shutdown()
        srv.server_close()
        th.join(timeout=5)
