"""End to end on the tiny model (issue 19): a synthetic book shop's two files (interactions CSV with ratings 1-10,
item CSV with authors) -> samples with a derived like threshold -> 16-shot training on the user's records with
validation, augmentation and early stopping -> evaluation with the like-rate baseline and UAUC (checked against
sklearn on values recomputed here from the written files). Bad input ends in one line and damages nothing."""

from __future__ import annotations

import hashlib
import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from llmrec.cli import main
from tests.conftest import cli_fails as _fails, snapshot_files as _snapshot

REPO = Path(__file__).resolve().parents[2]






@pytest.fixture(scope="module")
def books(tmp_path_factory):
    d = tmp_path_factory.mktemp("books")
    runpy.run_path(str(REPO / "examples" / "books" / "make_books.py"), run_name="make_books")["main"](d)
    return d


def _data_args(d: Path) -> list[str]:
    return ["--interactions", str(d / "interactions.csv"), "--items", str(d / "books.csv"),
            "--columns", "user=reader,item=book_id,rating=stars,timestamp=read_at", "--rating-scale", "1-10",
            "--item-noun", "book", "--item-text", "{title} by {author}"]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def tuned(books, tiny_model_dir, tmp_path_factory):
    """16 shots of the books' train split as JSONL, its valid split as JSONL and as TALLRec alpaca (book wording),
    and an adapter tuned on the 16 (+16 mirrored) with early stopping on the valid records."""
    w = tmp_path_factory.mktemp("run")
    main(["data", *_data_args(books), "--split", "train", "--shots", "16", "--seed", "3", "--out", str(w / "tr.jsonl")])
    main(["data", *_data_args(books), "--split", "valid", "--out", str(w / "va.jsonl")])
    main(["data", *_data_args(books), "--split", "valid", "--template", "tallrec", "--out", str(w / "va.json")])
    # lr ~0: the validation AUC cannot improve, so early stopping (patience 1) ends the run after 2 of 6 epochs
    main(["train", "--train-json", str(w / "tr.jsonl"), "--val-json", str(w / "va.jsonl"), "--augment", "mirror",
          "--epochs", "6", "--patience", "1", "--lr", "1e-12", "--val-size", "48", "--base-model", str(tiny_model_dir),
          "--out", str(w / "adapter")])
    return w


def test_samples_from_the_books_files(tuned, books):
    tr, va = _jsonl(tuned / "tr.jsonl"), _jsonl(tuned / "va.jsonl")
    assert len(tr) == 16 and len(va) == 73  # 1,328 ratings of 60 readers -> 728 windows -> 582/73/73
    for r in tr + va:
        assert r["like_threshold"] == 5.5 and r["item_noun"] == "book" and len(r["history"]) == 10
        assert r["label"] == int(r["target_rating"] > 5.5)
        assert " by " in r["target_text"]
    # the windows are the reader's 10 previous ratings in time order, recomputed from the CSV
    import csv

    rows = list(csv.DictReader(open(books / "interactions.csv")))
    r = va[0]
    mine = sorted((int(x["read_at"]), x["book_id"], float(x["stars"])) for x in rows if x["reader"] == r["user"])
    pos = [b for _, b, _ in mine].index(r["target"])
    assert [h["item"] for h in r["history"]] == [b for _, b, _ in mine[pos - 10:pos]]
    assert [h["rating"] for h in r["history"]] == [s for _, _, s in mine[pos - 10:pos]]


def test_train_on_records_with_validation_augmentation_early_stopping(tuned):
    meta = json.loads((tuned / "adapter" / "llmrec.json").read_text())
    p, t = meta["protocol"], meta["train"]
    assert p["name"] == "records" and p["like_threshold"] == 5.5 and p["item_noun"] == "book"
    assert p["records_kind"] == "jsonl" and p["template"] == "tallrec-last5" and len(p["train_sha256"]) == 64
    assert p["train_sha256"] == hashlib.sha256((tuned / "tr.jsonl").read_bytes()).hexdigest()
    assert t["n"] == 16 and t["train_samples"] == 32 and t["augment"] == ["mirror"] and t["val_size"] == 48
    assert t["epochs_run"] == 2 and len(t["val_auc_history"]) == 2  # stopped early, 2 < 6 epochs
    assert t["best_val_auc"] == pytest.approx(max(t["val_auc_history"]), abs=1e-12)


