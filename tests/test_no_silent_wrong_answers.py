"""Regression corpus of issue 18 ("no silent wrong answers"): one case per fault users of TALLRec, LlamaRec and
OpenP5 reported, each asserting the exact outcome (exit code, message) and that nothing saved before changed.

Every command case points ``--base-model`` at a folder that does not exist where the check must come before the
model loads: reaching the load would be another error.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmrec.cli import main
from tests.conftest import cli_fails as _fails, snapshot_files as _snapshot

NO_MODEL = ["--base-model", "/nonexistent/base-model"]
REC = {"instruction": "Given the user's preference...", "input": "User Preference: \"Heat (1995)\""}






# ------------------------------------------------------------------ 3. unlabelled records can be scored
def test_score_unlabelled_records(tiny_model_dir, tmp_path, capsys):
    """`score --input` on records whose output is missing or empty: scored, no label in their rows; a labelled
    record keeps its label; all three prompts are the same, so are the scores."""
    f = tmp_path / "new.json"
    f.write_text(json.dumps([{**REC, "output": ""}, dict(REC), {**REC, "output": "Yes."}, {**REC, "output": "  "}]))
    main(["score", "--base-model", str(tiny_model_dir), "--input", str(f), "--out", str(tmp_path / "s.json")])
    rows = json.loads((tmp_path / "s.json").read_text())
    assert ["label" in r for r in rows] == [False, False, True, False] and rows[2]["label"] == 1
    assert len({r["p_yes"] for r in rows}) == 1 and 0 < rows[0]["p_yes"] < 1


def test_score_refuses_an_unknown_answer_before_the_model_loads(tmp_path, capsys):
    f = tmp_path / "typo.json"
    f.write_text(json.dumps([{**REC, "output": "Maybe."}]))
    err = _fails(["score", *NO_MODEL, "--input", str(f)], capsys)
    assert err == "llmrec: error: typo.json: record 0: output 'Maybe.' is neither 'Yes.' nor 'No.'"


@pytest.mark.parametrize("outputs, message", [
    (["Yes.", "Yes."], "--input one.json: AUC needs both classes, but all 2 records are 'Yes.'"),
    (["No."], "--input one.json: AUC needs both classes, but all 1 records are 'No.'"),
])
def test_eval_needs_both_classes_before_the_model_loads(outputs, message, tmp_path, capsys):
    f = tmp_path / "one.json"
    f.write_text(json.dumps([{**REC, "output": o} for o in outputs]))
    out = tmp_path / "metrics.json"
    out.write_text('{"auc": 0.7}')
    before = _snapshot(tmp_path)
    err = _fails(["eval", *NO_MODEL, "--input", str(f), "--out", str(out)], capsys)
    assert err == f"llmrec: error: {message}"
    assert _snapshot(tmp_path) == before


def test_eval_refuses_unlabelled_records(tmp_path, capsys):
    f = tmp_path / "new.json"
    f.write_text(json.dumps([{**REC, "output": "Yes."}, {**REC, "output": ""}]))
    err = _fails(["eval", *NO_MODEL, "--input", str(f)], capsys)
    assert err == "llmrec: error: new.json: record 1: output '' is neither 'Yes.' nor 'No.'"


def test_require_both_classes_counts_unlabelled():
    from llmrec.data.alpaca import require_both_classes

    with pytest.raises(ValueError, match="AUC needs a label on every record, but 1 of 3 records have no"):
        require_both_classes([1, 0, -1], "x.json")
    require_both_classes([1, 0], "x.json")


# ------------------------------------------------------------------ 4. history items are not reranked as candidates
def _toy_catalog(n=8):
    from llmrec.data import Catalog

    return Catalog.from_records([{"item_id": str(i), "title": f"Film {i} ({1960 + i})", "year": 1960 + i,
                                  "genres": []} for i in range(n)])


def test_reranker_leaves_out_history_items(tiny_model, tiny_tokenizer):
    """LlamaRec users got the item they already had back as the top recommendation: the Reranker now leaves
    candidates in the history out, says which in ``.excluded``; ``exclude_history=False`` ranks them."""
    from llmrec import Reranker

    rr = Reranker(tiny_model, tiny_tokenizer, _toy_catalog(), max_history=5)
    ranked = rr.rerank(["5", "Film 1 (1961)"], ["5", "2", "1", "3"])
    assert sorted(r.item_id for r in ranked) == ["2", "3"] and ranked.excluded == ["5", "1"]
    assert [r.rank for r in ranked] == [1, 2]
    assert rr.rerank(["5"], ["2", "3"]).excluded == []
    with pytest.raises(ValueError, match=r"^every candidate \(2\) is in the history: nothing to rerank"):
        rr.rerank(["5", "1"], ["1", "5"])
    keep = Reranker(tiny_model, tiny_tokenizer, _toy_catalog(), max_history=5, exclude_history=False)
    ranked = keep.rerank(["5", "1"], ["5", "2", "1", "3"])
    assert sorted(r.item_id for r in ranked) == ["1", "2", "3", "5"] and ranked.excluded == []
    assert len(rr.scores(["5"], ["5", "2"])) == 2  # scores() stays aligned with the candidates it is given


# ------------------------------------------------------------------ 5. the wrong kind of adapter
@pytest.fixture(scope="module")
def kinds_of_adapters(tmp_path_factory, tiny_tokenizer):
    """A TALLRec and a listwise reranker adapter (random non-zero LoRA) recording a base model that does not
    exist: a kind check that came after the model load would fail with another error."""
    from peft import LoraConfig, get_peft_model

    from llmrec.adapter import save_adapter
    from llmrec.model import Verbalizer
    from llmrec.prompts import load_template
    from tests.conftest import make_tiny_llama

    root = tmp_path_factory.mktemp("kinds")
    out = {}
    for name, kind in [("tallrec", None), ("rerank-listwise", "rerank-listwise")]:
        peft = get_peft_model(make_tiny_llama(len(tiny_tokenizer)),
                              LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
        tpl = load_template(name)
        verb = Verbalizer(list(tpl.verbalizer), list(range(len(tpl.verbalizer))), [[i] for i in range(len(tpl.verbalizer))])
        out[name] = save_adapter(peft, root / name, base_model="/nonexistent/base-model", template=tpl,
                                 verbalizer=verb, kind=kind)
    return out


TALLREC_KIND = "a pointwise TALLRec adapter (llmrec train: P(Yes) that the user likes one target) (kind 'tallrec')"
LISTWISE_KIND = ("a listwise reranker adapter (eval/rerank_eval.py: letters over up to 20 candidates) "
                 "(kind 'rerank-listwise')")


def test_kind_is_recorded(kinds_of_adapters):
    kinds = {n: json.loads((d / "llmrec.json").read_text())["kind"] for n, d in kinds_of_adapters.items()}
    assert kinds == {"tallrec": "tallrec", "rerank-listwise": "rerank-listwise"}


@pytest.mark.parametrize("old", [False, True], ids=["recorded", "inferred-for-old-adapters"])
def test_tallrec_adapter_refused_by_the_reranker(kinds_of_adapters, tmp_path, old):
    import shutil

    from llmrec import Reranker
    from llmrec.adapter import AdapterError

    d = kinds_of_adapters["tallrec"]
    if old:  # saved before kinds were recorded: inferred from the recorded template (liked/disliked/target)
        d = Path(shutil.copytree(d, tmp_path / "old"))
        meta = json.loads((d / "llmrec.json").read_text())
        del meta["kind"]
        (d / "llmrec.json").write_text(json.dumps(meta))
    before = _snapshot(d)
    with pytest.raises(AdapterError) as e:
        Reranker.from_pretrained(d)
    assert str(e.value) == (f"adapter {d} is {TALLREC_KIND}; a reranker (Reranker.from_pretrained, llmrec recommend "
                            f"--adapter) needs {LISTWISE_KIND} or a pointwise reranker adapter "
                            f"(eval/rerank_eval.py: P(Yes) per candidate after a history) (kind 'rerank-pointwise')")
    assert _snapshot(d) == before


@pytest.mark.parametrize("command", ["score", "eval"])
def test_reranker_adapter_refused_by_score_and_eval(kinds_of_adapters, tmp_path, command, capsys):
    d = kinds_of_adapters["rerank-listwise"]
    f = tmp_path / "r.json"
    f.write_text(json.dumps([{**REC, "output": "Yes."}, {**REC, "output": "No."}]))
    err = _fails([command, "--adapter", str(d), "--input", str(f)], capsys)
    assert err == (f"llmrec: error: adapter {d} is {LISTWISE_KIND}; llmrec score/eval needs {TALLREC_KIND}")


def test_kind_of_an_unreadable_old_template_is_unknown():
    from llmrec.adapter import adapter_kind

    assert adapter_kind({"template": {"source": "---\ntask: nope\n---\n{{", "name": "x"}}) == "unknown"
    assert adapter_kind({"protocol": {"task": "rerank-pointwise"}, "template": {}}) == "rerank-pointwise"
    assert adapter_kind({"protocol": {"name": "tallrec-movie"}, "template": {}}) == "tallrec"


# ------------------------------------------------------------------ 6. silent data surprises
def _grouplens(d: Path, users: int, per_user: int, title: bytes = b"Film") -> Path:
    """A GroupLens raw folder: ``users`` users rating ``per_user`` of 20 items (ratings 1..5)."""
    d.mkdir(parents=True, exist_ok=True)
    rows = [f"{u}\t{(u + t) % 20 + 1}\t{t % 5 + 1}\t{1000 + t}" for u in range(1, users + 1) for t in range(per_user)]
    (d / "u.data").write_text("\n".join(rows) + "\n")
    flags = "|".join(["0"] * 18 + ["1"])
    (d / "u.item").write_bytes(b"".join(b"%d|%s %d (1995)|01-Jan-1995||http://x|%s\n" % (i, title, i, flags.encode())
                                        for i in range(1, 21)))
    return d


def _recbole(d: Path, ratings=("4", "2", "5"), item_title: bytes = b"Heat") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "toy.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"1\t{i + 1}\t{r}\t{100 + i}\n" for i, r in enumerate(ratings)))
    (d / "toy.item").write_bytes(b"item_id:token\tmovie_title:token_seq\trelease_year:token\n"
                                 + b"".join(b"%d\t%s\t1995\n" % (i, item_title) for i in range(1, len(ratings) + 1)))
    return d


@pytest.mark.parametrize("bad", ["6", "0", "-1"])
def test_recbole_rating_outside_the_scale_refused(bad, tmp_path, capsys):
    d = _recbole(tmp_path / "rb", ratings=("4", bad, "5"))
    out = tmp_path / "out.json"
    out.write_text("[1]")
    before = _snapshot(tmp_path)
    err = _fails(["data", "--data", str(d), "--out", str(out)], capsys)
    assert err == (f"llmrec: error: toy.inter: line 3: field 'rating' has value '{bad}'; expected a rating "
                   f"0.5..5 in steps of 0.5")
    assert _snapshot(tmp_path) == before


def test_recbole_any_scale_when_declared(tmp_path):
    from llmrec.data import read_recbole

    rec = read_recbole(_recbole(tmp_path / "rb", ratings=("4", "6", "-1")), rating_scale=None)
    assert rec.interactions.frame["rating"].tolist() == [4.0, 6.0, -1.0]


def test_u_item_saved_as_utf8_is_read_as_utf8(tmp_path):
    from llmrec.data import load_dataset

    d = _grouplens(tmp_path / "gl", 2, 3, title="Café".encode("utf-8"))
    assert load_dataset(d).catalog.title("1") == "Café 1 (1995)"  # not "CafÃ© 1 (1995)"
    d = _grouplens(tmp_path / "latin", 2, 3, title="Café".encode("latin-1"))  # the format's own encoding
    assert load_dataset(d).catalog.title("1") == "Café 1 (1995)"


def test_recbole_file_not_utf8_names_file_and_offset(tmp_path, capsys):
    d = _recbole(tmp_path / "rb", item_title="Café".encode("latin-1"))
    err = _fails(["data", "--data", str(d), "--out", str(tmp_path / "o.json")], capsys)
    offset = (d / "toy.item").read_bytes().index(b"\xe9")
    assert err == f"llmrec: error: toy.item: not valid utf-8 text: byte 0xe9 at offset {offset} (line 2); save it as utf-8"


def test_alpaca_json_not_utf8_names_file_and_offset(tmp_path, capsys):
    f = tmp_path / "latin.json"
    f.write_bytes(json.dumps([{**REC, "output": "Yes."}]).replace("Heat", "Caf\u00e9").encode("latin-1"))
    err = _fails(["score", *NO_MODEL, "--input", str(f)], capsys)
    offset = f.read_bytes().index(b"\xe9")
    assert err == f"llmrec: error: latin.json: not valid UTF-8 JSON: byte 0xe9 at offset {offset} (line 1); save it as UTF-8"


def test_no_samples_is_an_error_with_the_reason(tmp_path, capsys):
    d = _grouplens(tmp_path / "short", 5, 7)
    out = tmp_path / "out.json"
    err = _fails(["data", "--data", str(d), "--out", str(out)], capsys)
    assert err == (f"llmrec: error: data {d}: no TALLRec samples: every user has <= 10 ratings (most: 7; a sample is "
                   f"10 history ratings and a target)")
    assert not out.exists()


def test_empty_split_is_an_error(tmp_path, capsys):
    d = _grouplens(tmp_path / "one", 1, 12)  # 2 samples: 1 train, 0 valid, 1 test
    err = _fails(["data", "--data", str(d), "--split", "valid", "--out", str(tmp_path / "v.json")], capsys)
    assert err == "llmrec: error: --split valid: 0 samples (the data gives 1/0/1 train/valid/test samples); nothing written"
    assert not (tmp_path / "v.json").exists()


@pytest.mark.parametrize("command", ["score", "eval", "train"])
def test_empty_input_refused_before_the_model_loads(command, tmp_path, capsys):
    f = tmp_path / "empty.json"
    f.write_text("[]")
    d = _grouplens(tmp_path / "gl", 3, 14)
    args = {"score": ["score", "--input", str(f)], "eval": ["eval", "--input", str(f)],
            "train": ["train", "--train-json", str(f), "--out", str(tmp_path / "a"), "--data", str(d),
                      "--augment", "none"]}[command]
    err = _fails([*args, *NO_MODEL], capsys)
    assert err == {"score": f"llmrec: error: --input {f}: holds no records to score",
                   "eval": "llmrec: error: --input empty.json: no records to evaluate",
                   "train": f"llmrec: error: --train-json {f}: holds no records to train on"}[command]


# ------------------------------------------------------------------ 2. prompts past the model's context
def test_model_context_is_known(tiny_model, tiny_model_dir):
    from llmrec.model import context_length, model_max_positions

    assert context_length(tiny_model) == model_max_positions(str(tiny_model_dir)) == 1024


def test_prompt_past_the_context_refused(tiny_model_dir, tiny_tokenizer, tmp_path, capsys):
    """An 8,245-token prompt on an 8,192-position model was scored, exit 0: now refused (the tiny model has
    1,024 positions), and the --out of an earlier run is untouched."""
    long = {**REC, "input": "User Preference: " + ", ".join(f'"Heat ({1900 + i % 100})"' for i in range(400)),
            "output": "Yes."}
    f = tmp_path / "long.json"
    f.write_text(json.dumps([{**REC, "output": "No."}, long]))
    out = tmp_path / "s.json"
    out.write_text("[]")
    before = _snapshot(out)
    err = _fails(["score", "--base-model", str(tiny_model_dir), "--input", str(f), "--out", str(out)], capsys)
    assert err.startswith("llmrec: error: prompt 1 has ") and err.endswith(
        " tokens, more than the model's context of 1024 positions (its config's max_position_embeddings); shorten "
        "the template or the history")
    assert _snapshot(out) == before


def test_train_max_length_flag(tiny_model_dir, tmp_path, capsys):
    """The "raise max_length" advice names a flag that exists: llmrec train --max-length."""
    f = tmp_path / "train.json"
    f.write_text(json.dumps([{**REC, "output": "Yes."}, {**REC, "output": "No."}]))
    d = _grouplens(tmp_path / "gl", 3, 14)
    base = ["train", "--train-json", str(f), "--data", str(d), "--augment", "none", "--out", str(tmp_path / "a")]
    err = _fails([*base, "--max-length", "0", *NO_MODEL], capsys)
    assert err == "llmrec: error: --max-length 0: must be >= 1"
    err = _fails([*base, "--max-length", "8", "--base-model", str(tiny_model_dir)], capsys)
    assert err.startswith("llmrec: error: --max-length 8: a training example has ") and err.endswith(
        " tokens (prompt + answer); raise it or shorten the template (truncation would cut the answer)")
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------ 1. adapter on the wrong base model
@pytest.fixture(scope="module")
def tuned_on_tiny(tmp_path_factory, tiny_tokenizer, tiny_model_dir):
    """A TALLRec adapter (random non-zero LoRA) on the tiny model, and a model of the same shape with other
    weights (what TALLRec's "AUC ~0.5 whatever I do" reports were)."""
    from peft import LoraConfig, get_peft_model

    from llmrec.adapter import _probe_variables, save_adapter
    from llmrec.model import verbalizer_for
    from llmrec.prompts import load_template
    from tests.conftest import make_tiny_llama

    root = tmp_path_factory.mktemp("base")
    other = root / "same-shape-other-weights"
    make_tiny_llama(len(tiny_tokenizer), seed=1).save_pretrained(other)
    tiny_tokenizer.save_pretrained(other)
    tpl = load_template("tallrec")
    verb = verbalizer_for(tpl, tiny_tokenizer, tpl.render(_probe_variables(tpl), tiny_tokenizer))
    peft = get_peft_model(make_tiny_llama(len(tiny_tokenizer)),
                          LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    d = save_adapter(peft, root / "adapter", base_model=str(tiny_model_dir), template=tpl, verbalizer=verb)
    f = root / "labelled.json"
    f.write_text(json.dumps([{**REC, "output": "Yes."}, {**REC, "input": "User Preference: \"Casino (1995)\"",
                                                          "output": "No."}]))
    return d, other, f


def test_base_fingerprint_recorded(tuned_on_tiny, tiny_model_dir):
    from llmrec.model import base_fingerprint

    d, other, _ = tuned_on_tiny
    fp = json.loads((d / "llmrec.json").read_text())["base_fingerprint"]
    assert fp == base_fingerprint(str(tiny_model_dir)) and len(fp) == 64
    assert base_fingerprint(str(other)) != fp
    assert base_fingerprint("/nonexistent/base-model") is None


def test_adapter_on_other_weights_refused(tuned_on_tiny, tiny_model_dir, tmp_path, capsys):
    from llmrec.model import base_fingerprint

    d, other, f = tuned_on_tiny
    out = tmp_path / "m.json"
    out.write_text('{"auc": 0.48}')
    before = _snapshot(out, d)
    err = _fails(["eval", "--adapter", str(d), "--base-model", str(other), "--input", str(f), "--out", str(out)],
                 capsys)
    assert err == (f"llmrec: error: adapter {d} was tuned on base model {str(tiny_model_dir)!r} (weights sha256 "
                   f"{base_fingerprint(str(tiny_model_dir))[:12]}), but {str(other)!r} (--base-model) has weights "
                   f"sha256 {base_fingerprint(str(other))[:12]}: another model's weights give wrong scores; pass "
                   f"--allow-base-mismatch (allow_base_mismatch=True) to load it anyway")
    assert _snapshot(out, d) == before
    main(["eval", "--adapter", str(d), "--base-model", str(other), "--input", str(f), "--out", str(out),
          "--allow-base-mismatch"])
    loaded = json.loads(out.read_text())["loaded_base"]
    assert loaded["mismatch_allowed"] is True and loaded["base_model"] == str(other) and loaded["from"] == "base_model"


def test_base_model_flag_with_adapter_is_used(tuned_on_tiny, tiny_model_dir, tmp_path, capsys):
    """--base-model with --adapter is loaded (the same weights elsewhere pass the check), never ignored: a path
    that does not exist fails, naming the flag."""
    import shutil

    d, _, f = tuned_on_tiny
    copy = Path(shutil.copytree(tiny_model_dir, tmp_path / "copy"))
    main(["eval", "--adapter", str(d), "--base-model", str(copy), "--input", str(f), "--out", str(tmp_path / "m.json")])
    loaded = json.loads((tmp_path / "m.json").read_text())["loaded_base"]
    assert loaded["base_model"] == str(copy) and loaded["mismatch_allowed"] is False
    err = _fails(["score", "--adapter", str(d), "--input", str(f), *NO_MODEL], capsys)
    assert err.startswith("llmrec: error: --base-model '/nonexistent/base-model': cannot load it with transformers")


def test_recorded_base_model_missing_names_llmrec_json(kinds_of_adapters, tmp_path, capsys):
    d = kinds_of_adapters["tallrec"]
    f = tmp_path / "r.json"
    f.write_text(json.dumps([{**REC, "output": "Yes."}]))
    err = _fails(["score", "--adapter", str(d), "--input", str(f)], capsys)
    assert err.startswith(f"llmrec: error: adapter {d}: its base model '/nonexistent/base-model' (recorded in "
                          f"{d / 'llmrec.json'}) cannot be loaded (") and err.endswith("); pass --base-model a local copy of it")


# ------------------------------------------------------------------ 7. long work shows it lives; unknown names fail fast
def test_index_progress_lines_when_not_a_terminal(capsys):
    """The tqdm bar switches itself off when stderr is not a terminal (here: captured): plain lines instead."""
    from llmrec.cli.rec import _progress_log

    bar, log = _progress_log(50)
    log("epoch=10 loss=3.2100 seconds=4.0 valid_ndcg10=0.0812")
    bar.close()
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "llmrec index: fitting SASRec (at most 50 epochs, early stopping on validation NDCG@10)"
    assert err[1].startswith("llmrec index: SASRec epoch=10 loss=3.2100 seconds=4.0 valid_ndcg10=0.0812 (elapsed ")


@pytest.mark.parametrize("name, env, message", [
    ("smollm2-360m-instruct", {}, "--base-model 'smollm2-360m-instruct': unknown model name (did you mean "
                                  "'smollm2-135m-instruct'? embedded: "),
    ("someone/no-such-model-llmrec", {"HF_HUB_OFFLINE": "1"},
     "--base-model 'someone/no-such-model-llmrec': not an embedded model ("),
])
def test_unknown_model_name_fails_fast(name, env, message, monkeypatch, tmp_path, capsys):
    import time

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    f = tmp_path / "r.json"
    f.write_text(json.dumps([{**REC, "output": "Yes."}]))
    t0 = time.monotonic()
    err = _fails(["score", "--input", str(f), "--base-model", name], capsys)
    assert err.startswith(f"llmrec: error: {message}") and time.monotonic() - t0 < 5
