"""Any catalogue (issue 19): the tabular reader, the general protocol builder, structured JSONL records and TALLRec
alpaca parsed back into samples. Every expected value below is worked out by hand from the small files written
here (not by the code under test)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmrec.data import ColumnMap, read_tabular, validate_alpaca_records
from llmrec.samples import Sample, template_variables
from llmrec.samples.augment import augment_samples
from llmrec.samples.protocol import ProtocolConfig, build_protocol, check_threshold, derive_threshold
from llmrec.samples.records import (parse_tallrec_alpaca, read_sample_file, read_samples_jsonl, sample_file_kind,
                                    write_samples_jsonl)

# u1 in time order: b1 8, b2 3, b3 10, b4 5; u2 in time order (its file order differs): b1 9, b2 6, b4 1
INTER = """reader,isbn,stars,when
u1,b1,8,100
u1,b2,3,200
u2,b2,6,150
u1,b3,10,300
u2,b1,9,50
u1,b4,5,400
u2,b4,1,250
"""
BOOKS = """isbn,title,author
b1,Dune,Frank Herbert
b2,Emma,Jane Austen
b3,Ulysses,James Joyce
b4,Beloved,Toni Morrison
b5,Unread,Nobody
"""
COLS = ColumnMap(user="reader", item="isbn", rating="stars", timestamp="when")


@pytest.fixture()
def books(tmp_path):
    (tmp_path / "inter.csv").write_text(INTER)
    (tmp_path / "books.csv").write_text(BOOKS)
    return tmp_path


def _read(books, **kw):
    return read_tabular(books / "inter.csv", books / "books.csv", columns=COLS, rating_scale="1-10", item_noun="book",
                        **kw)


def test_tabular_reader_and_catalog_columns(books):
    rec = _read(books)
    f = rec.interactions.frame
    assert f["user_id"].tolist() == ["u1", "u1", "u2", "u1", "u2", "u1", "u2"]
    assert f["rating"].tolist() == [8.0, 3.0, 6.0, 10.0, 9.0, 5.0, 1.0] and f["timestamp"].tolist()[:2] == [100, 200]
    assert rec.rating_scale == (1.0, 10.0, None) and rec.format == "tabular"
    assert rec.catalog.extra_columns == ("author",) and len(rec.catalog) == 5
    assert rec.catalog.item_noun == "book"
    assert rec.catalog.fields("b1") == {"title": "Dune", "year": "", "genres": "", "author": "Frank Herbert"}
    assert rec.catalog.item_text("{title} by {author}").title("b4") == "Beloved by Toni Morrison"
    assert rec.catalog.item_text("{title}") is rec.catalog
    # JSONL and TSV read the same
    rows = [dict(zip(INTER.splitlines()[0].split(","), line.split(","))) for line in INTER.splitlines()[1:]]
    (books / "inter.jsonl").write_text("\n".join(json.dumps({**r, "stars": int(r["stars"])}) for r in rows))
    (books / "inter.tsv").write_text(INTER.replace(",", "\t"))
    for name in ("inter.jsonl", "inter.tsv"):
        other = read_tabular(books / name, books / "books.csv", columns=COLS, rating_scale="1-10")
        assert other.interactions.equals(rec.interactions), name


def test_labels_and_no_timestamp(books):
    (books / "l.csv").write_text("user_id,item_id,liked\na,b1,1\na,b2,no\nb,b1,true\n")
    rec = read_tabular(books / "l.csv", columns=ColumnMap(rating=None, label="liked", timestamp=None))
    assert rec.interactions.frame["rating"].tolist() == [1.0, 0.0, 1.0]
    assert rec.interactions.frame["timestamp"].tolist() == [0, 1, 2] and rec.rating_scale == (0.0, 1.0, 1.0)
    assert rec.catalog.title("b2") == "b2"  # no item file: the id is the text
    assert derive_threshold(rec.rating_scale)[0] == 0.5


def test_iso_timestamps(tmp_path):
    (tmp_path / "iso.csv").write_text("user_id,item_id,rating,timestamp\na,x,4,2024-01-31\na,y,2,2024-01-30T12:00:00\n")
    rec = read_tabular(tmp_path / "iso.csv", rating_scale="1-5")
    # 2024-01-31 00:00 UTC = 19,753 days after 1970-01-01 = 1,706,659,200 s; the other 12 hours earlier
    assert rec.interactions.frame["timestamp"].tolist() == [1_706_659_200, 1_706_659_200 - 43_200]


def test_protocol_by_user_derived_threshold(books):
    res = build_protocol(_read(books), ProtocolConfig(history_len=2, item_text="{title} by {author}"))
    assert res.rule == "liked = rating > 5.5 (the midpoint of the rating scale [1, 10])"
    assert res.config.like_threshold == 5.5 and res.config.item_noun == "book"
    # windows in user order: u1 [b1 b2]->b3 (10: liked), u1 [b2 b3]->b4 (5: not), u2 [b1 b2]->b4 (1: not);
    # 3 windows: train [:int(2.4)] = 2, valid [2:int(2.7)] = 0, test 1
    tr, va, te = res.splits.train, res.splits.valid, res.splits.test
    assert [(s.user_id, s.history, s.target, s.label) for s in tr] == [
        ("u1", ["b1", "b2"], "b3", 1), ("u1", ["b2", "b3"], "b4", 0)]
    assert va == [] and [(s.user_id, s.history, s.history_ratings, s.target) for s in te] == [
        ("u2", ["b1", "b2"], [9.0, 6.0], "b4")]
    assert all(s.like_threshold == 5.5 and s.rating_scale == (1.0, 10.0) for s in tr + te)
    v = template_variables(tr[0], res.catalog)
    assert v["liked"] == ["Dune by Frank Herbert"] and v["disliked"] == ["Emma by Jane Austen"]
    assert v["target"] == "Ulysses by James Joyce" and v["item_noun"] == "book"
    rec = res.record()
    assert rec["like_threshold"] == 5.5 and rec["item_text"] == "{title} by {author}" and len(rec["data_sha256"]) == 64


def test_protocol_by_time_given_threshold_newest_first(books):
    cfg = ProtocolConfig(history_len=2, split="time", like_threshold=7, history_order="newest-first", n_keep=None,
                         split_fractions=(0.6, 0.6))
    res = build_protocol(_read(books), cfg)
    assert res.rule == "liked = rating > 7 (given; rating scale [1, 10])"
    # target times: u1->b3 300, u1->b4 400, u2->b4 250 -> order u2, u1(b3), u1(b4); train [:int(1.8)] = 1
    assert [(s.user_id, s.target, s.label) for s in res.splits.train] == [("u2", "b4", 0)]
    assert [(s.user_id, s.target, s.label, s.history) for s in res.splits.test] == [
        ("u1", "b3", 1, ["b2", "b1"]), ("u1", "b4", 0, ["b3", "b2"])]


@pytest.mark.parametrize("threshold, message", [
    (10, "like threshold 10 is outside the rating scale [1, 10]: no rating would be liked"),
    (0.5, "like threshold 0.5 is outside the rating scale [1, 10]: every rating would be liked"),
])
def test_threshold_outside_the_scale_refused(books, threshold, message):
    with pytest.raises(ValueError) as e:
        build_protocol(_read(books), ProtocolConfig(history_len=2, like_threshold=threshold))
    assert str(e.value).startswith(message)
    check_threshold(1, (1, 10))  # the low end is allowed (rating > 1 liked)


def test_item_text_names_a_missing_column(books):
    with pytest.raises(ValueError, match=r"item text '\{title\} by \{writer\}': no column 'writer' in the item "
                                         r"catalogue \(columns: title, year, genres, author\)"):
        build_protocol(_read(books), ProtocolConfig(history_len=2, item_text="{title} by {writer}"))
    with pytest.raises(ValueError, match="must be a plain column name"):
        build_protocol(_read(books), ProtocolConfig(history_len=2, item_text="{title.__class__}"))


@pytest.mark.parametrize("inter, books_text, message", [
    (INTER.replace("reader", "usr"), BOOKS,
     "inter.csv: no column 'reader' (the user column); the file has columns: usr, isbn, stars, when"),
    (INTER.replace("u1,b2,3,200", "u1,b2,three,200"), BOOKS, "inter.csv: line 3: field 'stars' has non-numeric value 'three'"),
    (INTER.replace("u2,b4,1,250", "u2,b4,11,250"), BOOKS,
     "inter.csv: line 8: field 'stars' has value '11'; expected a rating 1..10"),
    (INTER.replace("u1,b3,10,300", "u1,b9,10,300"), BOOKS,
     "inter.csv: line 5: field 'isbn': item 'b9' is not in books.csv (1 interaction(s) name items it lacks)"),
    (INTER, BOOKS.replace("isbn,title", "id,title"),
     "books.csv: no column 'isbn' (the item id column); the file has columns: id, title, author"),
    (INTER.replace("u1,b1,8,100", "u1,b1,8,yesterday"), BOOKS,
     "inter.csv: line 2: field 'when' has value 'yesterday'; expected integer seconds or an ISO date/time"),
])
def test_bad_files_one_line_errors(tmp_path, inter, books_text, message):
    (tmp_path / "inter.csv").write_text(inter)
    (tmp_path / "books.csv").write_text(books_text)
    with pytest.raises(ValueError) as e:
        read_tabular(tmp_path / "inter.csv", tmp_path / "books.csv", columns=COLS, rating_scale="1-10")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------ records
BOOK_INSTRUCTION = ("Given the user's preference and unpreference, identify whether the user will like the target "
                    "book by answering \"Yes.\" or \"No.\".")
TALLREC_BOOKS = [  # TALLRec's book wording: quoted title, "written by" author
    {"instruction": BOOK_INSTRUCTION,
     "input": 'User Preference: "Dune" written by Frank Herbert, "Emma, A Novel" written by Jane Austen\n'
              'User Unpreference: "Ulysses" written by James Joyce\n'
              'Whether the user will like the target book "Beloved" written by Toni Morrison?',
     "output": "Yes.", "user": "u1"},
    {"instruction": BOOK_INSTRUCTION,
     "input": 'User Preference: \nUser Unpreference: "Ulysses" written by James Joyce, "Emma, A Novel" written by '
              'Jane Austen\nWhether the user will like the target book "Dune" written by Frank Herbert?',
     "output": "No.", "user": "u2"},
]


def test_tallrec_book_alpaca_round_trip(tmp_path):
    records = validate_alpaca_records(TALLREC_BOOKS, "books.json")
    ss = parse_tallrec_alpaca(records, "books.json")
    assert ss.unstructured is None and ss.item_noun == "book" and ss.has_users
    s0, s1 = ss.samples
    assert s0.history == ['"Dune" written by Frank Herbert', '"Emma, A Novel" written by Jane Austen',
                          '"Ulysses" written by James Joyce']
    assert s0.history_ratings == [1.0, 1.0, 0.0] and s0.target == '"Beloved" written by Toni Morrison'
    assert (s0.label, s1.label, s1.history_ratings, s0.user_id) == (1, 0, [0.0, 0.0], "u1")
    assert [{k: r[k] for k in ("instruction", "input", "output", "user")} for r in ss.alpaca()] == TALLREC_BOOKS
    # structured JSONL and back: the same samples
    write_samples_jsonl(ss.samples, ss.catalog, tmp_path / "b.jsonl")
    back = read_samples_jsonl(tmp_path / "b.jsonl")
    assert back.samples == ss.samples and back.item_noun == "book"
    # like-rate of the parsed history, and augmentation now works on them (mirror flips every like)
    from llmrec.recipe import like_rate_scores

    assert like_rate_scores(ss.samples).tolist() == [2 / 3, 0.0]
    m = augment_samples(ss.samples, "mirror")[2]
    assert m.history_ratings == [0.0, 0.0, 1.0] and m.label == 0
    (tmp_path / "b.json").write_text(json.dumps(TALLREC_BOOKS))
    assert sample_file_kind(tmp_path / "b.json") == "alpaca" and sample_file_kind(tmp_path / "b.jsonl") == "jsonl"
    assert read_sample_file(tmp_path / "b.json").samples == ss.samples


def test_movie_wording_and_unstructured_alpaca():
    movie = [{"instruction": "I", "input": 'User Preference: "Heat (1995)"\nUser Unpreference: \nWhether the user will '
                                           'like the target movie "Up (2009)"?', "output": "No."}]
    ss = parse_tallrec_alpaca(validate_alpaca_records(movie), "m.json")
    assert ss.item_noun == "movie" and ss.catalog.title('"Heat (1995)"') == "Heat (1995)"
    other = [{"instruction": "I", "input": "Liked: Heat; Disliked: -", "output": "No."}]
    ss = parse_tallrec_alpaca(validate_alpaca_records(other), "o.json")
    assert ss.samples is None and "record 0's input is not in TALLRec's format" in ss.unstructured
    with pytest.raises(ValueError, match=r"o.json: --augment mirror needs structured samples .*record 0's input"):
        ss.require_structured("--augment mirror")


def test_record_errors_name_file_line_and_field(tmp_path):
    f = tmp_path / "s.jsonl"
    cases = [
        ({"history": [], "target": "b1", "label": 1}, "s.jsonl: line 1: field 'history' is empty"),
        ({"history": [{"item": "b1", "rating": "x"}], "target": "b2", "label": 1, "like_threshold": 5},
         "s.jsonl: line 1: field 'history[0]' 'rating' has non-numeric value 'x'"),
        ({"history": [{"item": "b1", "rating": 8}], "target": "b2", "label": 1},
         "s.jsonl: line 1: field 'like_threshold' is missing"),
        ({"history": [{"item": "b1", "label": 1, "text": "Dune"}], "target": "b2", "label": 1},
         "s.jsonl: line 1: field 'item': unknown item 'b2'"),
        ({"history": [{"item": "b1", "label": 1}], "target": "b2"}, "s.jsonl: line 1: missing field 'label'"),
        ({"history": [{"item": "b1", "rating": 8, "text": "D"}], "target": "b2", "target_text": "E", "label": 0,
          "like_threshold": 5, "target_rating": 9},
         "s.jsonl: line 1: field 'label' 0 disagrees with target_rating 9 under the like rule rating > 5"),
    ]
    for rec, message in cases:
        f.write_text(json.dumps(rec) + "\n")
        with pytest.raises(ValueError) as e:
            read_samples_jsonl(f)
        assert str(e.value).startswith(message), (str(e.value), message)
    empty = [{"instruction": "I", "input": "User Preference: \nUser Unpreference: \nWhether the user will like the "
                                           "target book \"Dune\"?", "output": "Yes."}]
    with pytest.raises(ValueError, match=r"^e.json: record 0: field 'input': empty history"):
        parse_tallrec_alpaca(validate_alpaca_records(empty), "e.json")


def test_like_rate_and_mirror_use_the_samples_threshold():
    from llmrec.recipe import like_rate_scores

    s = Sample("u", ["a", "b", "c", "d"], [8.0, 6.0, 5.0, 2.0], "t", 9.0, 1, 5.5, (1.0, 10.0))
    assert like_rate_scores([s]).tolist() == [0.5]  # 8 and 6 > 5.5 (a hard-coded > 3 would give 1.0)
    m = augment_samples([s], "mirror")[1]
    assert m.history_ratings == [3.0, 5.0, 6.0, 9.0] and m.target_rating == 2.0 and m.label == 0  # 11 - r
    movie = Sample("u", ["a", "b"], [3.0, 5.0], "t", 4.0, 1)  # TALLRec-movie default: 6 - r, a 3 pushed to 4
    assert augment_samples([movie], "mirror")[1].history_ratings == [4.0, 1.0]
    with pytest.raises(ValueError, match="sample 0 \\(user 'u'\\): empty history"):
        like_rate_scores([Sample("u", [], [], "t", 4.0, 1)])


@pytest.mark.integration
def test_tallrec_movie_preset_still_regenerates_the_published_splits(tmp_path):
    """The named preset through the general builder, a custom config with the same values, and `llmrec data` with
    the built-in template (now reading {{ item_noun }}) all give TALLRec's published records."""
    from tests.conftest import benchmark_dir, ml100k_path

    from llmrec.cli import main
    from llmrec.data import load_dataset
    from llmrec.samples import to_alpaca
    from llmrec.samples.protocol import TALLREC_MOVIE

    bdir = benchmark_dir()
    if bdir is None:
        pytest.skip("TALLRec's published splits are not available")
    rec = load_dataset(ml100k_path())
    res = build_protocol(rec, TALLREC_MOVIE)
    same = build_protocol(rec, ProtocolConfig(like_threshold=3, item_noun="movie"))
    assert res.rule.startswith("liked = rating > 3")
    for split in ("valid", "test"):
        published = json.loads((bdir / f"{split}.json").read_text())
        assert to_alpaca(getattr(res.splits, split), res.catalog) == published
        assert to_alpaca(getattr(same.splits, split), same.catalog) == published
    main(["data", "--data", str(ml100k_path()), "--split", "test", "--out", str(tmp_path / "t.json")])
    assert json.loads((tmp_path / "t.json").read_text()) == json.loads((bdir / "test.json").read_text())
