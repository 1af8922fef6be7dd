"""Metric tests: hand-worked leave-one-out examples, sklearn references, error messages."""

import numpy as np
import pytest
from sklearn.metrics import ndcg_score, roc_auc_score

from llmrec.metrics import auc, mrr_at_k, ndcg_at_k, ranking_metrics, recall_at_k, true_item_rank

# three users, lists of length 4:
#   user 0: true 7 at rank 1 -> NDCG 1/log2(2) = 1,      recall 1, RR 1
#   user 1: true 5 at rank 3 -> NDCG 1/log2(4) = 0.5,    recall 1, RR 1/3
#   user 2: true 9 absent    -> everything 0
RANKED = np.array([[7, 1, 2, 3], [4, 6, 5, 0], [1, 2, 3, 4]])
TRUE = np.array([7, 5, 9])


def test_rank():
    assert true_item_rank(RANKED, TRUE).tolist() == [1, 3, 0]


def test_hand_worked_k4():
    # NDCG@4 = (1 + 0.5 + 0) / 3 = 0.5; Recall@4 = 2/3; MRR@4 = (1 + 1/3 + 0)/3 = 4/9
    assert ndcg_at_k(RANKED, TRUE, 4) == pytest.approx(0.5)
    assert recall_at_k(RANKED, TRUE, 4) == pytest.approx(2 / 3)
    assert mrr_at_k(RANKED, TRUE, 4) == pytest.approx(4 / 9)


def test_hand_worked_k2():
    # at K=2 user 1 (rank 3) drops out: NDCG@2 = 1/3, Recall@2 = 1/3, MRR@2 = 1/3
    assert ndcg_at_k(RANKED, TRUE, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, TRUE, 2) == pytest.approx(1 / 3)
    assert mrr_at_k(RANKED, TRUE, 2) == pytest.approx(1 / 3)
    per_user = ndcg_at_k(RANKED, TRUE, 4, reduce=False)
    assert per_user == pytest.approx([1.0, 0.5, 0.0])


def test_rank_two_ndcg():
    # rank 2 -> 1/log2(3) = 0.6309297535714575
    assert ndcg_at_k(np.array([[3, 8]]), np.array([8]), 2) == pytest.approx(0.6309297535714575)


def test_against_sklearn_ndcg():
    rng = np.random.default_rng(0)
    n_users, n_items, k = 50, 30, 10
    scores = rng.standard_normal((n_users, n_items))  # continuous -> no ties
    true = rng.integers(0, n_items, n_users)
    ranked = np.argsort(-scores, axis=1)[:, :k]
    y = np.zeros((n_users, n_items))
    y[np.arange(n_users), true] = 1
    assert ndcg_at_k(ranked, true, k) == pytest.approx(ndcg_score(y, scores, k=k))
    # Recall@K with one positive = fraction of users whose true item is in sklearn's top-k
    hit = (np.argsort(-scores, 1)[:, :k] == true[:, None]).any(1).mean()
    assert recall_at_k(ranked, true, k) == pytest.approx(hit)


def test_ranking_metrics_keys_and_padding():
    ranked = np.array([[3, -1, -1], [2, 3, -1]])
    out = ranking_metrics(ranked, np.array([3, 3]), ndcg_ks=(3,), recall_ks=(1, 3), mrr_ks=(3,))
    assert set(out) == {"NDCG@3", "Recall@1", "Recall@3", "MRR@3"}
    assert out["Recall@1"] == pytest.approx(0.5) and out["MRR@3"] == pytest.approx(0.75)


