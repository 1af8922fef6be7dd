"""The honest few-shot protocol of the collaborative model, checked on the real ML-100K TALLRec split: no
interaction of a user with a valid/test window and no rating value reaches SASRec."""

from __future__ import annotations

import numpy as np
import pytest

from llmrec.collab import data as cdata
from llmrec.retrieval.sasrec import SASRec, SASRecConfig

from ..conftest import ml100k_path


@pytest.fixture(scope="module")
def real():
    from llmrec.recipe import load_tallrec

    return load_tallrec(ml100k_path())


def test_excluded_users_are_exactly_the_valid_and_test_users(real):
    rec, splits = real
    ex = cdata.excluded_users(splits)
    assert ex == {s.user_id for s in splits.valid} | {s.user_id for s in splits.test}
    assert 0 < len(ex) < 100  # the last 2,000 windows come from a few dozen users
    seqs = cdata.implicit_sequences(rec.interactions, ex)
    assert not set(seqs) & ex
    all_users = set(rec.interactions.frame["user_id"].astype(str))
    assert set(seqs) == all_users - ex
    # every kept user's sequence is all of that user's interactions, by time
    f = rec.interactions.frame
    u = next(iter(seqs))
    want = f[f["user_id"] == u].sort_values("timestamp", kind="stable")["item_id"].astype(str).tolist()
    assert seqs[u] == want


def test_rating_values_never_reach_the_sequences(real):
    rec, splits = real
    ex = cdata.excluded_users(splits)
    a = cdata.implicit_sequences(rec.interactions, ex)

    class NoRatings:  # the same log with every rating scrambled
        frame = rec.interactions.frame.assign(rating=np.random.default_rng(0).permutation(
            rec.interactions.frame["rating"].to_numpy()))

    assert cdata.implicit_sequences(NoRatings, ex) == a


def test_fit_sees_no_valid_or_test_user(real, monkeypatch):
    rec, splits = real
    seen = {}
    orig = SASRec.fit

    def spy(self, train_sequences, n_items, valid_histories=None, valid_targets=None, log=None):
        seen["train"], seen["vh"], seen["vt"] = train_sequences, valid_histories, valid_targets
        return orig(self, train_sequences, n_items, valid_histories, valid_targets, log=None)

    monkeypatch.setattr(SASRec, "fit", spy)
    cfg = SASRecConfig(hidden=8, max_len=20, epochs=1, eval_every=1, patience=1, threads=1)
    cm = cdata.fit_collab_model(rec, splits, cfg, log=None)
    ex = cdata.excluded_users(splits)
    assert cm.excluded == sorted(ex)
    kept = cdata.implicit_sequences(rec.interactions, ex)
    assert len(seen["train"]) == len(kept) == rec.interactions.frame["user_id"].nunique() - len(ex)
    # decode what SASRec was trained on: each is a kept user's own sequence minus its validation item
    decoded = [[cm.sasrec_items[j] for j in s] for s in seen["train"]]
    for (u, s), d in zip(kept.items(), decoded):
        assert d == (s[:-1] if len(s) >= 3 else s), u
    # items that only excluded users rated are cold (no trained row) and still get a vector
    only_excluded = set(rec.interactions.frame["item_id"].astype(str)) - {i for s in kept.values() for i in s}
    for i in only_excluded:
        assert not cm.warm[cm.catalog_items.index(i)]
    assert np.isfinite(cm.item_vectors).all() and cm.warm.sum() == len(cm.sasrec_items)


def test_load_or_fit_collab_fits_once_then_loads_and_flags_seen_users(real, tmp_path, monkeypatch):
    """The default recipe's load-or-fit: an empty/missing folder is fitted (honestly: no valid/test user) and saved,
    the next call loads the same model without fitting; a file or a foreign folder is refused naming it; a model
    that kept valid/test users is reported by seen_evaluation_users."""
    rec, splits = real
    cfg = SASRecConfig(hidden=8, max_len=20, epochs=1, eval_every=1, patience=1, threads=1)
    fits = []
    orig = cdata.fit_collab_model
    monkeypatch.setattr(cdata, "fit_collab_model", lambda *a, **k: fits.append(1) or orig(*a, **k))
    d = tmp_path / "cm"
    cm, fitted = cdata.load_or_fit_collab(d, rec, splits, cfg, log=None)
    assert fitted and fits == [1] and (d / "collab.json").is_file()
    assert cdata.seen_evaluation_users(cm, splits) == []
    again, fitted = cdata.load_or_fit_collab(d, rec, splits, cfg, log=None)
    assert not fitted and fits == [1] and again.sha256 == cm.sha256
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        cdata.load_or_fit_collab(tmp_path / "f", rec, splits, cfg, log=None)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="not a collaborative model folder"):
        cdata.load_or_fit_collab(tmp_path / "junk", rec, splits, cfg, log=None)
    # a damaged model folder is refused with the folder's name, not a deserialiser's traceback
    import shutil

    for name, damage in (("trunc", lambda f: (f / "vectors.safetensors").write_bytes(
            (f / "vectors.safetensors").read_bytes()[:100])), ("list", lambda f: (f / "collab.json").write_text("[1, 2]"))):
        bad = shutil.copytree(d, tmp_path / name)
        damage(bad)
        with pytest.raises(ValueError, match=f"{name}: not a readable collaborative model folder .*delete this one"):
            cdata.load_or_fit_collab(bad, rec, splits, cfg, log=None)
    with pytest.raises(ValueError, match="cannot be created: .*f is a file"):  # found before a fit, not after
        cdata.load_or_fit_collab(tmp_path / "f" / "sub", rec, splits, cfg, log=None)
    assert fits == [1]
    leaky = cdata.CollabModel(cm.sasrec, cm.sasrec_items, cm.catalog_items, cm.item_vectors, cm.warm,
                              cm.excluded[1:])  # claims to have kept one evaluation user
    assert cdata.seen_evaluation_users(leaky, splits) == [cm.excluded[0]]
    # the default folder is keyed by the data's hash and the SASRec settings, under $LLMREC_CACHE
    monkeypatch.setenv("LLMREC_CACHE", str(tmp_path / "cache"))
    from llmrec.samples.protocol import data_sha256

    dd = cdata.default_collab_dir(data_sha256(rec))
    assert dd.parent == tmp_path / "cache" / "collab" and dd.name.startswith(data_sha256(rec)[:12])
    assert dd != cdata.default_collab_dir(data_sha256(rec), SASRecConfig(max_len=50, epochs=80))
