"""Few-shot augmentation (llmrec.samples.augment) against hand-worked samples."""

import numpy as np
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


def test_epoch_budget_keeps_the_unaugmented_step_count():
    from llmrec.recipe import epoch_budget

    assert epoch_budget([]) == 10                        # 10 epochs of k samples
    assert epoch_budget(["mirror"]) == 5                 # 2k samples: 5 epochs = the same 10k sample-steps
    assert epoch_budget(["rotate"], copies=2) == 3       # 3k samples: 10/3 = 3.33 -> 3
    assert epoch_budget(["permute", "drop", "mirror"]) == 3  # 4k samples: 2.5 rounds half up -> 3
    assert epoch_budget(["mirror"], epochs=1) == 1       # never below one epoch
    # with k given, at least 80 steps of batch 8: 16 shots + mirror = 32 prompts = 4 steps/epoch -> 20 epochs
    assert epoch_budget(["mirror"], shots=16) == 20
    assert epoch_budget(["mirror"], shots=64) == 5       # 128 prompts = 16 steps/epoch: 5 epochs = 80 steps
    assert epoch_budget(["mirror"], shots=256) == 5      # step floor already met
    assert epoch_budget([], shots=12, batch_size=5) == 27  # ceil(12/5) = 3 steps/epoch, ceil(80/3) = 27
    assert epoch_budget([], shots=16, min_steps=0) == 10
    with pytest.raises(ValueError, match="copies 0: must be >= 1"):
        epoch_budget(["mirror"], copies=0)
    with pytest.raises(ValueError, match="shots 0: must be >= 1"):
        epoch_budget(["mirror"], shots=0)


def test_like_rate_product_hand_worked():
    """logit(p) + logit((liked + 1) / (n + 2)), worked by hand for two samples."""
    from llmrec.recipe import like_rate_product

    a = Sample("u", ["i0", "i1", "i2", "i3"], [5.0, 1.0, 4.0, 2.0], "t", 5.0, 1)  # 2 of 4 liked: r = 3/6, logit 0
    b = Sample("u", ["i0", "i1", "i2", "i3"], [5.0, 5.0, 5.0, 1.0], "t", 5.0, 1)  # 3 of 4: r = 4/6, logit ln 2
    got = like_rate_product(np.array([0.8, 0.5]), [a, b])
    np.testing.assert_allclose(got, [np.log(4.0), np.log(2.0)], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"shape \(1,\); expected \(2,\)"):
        like_rate_product(np.array([0.5]), [a, b])
