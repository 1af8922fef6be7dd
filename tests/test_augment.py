"""Few-shot augmentation (llmrec.samples.augment) against hand-worked samples."""

import pytest

from llmrec.data.core import Catalog
from llmrec.samples import AUGMENTATIONS, Sample, augment_samples, parse_augmentations
from llmrec.samples.tallrec import template_variables

S = Sample("u1", ["a", "b", "c", "d"], [5.0, 2.0, 3.0, 4.0], "t", 1.0, 0)


def test_rotate_hand_worked():
    out = augment_samples([S], "rotate", copies=4, seed=0)
    assert out[0] == S and len(out) == 5
    got = {s.target: s for s in out[1:]}
    assert set(got) == {"a", "b", "c", "d"}  # 4 copies of a 4-item history: every position once
    b = got["b"]  # b (rating 2) becomes the question, t (rating 1) the newest history item
    assert b.history == ["a", "c", "d", "t"] and b.history_ratings == [5.0, 3.0, 4.0, 1.0]
    assert b.target_rating == 2.0 and b.label == 0
    assert got["a"].label == 1 and got["d"].label == 1 and got["c"].label == 0  # 3 is not liked (rating > 3)
    assert all(s.user_id == "u1" for s in out)


def test_permute_keeps_item_rating_pairs_and_label():
    out = augment_samples([S], "permute", copies=5, seed=1)
    for s in out[1:]:
        assert sorted(zip(s.history, s.history_ratings)) == sorted(zip(S.history, S.history_ratings))
        assert (s.target, s.target_rating, s.label) == ("t", 1.0, 0)
    assert any(s.history != S.history for s in out[1:])


def test_drop_removes_one_to_three_keeps_order():
    out = augment_samples([S], "drop", copies=20, seed=2)
    for s in out[1:]:
        assert 1 <= len(S.history) - len(s.history) <= 3
        assert [S.history.index(i) for i in s.history] == sorted(S.history.index(i) for i in s.history)
        assert dict(zip(s.history, s.history_ratings)).items() <= dict(zip(S.history, S.history_ratings)).items()
        assert s.label == S.label


def test_mirror_flips_every_like_and_the_label():
    (m,) = augment_samples([S], "mirror", copies=3, seed=0)[1:]  # deterministic: one copy
    assert m.history_ratings == [1.0, 4.0, 4.0, 2.0]  # 6 - r, and 3 (not liked) -> 4 (liked)
    assert (m.target_rating, m.label) == (5.0, 1)
    assert [r > 3 for r in m.history_ratings] == [not (r > 3) for r in S.history_ratings]


def test_mirror_swaps_liked_and_disliked_lists():
    cat = Catalog.from_records([{"item_id": i, "title": f"Movie {i.upper()} (1990)", "year": 1990, "genres": []}
                                for i in "abcdt"])
    (m,) = augment_samples([S], "mirror")[1:]
    v, w = template_variables(S, cat), template_variables(m, cat)
    assert v["liked"] == ["Movie A (1990)", "Movie D (1990)"]
    assert (w["liked"], w["disliked"], w["label"]) == (v["disliked"], v["liked"], 1 - v["label"])


def test_combined_count_deterministic_and_no_input_mutation():
    before = [Sample(**S.to_dict()), Sample("u2", ["x"], [4.0], "y", 5.0, 1)]
    a = augment_samples(before, "rotate,permute,drop,mirror", copies=2, seed=7)
    b = augment_samples(before, ["rotate", "permute", "drop", "mirror"], copies=2, seed=7)
    assert a == b and a != augment_samples(before, "rotate,permute,drop,mirror", copies=2, seed=8)
    # u1: 2 rotate + 2 permute + 2 drop + 1 mirror; u2 (1 item): 2 rotate + 2 permute + 0 drop + 1 mirror
    assert len(a) == 2 + 7 + 5
    assert before[0] == S and a[:2] == before


def test_parse_and_errors():
    assert parse_augmentations("rotate, permute") == ("rotate", "permute")
    assert parse_augmentations("") == () == parse_augmentations(None) == parse_augmentations("none")
    assert set(AUGMENTATIONS) == {"rotate", "permute", "drop", "mirror"}
    with pytest.raises(ValueError, match="'shuffle'"):
        parse_augmentations("rotate,shuffle")
    with pytest.raises(ValueError, match="twice"):
        parse_augmentations("drop,drop")
    with pytest.raises(ValueError, match="augment_copies=0"):
        augment_samples([S], "rotate", copies=0)
    assert augment_samples([S], "", copies=1) == [S]
