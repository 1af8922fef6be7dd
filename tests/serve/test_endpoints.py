"""The endpoints, in-process: answers agree with the library (llmrec.Reranker / Recommender), ops endpoints
(health, readiness, Prometheus metrics, offline docs) answer."""

from __future__ import annotations

import math

import numpy as np
import pytest


def test_health_ready_metrics_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz").json()
    assert r["status"] == "ready" and r["method"] == "listwise" and r["n_items"] == 30
    assert r["batching"]["max_batch"] == 16 and r["batching"]["pad_to_multiple_of"] == 1
    client.post("/v1/rerank", json={"history": ["1"], "candidates": ["2", "3"]})
    m = client.get("/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    text = m.text
    assert 'llmrec_requests_total{endpoint="/v1/rerank",status="200"} 1.0' in text
    assert "llmrec_request_seconds_bucket" in text and 'llmrec_batch_size_count{queue="rerank"}' in text
    assert "llmrec_queue_depth" in text
    spec = client.get("/openapi.json").json()
    assert {"/v1/rerank", "/v1/recommend", "/v1/score", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    docs = client.get("/docs").text
    assert "/docs-static/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()  # offline
    js = client.get("/docs-static/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000


def test_rerank_matches_library(client, backend):
    hist, cands = ["1", "Film 2 (1962)", 3], [str(i) for i in range(5, 17)]
    r = client.post("/v1/rerank", json={"history": hist, "candidates": cands, "top_k": 5})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [it["rank"] for it in items] == [1, 2, 3, 4, 5]
    assert all(a["score"] >= b["score"] for a, b in zip(items, items[1:]))
    lib = backend.rr.rerank(hist, cands)  # raw letter logits; the service: log P(letter | list), same order
    assert [it["item_id"] for it in items] == [x.item_id for x in lib[:5]]
    assert items[0]["title"] == f"Film {items[0]['item_id']} ({1960 + int(items[0]['item_id'])})"
    # scores are log-probabilities over the list's letters
    full = client.post("/v1/rerank", json={"history": hist, "candidates": cands}).json()["items"]
    assert math.isclose(sum(math.exp(it["score"]) for it in full), 1.0, rel_tol=1e-5)


def test_recommend_matches_library(client, backend):
    r = client.post("/v1/recommend", json={"user_id": "1", "k": 4})
    assert r.status_code == 200, r.text
    got = [(it["item_id"], it["rank"]) for it in r.json()["items"]]
    want = backend.rec.recommend_user("1", 4)
    assert got == [(x.item_id, x.rank) for x in want]
    h = backend.rec.history_of("2")
    r2 = client.post("/v1/recommend", json={"history": h, "k": 3}).json()["items"]
    assert [it["item_id"] for it in r2] == [x.item_id for x in backend.rec.recommend(h, 3)]
    assert not {it["item_id"] for it in r2} & set(h)


def test_score_matches_library(client, backend):
    r = client.post("/v1/score", json={"history": ["1", "2", "3"], "target": 7})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["target"] == "7" and j["title"] == "Film 7 (1967)" and 0 < j["p_yes"] < 1
    lo = backend.pointwise.score(["Film 1 (1961)", "Film 2 (1962)", "Film 3 (1963)"], ["Film 7 (1967)"])[0]
    np.testing.assert_allclose(j["log_odds"], lo, atol=1e-4)
    np.testing.assert_allclose(j["p_yes"], 1 / (1 + math.exp(-lo)), atol=1e-5)


def test_unknown_path_and_method_are_json(client):
    r = client.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]
    r = client.get("/v1/rerank")
    assert r.status_code == 405 and r.json()["error"]