@pytest.mark.parametrize(
    "call, msg",
    [
        (lambda: ndcg_at_k(RANKED, TRUE, 5), "k=5 is larger"),
        (lambda: recall_at_k(RANKED, TRUE, 0), "k must be a positive"),
        (lambda: mrr_at_k(RANKED, TRUE[:2], 2), "true_items"),
        (lambda: ndcg_at_k(np.array([[1, 1]]), np.array([1]), 2), r"ranked\[0\] contains a duplicate"),
        (lambda: ndcg_at_k(RANKED[0], TRUE, 2), "ranked must be 2-D"),
    ],
)
def test_ranking_errors(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()


def test_auc_hand_worked_and_sklearn():
    # positives {0.8, 0.4}, negatives {0.5, 0.1}: pairs (0.8>0.5, 0.8>0.1, 0.4<0.5, 0.4>0.1) -> 3/4
    assert auc([1, 0, 1, 0], [0.8, 0.5, 0.4, 0.1]) == pytest.approx(0.75)
    # one tie counts 1/2: pos {0.5}, neg {0.5, 0.1} -> (0.5 + 1)/2
    assert auc([1, 0, 0], [0.5, 0.5, 0.1]) == pytest.approx(0.75)
    rng = np.random.default_rng(1)
    y, s = rng.integers(0, 2, 200), rng.random(200)
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert auc(y.astype(bool), s) == pytest.approx(roc_auc_score(y, s))


@pytest.mark.parametrize(
    "labels, scores, msg",
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], r"only one class \(1\)"),
        ([0, 0], [0.1, 0.2], r"only one class \(0\)"),
        ([0, 2], [0.1, 0.2], "must be 0/1"),
        ([0, 1], [0.1], "labels has 2 entries but scores has 1"),
        ([], [], "empty"),
        ([0, 1], [0.1, np.nan], "NaN"),
    ],
)
def test_auc_errors(labels, scores, msg):
    with pytest.raises(ValueError, match=msg):
        auc(labels, scores)


def _pair_count_auc(y, s):
    """Independent reference: fraction of (positive, negative) pairs ordered correctly, ties 1/2."""
    pos = [b for a, b in zip(y, s) if a == 1]
    neg = [b for a, b in zip(y, s) if a == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_uauc_hand_worked():
    from llmrec.metrics import uauc

    # user a: pairs (0.9>0.1) (0.2>0.1) -> 1.0; user b: (0.3 vs 0.7) -> 0.0 ... one pair, wrong -> 0.0
    # user c holds one class only -> not counted
    users = ["a", "a", "a", "b", "b", "c", "c"]
    labels = [1, 1, 0, 1, 0, 1, 1]
    scores = [0.9, 0.2, 0.1, 0.3, 0.7, 0.5, 0.6]
    r = uauc(users, labels, scores)
    assert r == {"uauc": 0.5, "n_users": 2, "n_users_total": 3, "n_samples": 5}


def test_uauc_against_pair_count_reference_and_constant_per_user():
    from llmrec.metrics import auc, uauc

    rng = np.random.default_rng(3)
    users = rng.integers(0, 25, 400)
    labels = rng.integers(0, 2, 400)
    scores = rng.normal(size=400) + labels * 0.5
    ref = []
    for u in np.unique(users):
        m = users == u
        if labels[m].min() != labels[m].max():
            ref.append(_pair_count_auc(labels[m].tolist(), scores[m].tolist()))
    assert abs(uauc(users, labels, scores)["uauc"] - np.mean(ref)) < 1e-12
    # a score that is constant within each user (e.g. the user's like-rate) has UAUC exactly 0.5,
    # while its global AUC can be far from 0.5
    per_user = {u: rng.random() for u in np.unique(users)}
    const = np.array([per_user[u] for u in users])
    assert uauc(users, labels, const)["uauc"] == 0.5
    assert 0.0 <= auc(labels, const) <= 1.0


def test_uauc_errors_and_no_user_with_both_labels():
    import math

    from llmrec.metrics import uauc

    assert math.isnan(uauc(["a", "b"], [1, 0], [0.1, 0.2])["uauc"])
    with pytest.raises(ValueError, match="users has 2 entries, labels 1"):
        uauc(["a", "b"], [1], [0.1, 0.2])
    with pytest.raises(ValueError, match="0/1"):
        uauc(["a", "a"], [1, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        uauc(["a", "a"], [1, 0], [float("nan"), 0.2])
    with pytest.raises(ValueError, match="empty"):
        uauc([], [], [])
