"""Cold-start item vectors from item features (llmrec.retrieval.coldstart)."""

import numpy as np
import pytest

from llmrec.data import Catalog
from llmrec.retrieval.coldstart import TextToCF, item_features, item_text


def _catalog():
    return Catalog.from_records([
        {"item_id": "1", "title": "Toy Story (1995)", "year": 1995, "genres": ["Animation", "Comedy"]},
        {"item_id": "2", "title": "Heat (1995)", "year": 1995, "genres": ["Crime"]},
        {"item_id": "3", "title": "Unknown", "year": None, "genres": []},
        {"item_id": "4", "title": "Casablanca (1942)", "year": 1942, "genres": ["Drama", "Romance"]},
    ])


def test_item_text_and_features_hand_worked():
    cat = _catalog()
    assert item_text(cat, "1") == "Toy Story (1995) | Animation, Comedy"
    assert item_text(cat, "3") == "Unknown"
    F = item_features(cat, ["1", "2", "3", "4"])
    # genre columns in sorted order: Animation, Comedy, Crime, Drama, Romance; then year, missing flag
    expected = np.array([[1, 1, 0, 0, 0, 1995, 0],
                         [0, 0, 1, 0, 0, 1995, 0],
                         [0, 0, 0, 0, 0, (1995 + 1995 + 1942) / 3, 1],
                         [0, 0, 0, 1, 1, 1942, 0]], np.float32)
    np.testing.assert_allclose(F, expected, rtol=1e-6)
    T = np.arange(8, dtype=np.float32).reshape(4, 2)
    np.testing.assert_array_equal(item_features(cat, ["1", "2", "3", "4"], T)[:, :2], T)
    with pytest.raises(ValueError, match=r"text_vecs must be \(4, dim\), got shape \(3, 2\)"):
        item_features(cat, ["1", "2", "3", "4"], T[:3])
    with pytest.raises(KeyError):
        item_features(cat, ["99"])


def test_text_to_cf_recovers_a_linear_map():
    g = np.random.default_rng(0)
    A, b = g.normal(size=(12, 5)), g.normal(size=5)
    X = g.normal(size=(300, 12))
    Y = X @ A + b + 0.01 * g.normal(size=(300, 5))
    m = TextToCF(l2_grid=(1e-3, 1.0, 100.0)).fit(X[:250], Y[:250])
    pred = m.predict(X[250:])
    assert pred.dtype == np.float32 and pred.shape == (50, 5)
    np.testing.assert_allclose(pred, X[250:] @ A + b, atol=0.05)      # noise 0.01: the map is recovered
    assert m.l2 == 1e-3                                                  # little noise -> least shrinkage
    r = m.predict(X[250:], norm=2.5)
    np.testing.assert_allclose(np.linalg.norm(r, axis=1), 2.5, rtol=1e-5)
    np.testing.assert_allclose(r / np.linalg.norm(r, axis=1, keepdims=True),
                               pred / np.linalg.norm(pred, axis=1, keepdims=True), atol=1e-5)  # same direction


def test_text_to_cf_errors():
    with pytest.raises(ValueError, match="l2_grid must be non-empty"):
        TextToCF(l2_grid=())
    with pytest.raises(ValueError, match="finite values > 0"):
        TextToCF(l2_grid=(0.0,))
    with pytest.raises(ValueError, match="finite values > 0"):
        TextToCF(l2_grid=(float("inf"),))
    m = TextToCF()
    with pytest.raises(RuntimeError, match="not fitted"):
        m.predict(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="text_vecs has 3 rows but cf_vecs has 2"):
        m.fit(np.zeros((3, 4)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="at least 2 warm items"):
        m.fit(np.zeros((1, 4)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="NaN or inf"):
        m.fit(np.full((3, 4), np.nan), np.zeros((3, 2)))
    m.fit(np.random.default_rng(0).normal(size=(10, 4)), np.ones((10, 2)))
    with pytest.raises(ValueError, match="width 3, the map was fitted on 4"):
        m.predict(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="norm must be finite and > 0, got 0"):
        m.predict(np.zeros((1, 4)), norm=0)
    with pytest.raises(ValueError, match="norm must be finite and > 0, got inf"):
        m.predict(np.zeros((1, 4)), norm=float("inf"))
    assert m.predict(np.zeros((0, 4))).shape == (0, 2)
    with pytest.raises(ValueError, match="got the string '12'"):
        item_features(_catalog(), "12")
