"""Readers: GroupLens raw, RecBole atomic and MovieLens CSV folders read into one form; error messages."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from llmrec.data import (
    GROUPLENS_GENRES,
    Catalog,
    Interactions,
    detect_format,
    load_dataset,
    read_alpaca_json,
    read_grouplens,
    read_movielens_csv,
    read_recbole,
    year_from_title,
)

# ------------------------------------------------------------------------------------------ toy data
# (user, item, rating, timestamp) in file order; user 2 appears first, ties on purpose.
RATINGS = [
    ("2", "3", 4, 880000100),
    ("1", "1", 5, 880000300),
    ("1", "2", 3, 880000200),
    ("2", "1", 1, 880000100),
    ("3", "4", 2, 880000500),
    ("1", "5", 4, 880000200),
]
# (id, MovieLens title, release date, genre names)
ITEMS = [
    ("1", "Toy Story (1995)", "01-Jan-1995", ["Animation", "Children's", "Comedy"]),
    ("2", "Misérables, Les (1995)", "01-Jan-1995", ["Drama", "Musical"]),
    ("3", "Return of the Pink Panther, The (1974)", "01-Jan-1974", ["Comedy"]),
    ("4", "unknown", "", ["unknown"]),
    ("5", "Land Before Time III: The Time of the Great Giving (1995) (V)", "01-Jan-1995",
     ["Animation", "Children's"]),
]
USERS = [("1", "24", "M", "technician", "85711"), ("2", "53", "F", "other", "94043"),
         ("3", "23", "M", "writer", "32067")]


def write_raw(folder: Path, *, with_genre_file: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS))
    lines = []
    for item_id, title, date, genres in ITEMS:
        flags = ["1" if g in genres else "0" for g in GROUPLENS_GENRES]
        lines.append("|".join([item_id, title, date, "", "http://us.imdb.com/x"] + flags))
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("ISO-8859-1"))
    if with_genre_file:
        (folder / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(GROUPLENS_GENRES)) + "\n")
    (folder / "u.user").write_text("".join("|".join(u) + "\n" for u in USERS))
    return folder


def write_recbole(folder: Path, name: str = "toy", *, drop_optional: bool = False) -> Path:
    """The same toy data as RecBole writes it (columns deliberately reordered: found by name)."""
    folder.mkdir(parents=True, exist_ok=True)
    inter = ["timestamp:float\tuser_id:token\trating:float\titem_id:token"]
    inter += [f"{t}\t{u}\t{r}\t{i}" for u, i, r, t in RATINGS]
    (folder / f"{name}.inter").write_text("\n".join(inter) + "\n", encoding="utf-8")
    if drop_optional:
        item = ["item_id:token\tmovie_title:token_seq"]
        item += [f"{i}\t{t}" for i, t, _, _ in ITEMS]
    else:
        item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
        split = {  # RecBole cut the last "(...)" off the title; the dateless item became "unkonwn" (sic)
            "1": ("Toy Story", "1995"), "2": ("Misérables, Les", "1995"),
            "3": ("Return of the Pink Panther, The", "1974"), "4": ("unkonwn", "unkonwn"),
            "5": ("Land Before Time III: The Time of the Great Giving (1995)", "V"),
        }
        item += [f"{i}\t{split[i][0]}\t{split[i][1]}\t{' '.join(g)}" for i, _, _, g in ITEMS]
    (folder / f"{name}.item").write_text("\n".join(item) + "\n", encoding="utf-8")
    if not drop_optional:
        user = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
        user += ["\t".join(u) for u in USERS]
        (folder / f"{name}.user").write_text("\n".join(user) + "\n", encoding="utf-8")
    return folder


def write_csv(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["userId,movieId,rating,timestamp"] + [f"{u},{i},{r}.0,{t}" for u, i, r, t in RATINGS]
    (folder / "ratings.csv").write_text("\n".join(rows) + "\n")
    movies = ["movieId,title,genres"]
    for i, t, _, g in ITEMS:
        movies.append(f'{i},"{t}",{"|".join(g) if g != ["unknown"] else "(no genres listed)"}')
    (folder / "movies.csv").write_text("\n".join(movies) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def raw(tmp_path):
    return write_raw(tmp_path / "raw")


@pytest.fixture
def recbole(tmp_path):
    return write_recbole(tmp_path / "recbole")


# ------------------------------------------------------------------------------------------- readers
def test_grouplens_reader(raw):
    d = read_grouplens(raw)
    assert d.format == "grouplens"
    f = d.interactions.frame
    assert list(f.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert list(zip(f.user_id, f.item_id, f.rating, f.timestamp)) == [
        (u, i, float(r), t) for u, i, r, t in RATINGS]
    assert f.rating.dtype == "float64" and f.timestamp.dtype == "int64"
    assert d.interactions.users == ["2", "1", "3"]
    c = d.catalog
    assert c.title("2") == "Misérables, Les (1995)"  # ISO-8859-1 decoded
    assert c.title("1") == "Toy Story (1995)" and c.year("1") == 1995
    assert c.genres("1") == ["Animation", "Children's", "Comedy"]
    assert c.title("4") == "unknown" and c.year("4") is None
    assert c.year("5") == 1995
    assert "3" in c and "99" not in c
    assert list(d.users.user_id) == ["1", "2", "3"] and list(d.users.age) == [24, 53, 23]


def test_grouplens_without_genre_file_uses_standard_names(tmp_path):
    a = read_grouplens(write_raw(tmp_path / "a", with_genre_file=False))
    b = read_grouplens(write_raw(tmp_path / "b"))
    assert a.catalog.equals(b.catalog)


def test_recbole_equals_raw(raw, recbole):
    a, b = read_grouplens(raw), read_recbole(recbole)
    assert b.format == "recbole"
    assert a.interactions.equals(b.interactions)
    assert a.catalog.equals(b.catalog), (a.catalog.frame, b.catalog.frame)
    pd.testing.assert_frame_equal(a.users, b.users)


def test_recbole_missing_optional_columns(tmp_path):
    d = read_recbole(write_recbole(tmp_path / "r", drop_optional=True))
    assert d.users is None
    assert d.catalog.title("1") == "Toy Story (1995)" and d.catalog.year("1") == 1995
    assert d.catalog.genres("1") == []


def test_movielens_csv_reader(tmp_path, raw):
    d = read_movielens_csv(write_csv(tmp_path / "csv"))
    assert d.format == "movielens-csv" and d.users is None
    assert d.interactions.equals(read_grouplens(raw).interactions)
    assert d.catalog.title("3") == "Return of the Pink Panther, The (1974)"
    assert d.catalog.genres("4") == [] and d.catalog.genres("2") == ["Drama", "Musical"]


def test_load_dataset_detects_format(tmp_path, raw, recbole):
    csvdir = write_csv(tmp_path / "csv")
    assert detect_format(raw) == "grouplens" and load_dataset(raw).format == "grouplens"
    assert detect_format(recbole) == "recbole" and load_dataset(recbole).format == "recbole"
    assert detect_format(csvdir) == "movielens-csv" and load_dataset(csvdir).format == "movielens-csv"
    assert load_dataset(recbole / "toy.inter").format == "recbole"


def test_year_from_title():
    assert year_from_title("Seventh Seal, The (Sjunde inseglet, Det) (1957)") == 1957
    assert year_from_title("Land Before Time III: The Time of the Great Giving (1995) (V)") == 1995
    assert year_from_title("unknown") is None


def test_common_form_validation():
    with pytest.raises(ValueError, match="missing column"):
        Interactions(pd.DataFrame({"user_id": ["1"], "item_id": ["1"]}))
    with pytest.raises(ValueError, match="duplicate item_id '1'"):
        Catalog.from_records([{"item_id": "1", "title": "A", "year": None, "genres": []}] * 2)
    c = Catalog.from_records([{"item_id": "1", "title": "A (2000)", "year": 2000, "genres": ["Drama"]}])
    with pytest.raises(KeyError, match="'7'"):
        c.title("7")


# -------------------------------------------------------------------------------------------- errors
def test_error_missing_folder_and_files(tmp_path, raw):
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        load_dataset(tmp_path / "nope")
    (raw / "u.item").unlink()
    with pytest.raises(FileNotFoundError, match=r"u\.item: required file not found"):
        read_grouplens(raw)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="unknown data format"):
        load_dataset(empty)


def test_error_non_numeric_rating_names_file_line_field_value(raw, recbole):
    lines = (raw / "u.data").read_text().splitlines()
    lines[2] = "1\t2\tgood\t880000200"
    (raw / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as e:
        read_grouplens(raw)
    msg = str(e.value)
    assert "u.data" in msg and "line 3" in msg and "'rating'" in msg and "'good'" in msg and "\n" not in msg

    lines = (recbole / "toy.inter").read_text().splitlines()
    lines[1] = lines[1].replace("\t4\t", "\tfour\t")
    (recbole / "toy.inter").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"toy\.inter: line 2: field 'rating' has non-numeric value 'four'"):
        read_recbole(recbole)


@pytest.mark.parametrize("value", ["0", "6", "3.5", "-1"])
def test_error_grouplens_rating_off_scale(raw, value):
    lines = (raw / "u.data").read_text().splitlines()
    lines[3] = f"2\t1\t{value}\t880000100"
    (raw / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"u\.data: line 4: field 'rating' has value '{value}'; "
                                         rf"expected a rating 1\.\.5 in whole stars"):
        read_grouplens(raw)


@pytest.mark.parametrize("value", ["0", "0.0", "5.5", "3.7", "-0.5"])
def test_error_movielens_csv_rating_off_scale(tmp_path, value):
    folder = write_csv(tmp_path / "csv")
    lines = (folder / "ratings.csv").read_text().splitlines()
    lines[2] = f"1,1,{value},880000300"
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"ratings\.csv: line 3: field 'rating' has value '{value}'; "
                                         rf"expected a rating 0\.5\.\.5 in steps of 0\.5"):
        read_movielens_csv(folder)


def test_movielens_csv_half_stars_accepted(tmp_path):
    folder = write_csv(tmp_path / "csv")
    lines = (folder / "ratings.csv").read_text().splitlines()
    lines[1], lines[2] = "2,3,0.5,880000100", "1,1,4.5,880000300"
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    ratings = read_movielens_csv(folder).interactions.frame["rating"].tolist()
    assert 0.5 in ratings and 4.5 in ratings


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_error_recbole_rating_non_finite(recbole, value):
    p = recbole / "toy.inter"
    lines = p.read_text().splitlines()
    lines[2] = lines[2].replace("\t5\t", f"\t{value}\t")
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"toy\.inter: line 3: field 'rating' has non-finite value '{value}'"):
        read_recbole(recbole)


def test_recbole_rating_scale_is_declared(recbole):
    """RecBole ratings are checked against a declared scale (default 0.5..5 stars: TALLRec's like rule assumes
    it, issue 18); ``rating_scale=None`` keeps any finite rating as it is."""
    p = recbole / "toy.inter"
    lines = p.read_text().splitlines()
    lines[2] = lines[2].replace("\t5\t", "\t10\t")
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"^toy\.inter: line 3: field 'rating' has value '10'; expected a rating "
                                         r"0\.5\.\.5 in steps of 0\.5$"):
        read_recbole(recbole)
    assert 10.0 in read_recbole(recbole, rating_scale=None).interactions.frame["rating"].tolist()


def test_error_recbole_headers(recbole):
    p = recbole / "toy.inter"
    body = p.read_text().splitlines()[1:]
    p.write_text("\n".join(["timestamp:float\tuser_id\trating:float\titem_id:token"] + body) + "\n")
    with pytest.raises(ValueError, match=r"toy\.inter: header column 'user_id' is not 'field:type'"):
        read_recbole(recbole)
    p.write_text("\n".join(["timestamp:float\tuser_id:tok\trating:float\titem_id:token"] + body) + "\n")
    with pytest.raises(ValueError, match=r"header field 'user_id' has unknown type 'tok'"):
        read_recbole(recbole)
    p.write_text("\n".join(["timestamp:float\tuser:token\trating:float\titem_id:token"] + body) + "\n")
    with pytest.raises(ValueError, match=r"toy\.inter: required field 'user_id' not in header"):
        read_recbole(recbole)


def test_error_recbole_ambiguous_and_short_rows(recbole):
    write_recbole(recbole, name="other")
    with pytest.raises(ValueError, match=r"exactly one \*\.inter file, found \['other', 'toy'\]"):
        read_recbole(recbole)
    assert read_recbole(recbole, name="other").format == "recbole"
    p = recbole / "toy.inter"
    lines = p.read_text().splitlines()
    lines[3] = "880000200\t1"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"toy\.inter: line 4: expected 4 fields, found 2"):
        read_recbole(recbole, name="toy")


def test_error_grouplens_field_counts(raw):
    with open(raw / "u.data", "a") as f:
        f.write("1\t2\t3\t880000000\textra\n")
    with pytest.raises(ValueError, match=r"u\.data: line 7: expected 4 fields, found 5"):
        read_grouplens(raw)


def test_error_grouplens_item_flags(raw):
    text = (raw / "u.item").read_bytes().decode("ISO-8859-1").splitlines()
    text[0] = text[0][:-1] + "x"
    (raw / "u.item").write_bytes(("\n".join(text) + "\n").encode("ISO-8859-1"))
    with pytest.raises(ValueError, match=r"u\.item: line 1: genre flag 'Western' has value 'x'"):
        read_grouplens(raw)


def test_alpaca_reader_errors(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('[{"instruction": "i", "input": "x", "output": "Yes."}, {"instruction": "i", "output": "No."}]')
    with pytest.raises(ValueError, match=r"a\.json: record 1 is missing key 'input'"):
        read_alpaca_json(p)
    p.write_text('[{"instruction": "i", "input": "x", "output": "Maybe."}]')
    with pytest.raises(ValueError, match=r"record 0: output 'Maybe\.' is neither"):
        read_alpaca_json(p)
    p.write_text('[{"instruction": "i", "input": "x",')
    with pytest.raises(ValueError, match=r"a\.json: invalid JSON at line 1"):
        read_alpaca_json(p)
    with pytest.raises(FileNotFoundError):
        read_alpaca_json(tmp_path / "missing.json")


# ---------------------------------------------------------------------------------- real MovieLens
from tests.conftest import ml100k_path  # noqa: E402  (shared with test_samples/test_data)


@pytest.mark.integration
def test_real_ml100k_recbole():
    d = load_dataset(ml100k_path())
    assert d.format == "recbole"
    assert len(d.interactions) == 100_000 and len(d.catalog) == 1682 and len(d.users) == 943
    assert d.interactions.frame.iloc[0].tolist() == ["196", "242", 3.0, 881250949]
    c = d.catalog
    assert c.title("1") == "Toy Story (1995)"
    assert c.title("543") == "Misérables, Les (1995)"
    assert c.title("267") == "unknown" and c.year("267") is None
    assert c.title("1412") == "Land Before Time III: The Time of the Great Giving (1995) (V)"
    assert c.genres("2") == ["Action", "Adventure", "Thriller"]


def test_empty_rating_file_is_an_error(tmp_path):
    from llmrec.data import read_grouplens

    (tmp_path / "u.data").write_text("")
    (tmp_path / "u.item").write_bytes("1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
                                      .encode("latin-1"))
    with pytest.raises(ValueError, match="u.data: no ratings"):
        read_grouplens(tmp_path)
