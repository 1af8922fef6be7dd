"""eval/tallrec_auc.py on data that is not MovieLens (issue 19): a dataset with protocol options, or sample files,
giving the same tables; the like-rate numbers checked against sklearn on values recomputed from the samples."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    return runpy.run_path(str(REPO / "eval" / "tallrec_auc.py"), run_name="tallrec_auc")


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    d = tmp_path_factory.mktemp("books")
    runpy.run_path(str(REPO / "examples" / "books" / "make_books.py"), run_name="make_books")["main"](d)
    return d


DATA = ["--columns", "user=reader,item=book_id,rating=stars,timestamp=read_at", "--rating-scale", "1-10",
        "--item-noun", "book", "--item-text", "{title} by {author}"]
RUN = ["--shots", "8", "--seeds", "0", "--epochs", "1", "--val-size", "16", "--dtype", "float32"]


def test_dataset_with_protocol_options(script, books, tiny_model_dir, tmp_path, capsys):
    from sklearn.metrics import roc_auc_score

    from llmrec.data import read_tabular
    from llmrec.data.tabular import parse_columns
    from llmrec.samples.protocol import ProtocolConfig, build_protocol

    out = tmp_path / "r.json"
    assert script["main"](["--base-model", str(tiny_model_dir), "--interactions", str(books / "interactions.csv"),
                           "--items", str(books / "books.csv"), *DATA, *RUN, "--limit", "40", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "TALLRec (LLaMA-7B)" not in printed and "| like-rate baseline (no model) |" in printed
    assert "protocol: liked = rating > 5.5 (the midpoint of the rating scale [1, 10])" in printed
    assert res["protocol"]["like_threshold"] == 5.5 and res["protocol"]["item_noun"] == "book"
    # reference: the test split rebuilt here, like-rate = fraction of history ratings > 5.5
    cm, _, _ = parse_columns(DATA[1])
    rec = read_tabular(books / "interactions.csv", books / "books.csv", columns=cm, rating_scale="1-10")
    test = build_protocol(rec, ProtocolConfig()).splits.test[:40]
    y = [s.label for s in test]
    rate = [np.mean([r > 5.5 for r in s.history_ratings]) for s in test]
    assert res["n_test"] == 40 and res["like_rate_auc"] == pytest.approx(roc_auc_score(y, rate), abs=1e-12)
    (run,) = res["runs"]
    assert run["shots"] == 8 and run["train_samples"] == 16 and 0 <= run["test_auc"] <= 1 and run["test_uauc"] is not None
    assert 0 <= res["zero_shot"]["auc"] <= 1 and res["uauc_users"] > 0


def test_sample_files_tallrec_book_alpaca(script, books, tiny_model_dir, tmp_path, capsys):
    from llmrec.cli import main

    base = ["--interactions", str(books / "interactions.csv"), "--items", str(books / "books.csv"), *DATA,
            "--template", "tallrec"]
    for split in ("train", "valid", "test"):
        main(["data", *base, "--split", split, "--out", str(tmp_path / f"{split}.json")])
    out = tmp_path / "r.json"
    assert script["main"](["--base-model", str(tiny_model_dir), "--train-json", str(tmp_path / "train.json"),
                           "--val-json", str(tmp_path / "valid.json"), "--test-json", str(tmp_path / "test.json"),
                           *RUN, "--no-zero-shot", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    records = json.loads((tmp_path / "test.json").read_text())
    # reference: like-rate from the alpaca text itself (count the quoted items on each line)
    from sklearn.metrics import roc_auc_score

    def n_items(line):
        return 0 if line.endswith(": ") else line.count('", "') + 1

    rate = []
    for r in records:
        pref, unpref = r["input"].split("\n")[:2]
        a, b = n_items(pref), n_items(unpref)
        rate.append(a / (a + b))
    y = [1 if r["output"] == "Yes." else 0 for r in records]
    assert res["like_rate_auc"] == pytest.approx(roc_auc_score(y, rate), abs=1e-12)
    assert res["uauc_users"] == 0 and res["like_rate_uauc"] is None  # alpaca records name no users
    assert res["protocol"]["name"] == "records" and res["protocol"]["item_noun"] == "book"
    assert len(res["runs"]) == 1 and res["runs"][0]["train_samples"] == 16
