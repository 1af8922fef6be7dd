"""Bad input never reaches the model: a corpus of malformed, oversized, mistyped and unknown-item requests,
each answered with a 4xx and a JSON error naming the field (and value) where there is one; the service still
answers /readyz afterwards and never sent a 500."""

from __future__ import annotations

import json

import pytest

H = ["1", "2"]
C = ["5", "6", "7"]
HUGE = json.dumps({"history": H, "candidates": C, "pad": "x" * 70_000})

# (name, path, body: dict -> json= / str or bytes -> content=, headers, expected status, expected field or None)
CORPUS = [
    ("malformed json", "/v1/rerank", '{"history": ["1"], "candidates": [', None, 422, "body"),
    ("not json at all", "/v1/rerank", "history=1&candidates=2", None, 422, None),
    ("empty body", "/v1/rerank", "", None, 422, None),
    ("json array body", "/v1/rerank", "[1, 2, 3]", None, 422, None),
    ("json null body", "/v1/score", "null", None, 422, None),
    ("invalid utf-8", "/v1/rerank", b'{"history": ["\xff\xfe"], "candidates": ["1"]}', None, 422, "body"),
    ("huge body", "/v1/rerank", HUGE, None, 413, "body"),
    ("huge declared length", "/v1/rerank", "{}", {"content-length": "99999999"}, 413, "body"),
    ("missing candidates", "/v1/rerank", {"history": H}, None, 422, "candidates"),
    ("missing history", "/v1/rerank", {"candidates": C}, None, 422, "history"),
    ("history not a list", "/v1/rerank", {"history": "1,2", "candidates": C}, None, 422, "history"),
    ("history of objects", "/v1/rerank", {"history": [{"id": 1}], "candidates": C}, None, 422, "history[0]"),
    ("history of floats", "/v1/rerank", {"history": [1.5], "candidates": C}, None, 422, "history[0]"),
    ("history of bools", "/v1/rerank", {"history": [True], "candidates": C}, None, 422, "history[0]"),
    ("history of nulls", "/v1/rerank", {"history": [None], "candidates": C}, None, 422, "history[0]"),
    ("empty history", "/v1/rerank", {"history": [], "candidates": C}, None, 422, "history"),
    ("empty candidates", "/v1/rerank", {"history": H, "candidates": []}, None, 422, "candidates"),
    ("overlong history", "/v1/rerank", {"history": ["1"] * 201, "candidates": C}, None, 422, "history"),
    ("too many candidates", "/v1/rerank", {"history": H, "candidates": [str(i) for i in range(101)]}, None, 422,
     "candidates"),
    ("over listwise letters", "/v1/rerank", {"history": ["0"], "candidates": [str(i) for i in range(1, 22)]}, None,
     422, "candidates"),
    ("overlong item string", "/v1/rerank", {"history": ["x" * 301], "candidates": C}, None, 422, "history[0]"),
    ("blank item string", "/v1/rerank", {"history": ["   "], "candidates": C}, None, 422, "history[0]"),
    ("unknown history id", "/v1/rerank", {"history": ["1", "999"], "candidates": C}, None, 422, "history[1]"),
    ("unknown candidate title", "/v1/rerank", {"history": H, "candidates": ["5", "Nope (2020)"]}, None, 422,
     "candidates[1]"),
    ("negative id", "/v1/rerank", {"history": [-1], "candidates": C}, None, 422, "history[0]"),
    ("huge int id", "/v1/rerank", {"history": [10**30], "candidates": C}, None, 422, "history[0]"),
    ("duplicate candidates", "/v1/rerank", {"history": H, "candidates": ["5", "Film 5 (1965)"]}, None, 422,
     "candidates[1]"),
    ("top_k zero", "/v1/rerank", {"history": H, "candidates": C, "top_k": 0}, None, 422, "top_k"),
    ("top_k string", "/v1/rerank", {"history": H, "candidates": C, "top_k": "3"}, None, 422, "top_k"),
    ("unknown field", "/v1/rerank", {"history": H, "candidates": C, "temperature": 0.7}, None, 422, "temperature"),
    ("lone surrogate", "/v1/rerank", '{"history": ["\\ud800"], "candidates": ["1"]}', None, 422, "history[0]"),
    ("nul and rtl override", "/v1/rerank", {"history": ["Film 1\u0000\u202e"], "candidates": C}, None, 422,
     "history[0]"),
    ("emoji title", "/v1/score", {"history": ["\U0001F3AC\U0001F37F"], "target": "5"}, None, 422, "history[0]"),
    ("zero-width title", "/v1/score", {"history": H, "target": "Film\u200b 5 (1965)"}, None, 422, "target"),
    ("score without target", "/v1/score", {"history": H}, None, 422, "target"),
    ("score target list", "/v1/score", {"history": H, "target": ["5"]}, None, 422, "target"),
    ("score unknown target", "/v1/score", {"history": H, "target": "12345"}, None, 422, "target"),
    ("recommend both", "/v1/recommend", {"history": H, "user_id": "1", "k": 3}, None, 422, None),
    ("recommend neither", "/v1/recommend", {"k": 3}, None, 422, None),
    ("recommend unknown user", "/v1/recommend", {"user_id": "no-such-user", "k": 3}, None, 422, "user_id"),
    ("recommend k over catalogue", "/v1/recommend", {"user_id": "1", "k": 100}, None, 422, "k"),
    ("recommend k over limit", "/v1/recommend", {"user_id": "1", "k": 101}, None, 422, "k"),
    ("recommend k negative", "/v1/recommend", {"history": H, "k": -3}, None, 422, "k"),
    ("recommend k float", "/v1/recommend", {"history": H, "k": 2.5}, None, 422, "k"),
    ("deeply nested", "/v1/rerank", '{"history": ' + "[" * 5000 + "]" * 5000 + ', "candidates": ["1"]}', None, 422,
     "body"),
    ("wrong method", "/v1/score", None, None, 405, None),
]


@pytest.mark.parametrize("case", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input_is_a_json_4xx(client, case):
    name, path, body, headers, status, field = case
    if body is None:
        r = client.get(path)
    elif isinstance(body, dict):
        r = client.post(path, json=body, headers=headers)
    else:
        r = client.post(path, content=body, headers={"content-type": "application/json", **(headers or {})})
    assert r.status_code == status, (name, r.status_code, r.text[:300])
    j = r.json()
    assert isinstance(j["error"], str) and "Traceback" not in r.text
    if field is not None:
        assert field in [d["field"] for d in j["detail"]], (name, j)


def test_corpus_size_and_service_still_ready(client):
    assert len(CORPUS) >= 30
    for _, path, body, headers, _, _ in CORPUS:
        if isinstance(body, dict):
            client.post(path, json=body)
        elif body is not None:
            client.post(path, content=body, headers={"content-type": "application/json", **(headers or {})})
    assert client.get("/readyz").status_code == 200
    ok = client.post("/v1/rerank", json={"history": H, "candidates": C})
    assert ok.status_code == 200
    assert 'status="500"' not in client.get("/metrics").text


def test_error_names_value(client):
    d = client.post("/v1/rerank", json={"history": ["1", "999"], "candidates": C}).json()["detail"][0]
    assert d == {"field": "history[1]", "value": "999", "message": d["message"]} and "unknown" in d["message"]
    d = client.post("/v1/recommend", json={"user_id": "1", "k": 100}).json()["detail"][0]
    assert d["field"] == "k" and d["value"] == "100" and "catalogue" in d["message"]