def test_eval_like_rate_and_uauc_against_sklearn(tuned, capsys):
    from sklearn.metrics import roc_auc_score

    main(["eval", "--adapter", str(tuned / "adapter"), "--input", str(tuned / "va.jsonl"), "--out",
          str(tuned / "e.json")])
    res = json.loads((tuned / "e.json").read_text())
    va = _jsonl(tuned / "va.jsonl")
    y = np.array([r["label"] for r in va])
    rate = np.array([np.mean([h["rating"] > 5.5 for h in r["history"]]) for r in va])
    assert res["like_rate_auc"] == pytest.approx(roc_auc_score(y, rate), abs=1e-12)
    by: dict = {}
    for r, lab, s in zip(va, y, rate):
        by.setdefault(r["user"], []).append((lab, s))
    per_user = [roc_auc_score(*zip(*v)) for v in by.values() if len({a for a, _ in v}) == 2]
    assert res["like_rate_uauc"] == pytest.approx(np.mean(per_user), abs=1e-12)
    assert res["uauc_users"] == len(per_user) and 0 <= res["uauc"] <= 1 and 0 <= res["auc"] <= 1
    assert res["protocol"]["item_noun"] == "book" and "protocol_mismatch" not in res
    # the same valid split as TALLRec alpaca (book wording): parsed back, the like-rate is the same
    main(["eval", "--adapter", str(tuned / "adapter"), "--input", str(tuned / "va.json"), "--out",
          str(tuned / "a.json")])
    alp = json.loads((tuned / "a.json").read_text())
    assert alp["like_rate_auc"] == pytest.approx(res["like_rate_auc"], abs=1e-12)
    assert "uauc" not in alp and alp["not_computed"]["uauc"] == "the records name no users"
    text = json.loads((tuned / "va.json").read_text())[0]
    assert "target book" in text["instruction"] and " by " in text["input"]


def test_protocol_mismatch_is_reported(tuned, books, capsys):
    main(["eval", "--adapter", str(tuned / "adapter"), *_data_args(books), "--like-threshold", "7", "--split", "test",
          "--limit", "20", "--out", str(tuned / "m.json")])
    res = json.loads((tuned / "m.json").read_text())
    assert res["protocol_mismatch"] == ["like_threshold 5.5 (tuned) vs 7.0 (now)"]
    assert "was tuned on another protocol: like_threshold 5.5 (tuned) vs 7.0 (now)" in capsys.readouterr().err


def test_bad_input_one_line_and_nothing_damaged(tuned, books, tmp_path, capsys):
    adapter = tuned / "adapter"
    before = _snapshot(adapter)
    out = tmp_path / "v.jsonl"
    out.write_text("earlier output\n")
    err = _fails(["data", *_data_args(books), "--like-threshold", "10", "--out", str(out)], capsys)
    assert err == ("llmrec: error: --like-threshold 10 is outside the rating scale [1, 10]: no rating would be liked "
                   "(liked = rating > threshold; use a value in [1, 10))")
    err = _fails(["data", *_data_args(books)[:4], "--columns", "user=user_id", "--out", str(out)], capsys)
    assert err == ("llmrec: error: interactions.csv: no column 'user_id' (the user column); the file has columns: "
                   "reader, book_id, stars, read_at")
    bad = tmp_path / "bad.csv"
    bad.write_text((books / "interactions.csv").read_text().replace("\nr000,b023,6,", "\nr000,b023,six,", 1))
    args = _data_args(books)
    args[1] = str(bad)
    err = _fails(["data", *args, "--out", str(out)], capsys)
    assert err == "llmrec: error: bad.csv: line 3: field 'stars' has non-numeric value 'six'"
    assert out.read_text() == "earlier output\n"
    # a failing train over an earlier adapter leaves it as it was
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"user": "r1", "history": [], "target": "b001", "label": 1}) + "\n")
    err = _fails(["train", "--train-json", str(tuned / "tr.jsonl"), "--val-json", str(empty), "--out", str(adapter),
                  "--base-model", "/nonexistent/base-model"], capsys)
    assert err == ("llmrec: error: empty.jsonl: line 1: field 'history' is empty (a sample needs at least one rated "
                   "item)")
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"user": "r1", "history": [{"item": "b001", "rating": 7}], "target": "b999",
                                   "label": 1}) + "\n")
    err = _fails(["eval", "--input", str(unknown), *_data_args(books), "--base-model", "/nonexistent/base-model"],
                 capsys)
    assert err == ("llmrec: error: unknown.jsonl: line 1: field 'item': unknown item 'b999' (no 'text' for it in the "
                   "file, and the item catalogue lacks it)")
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"instruction": "I", "input": "Liked: Dune", "output": "Yes."},
                                 {"instruction": "I", "input": "Liked: Emma", "output": "No."}]))
    err = _fails(["train", "--train-json", str(other), "--out", str(adapter), "--base-model", "/nonexistent/m"], capsys)
    assert err.startswith("llmrec: error: other.json: --augment mirror needs structured samples (a history with "
                          "likes), but record 0's input is not in TALLRec's format") and err.endswith(
                          "; pass --augment none")
    assert _snapshot(adapter) == before


def test_score_on_user_data(tuned, books, tmp_path, capsys):
    import csv

    rows = [r for r in csv.DictReader(open(books / "interactions.csv")) if r["reader"] == "r001"]
    target = rows[5]["book_id"]
    capsys.readouterr()
    main(["score", "--adapter", str(tuned / "adapter"), *_data_args(books), "--user", "r001", "--target", target])
    (row,) = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert row["label"] == int(float(rows[5]["stars"]) > 5.5) and 0 < row["p_yes"] < 1
    recs = _jsonl(tuned / "va.jsonl")[:3]
    for r in recs:
        r.pop("label")
    (tmp_path / "u.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    main(["score", "--adapter", str(tuned / "adapter"), "--input", str(tmp_path / "u.jsonl"), "--out",
          str(tmp_path / "s.json")])
    out = json.loads((tmp_path / "s.json").read_text())
    assert [set(r) for r in out] == [{"index", "p_yes"}] * 3
