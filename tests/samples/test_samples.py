"""TALLRec protocol (windows, split, template variables, exports), k-shot draws, and the exact regeneration
of TALLRec's published movie valid/test splits (Bao et al., RecSys 2023)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec.data import Catalog, Interactions, load_dataset, read_alpaca_json
from llmrec.samples import (
    Sample,
    build_windows,
    k_shot_indices,
    sample_k_shot,
    samples_from_hf_dataset,
    tallrec_splits,
    template_variables,
    to_alpaca,
    to_hf_dataset,
    write_alpaca,
)

REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------ toy log
# file order; user order of first appearance: B, A, C.  Ties (B: t=10) must keep file order.
TOY = [
    ("B", "b1", 5, 10),
    ("A", "a1", 4, 30),
    ("A", "a2", 2, 10),
    ("B", "b2", 3, 10),
    ("A", "a3", 5, 20),
    ("C", "c1", 1, 5),
    ("B", "b3", 4, 5),
    ("A", "a4", 3, 40),
    ("C", "c2", 4, 6),
    ("B", "b4", 1, 20),
]


def interactions(rows) -> Interactions:
    return Interactions(pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]))


def toy_catalog() -> Catalog:
    ids = sorted({i for _, i, _, _ in TOY})
    return Catalog.from_records([
        {"item_id": i, "title": f"Movie {i.upper()} ({1990 + k})", "year": 1990 + k, "genres": ["Drama"] * (k % 2)}
        for k, i in enumerate(ids)
    ])


def test_windows_hand_worked():
    # B by time (stable): b3(5,4) b1(10,5) b2(10,3) b4(20,1);  A: a2(10,2) a3(20,5) a1(30,4) a4(40,3);
    # C has 2 ratings -> no window of history 2.
    got = build_windows(interactions(TOY), history_len=2)
    assert got == [
        Sample("B", ["b3", "b1"], [4.0, 5.0], "b2", 3.0, 0),
        Sample("B", ["b1", "b2"], [5.0, 3.0], "b4", 1.0, 0),
        Sample("A", ["a2", "a3"], [2.0, 5.0], "a1", 4.0, 1),
        Sample("A", ["a3", "a1"], [5.0, 4.0], "a4", 3.0, 0),  # 3 is not > 3
    ]
    assert build_windows(interactions(TOY), history_len=3) == [
        Sample("B", ["b3", "b1", "b2"], [4.0, 5.0, 3.0], "b4", 1.0, 0),
        Sample("A", ["a2", "a3", "a1"], [2.0, 5.0, 4.0], "a4", 3.0, 0),
    ]
    assert build_windows(interactions(TOY), history_len=4) == []


@pytest.mark.parametrize("last", [0, 1, 2, 3, 4, 5, 100])
def test_windows_last_equals_slice(last):
    full = build_windows(interactions(TOY), history_len=2)
    assert build_windows(interactions(TOY), history_len=2, last=last) == (full[-last:] if last else [])


def test_windows_last_on_random_log():
    rng = np.random.default_rng(0)
    rows = [(str(rng.integers(12)), str(rng.integers(50)), float(rng.integers(1, 6)), int(rng.integers(0, 30)))
            for _ in range(400)]
    full = build_windows(interactions(rows), history_len=5)
    for last in (1, 7, 50, 123, len(full), len(full) + 5):
        assert build_windows(interactions(rows), history_len=5, last=last) == full[-last:]


def test_splits_fractions_and_order():
    rows = [(f"u{u}", f"i{k}", 1 + (k % 5), 1000 - k) for u in range(5) for k in range(13)]  # 3 windows/user
    sp = tallrec_splits(interactions(rows), history_len=10, n_keep=10)
    assert (len(sp.train), len(sp.valid), len(sp.test)) == (8, 1, 1)
    full = build_windows(interactions(rows), history_len=10)
    assert sp.train + sp.valid + sp.test == full[-10:]
    # fewer windows than n_keep: all kept, same fractions
    sp = tallrec_splits(interactions(rows), history_len=10, n_keep=10_000)
    assert (len(sp.train), len(sp.valid), len(sp.test)) == (12, 1, 2)
    with pytest.raises(ValueError, match="n_keep"):
        tallrec_splits(interactions(rows), n_keep=0)


def test_template_variables():
    s = build_windows(interactions(TOY), history_len=3)[0]  # B: b3(4) b1(5) b2(3) -> b4(1)
    v = template_variables(s, toy_catalog())
    assert v["user_id"] == "B"
    # catalog: sorted ids a1..a4, b1..b4, c1, c2 -> years 1990..1999, genres ["Drama"] for odd positions
    assert v["liked"] == ["Movie B3 (1996)", "Movie B1 (1994)"]
    assert v["disliked"] == ["Movie B2 (1995)"]
    assert [h["title"] for h in v["history"]] == ["Movie B3 (1996)", "Movie B1 (1994)", "Movie B2 (1995)"]
    assert v["history"][0] == {"item_id": "b3", "title": "Movie B3 (1996)", "year": 1996, "genres": [],
                               "rating": 4.0, "liked": True}
    assert [h["liked"] for h in v["history"]] == [True, True, False]
    assert (v["target"], v["target_id"], v["target_year"], v["target_genres"]) == (
        "Movie B4 (1997)", "b4", 1997, ["Drama"])
    assert v["label"] == 0
    with pytest.raises(KeyError, match="'zz'"):
        template_variables(Sample("B", ["zz"], [4.0], "b4", 1.0, 0), toy_catalog())


def test_exports_roundtrip(tmp_path):
    samples = build_windows(interactions(TOY), history_len=2)
    cat = toy_catalog()
    ds = to_hf_dataset(samples, cat)
    assert ds.column_names == ["user_id", "history", "history_ratings", "target", "target_rating", "label",
                               "history_titles", "target_title"]
    assert ds["label"] == [0, 0, 1, 0] and ds[2]["history_titles"] == ["Movie A2 (1991)", "Movie A3 (1992)"]
    assert samples_from_hf_dataset(ds) == samples
    assert to_hf_dataset(samples).column_names[-1] == "label"

    recs = read_alpaca_json(write_alpaca(samples, cat, tmp_path / "toy.json"))
    assert [r["label"] for r in recs] == [0, 0, 1, 0]
    assert recs[2]["input"] == ('User Preference: "Movie A3 (1992)"\nUser Unpreference: "Movie A2 (1991)"\n'
                                'Whether the user will like the target movie "Movie A1 (1990)"?')
    assert recs[2]["output"] == "Yes."
    custom = to_alpaca(samples, cat, render=lambda v: ("I", ";".join(v["liked"])), answers=("y", "n"))
    assert custom[2] == {"instruction": "I", "input": "Movie A3 (1992)", "output": "y"}


# ------------------------------------------------------------------------------------------- k-shot
def test_k_shot_deterministic_and_distinct():
    pool = list(range(100))
    a = sample_k_shot(pool, 16, seed=3)
    assert a == sample_k_shot(pool, 16, seed=3)
    assert a != sample_k_shot(pool, 16, seed=4)
    assert len(set(a)) == 16 and set(a) <= set(pool)
    assert sample_k_shot(pool, 0, seed=3) == []
    assert sorted(sample_k_shot(pool, 100, seed=0)) == pool
    assert sample_k_shot(pool, 64, seed=3)[:16] == a  # a prefix: larger k extends smaller k


def test_k_shot_matches_tallrec_datasets_shuffle():
    """TALLRec: train.shuffle(seed=seed).select(range(k)) -- the same draw."""
    import datasets

    ds = datasets.Dataset.from_dict({"i": list(range(200))})
    for seed, k in ((0, 16), (42, 64), (2023, 200)):
        assert k_shot_indices(200, k, seed) == ds.shuffle(seed=seed).select(range(k))["i"]
    assert [r["i"] for r in sample_k_shot(ds, 5, 1)] == ds.shuffle(seed=1).select(range(5))["i"]


def test_k_shot_errors():
    with pytest.raises(ValueError, match="k=11 is larger than the 10"):
        sample_k_shot(list(range(10)), 11, seed=0)
    with pytest.raises(ValueError, match="k=-1"):
        sample_k_shot(list(range(10)), -1, seed=0)
    with pytest.raises(TypeError, match="k must be an int"):
        sample_k_shot(list(range(10)), 2.0, seed=0)


# ------------------------------------------------------------- TALLRec's published splits, exactly
BENCH_SHA256 = {
    "test.json": "474e02cde467c8c7001168a4a390a581217edcd8f4726c39aa88c9aa37c54d5e",
    "valid.json": "d4aa0c005868aef9b8a85583db946662a2be9c2e0e09f810fe3a7ad31d89274f",
}


def benchmark_dir() -> Path:
    """$LLMREC_BENCHMARKS/tallrec-movie (or $LLMREC_BENCHMARKS itself), else ../shared/benchmarks/tallrec-movie."""
    env = os.environ.get("LLMREC_BENCHMARKS")
    candidates = [Path(env) / "tallrec-movie", Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "benchmarks" / "tallrec-movie")
    for c in candidates:
        if (c / "valid.json").is_file() and (c / "test.json").is_file():
            return c
    pytest.skip(f"TALLRec movie benchmark not found (looked in {[str(c) for c in candidates]}; "
                f"set LLMREC_BENCHMARKS)")


from tests.conftest import ml100k_path  # noqa: E402  (shared with test_samples/test_data)


def reference_tallrec_record(v: dict) -> dict:
    """TALLRec's alpaca record from template variables, written out independently of llmrec's renderers
    (the reference for prompts/tallrec.jinja). An empty list leaves ``"User Unpreference: "`` + newline."""
    def quoted(titles):
        return ", ".join('"' + t + '"' for t in titles)

    return {
        "instruction": "Given the user's preference and unpreference, identify whether the user will like "
                       "the target movie by answering \"Yes.\" or \"No.\".",
        "input": "User Preference: " + quoted(v["liked"]) + "\n"
                 + "User Unpreference: " + quoted(v["disliked"]) + "\n"
                 + "Whether the user will like the target movie \"" + v["target"] + "\"?",
        "output": "Yes." if v["label"] == 1 else "No.",
    }


@pytest.fixture(scope="module")
def ml100k_splits():
    data = load_dataset(ml100k_path())
    return data, tallrec_splits(data.interactions)


@pytest.mark.integration
@pytest.mark.parametrize("split", ["valid", "test"])
def test_regenerates_tallrec_benchmark_exactly(split, ml100k_splits, tmp_path):
    bdir = benchmark_dir()
    path = bdir / f"{split}.json"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == BENCH_SHA256[path.name], f"{path} was modified"
    published = json.loads(path.read_text())
    data, sp = ml100k_splits
    assert (len(sp.train), len(sp.valid), len(sp.test)) == (8000, 1000, 1000)
    ours = getattr(sp, split)
    assert len(published) == len(ours) == 1000

    mismatches = []
    for k, (s, pub) in enumerate(zip(ours, published)):
        ref = reference_tallrec_record(template_variables(s, data.catalog))
        if ref != pub:
            mismatches.append(f"record {k} (user {s.user_id}, target {s.target}):\n  ours {ref}\n  pub  {pub}")
    assert not mismatches, f"{len(mismatches)}/1000 {split} records differ; first:\n" + "\n".join(mismatches[:3])
    assert sum(s.label for s in ours) == {"valid": 658, "test": 528}[split]

    # the library's own export is the same, byte for byte (TALLRec's json.dump(indent=4))
    assert to_alpaca(ours, data.catalog) == published
    out = write_alpaca(ours, data.catalog, tmp_path / path.name)
    assert out.read_bytes() == path.read_bytes()
    assert [r["label"] for r in read_alpaca_json(path)] == [s.label for s in ours]
