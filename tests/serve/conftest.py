"""Fixtures of the service tests: a tiny random Llama (tests/conftest.py), a toy MovieLens-CSV log indexed
with a 2-epoch retriever, and the app around them (in-process: fastapi's TestClient / httpx ASGI)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("faiss")

N_ITEMS = 30


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
    """40 users, each watching a run of consecutive items (wrapping); titles 'Film i (1960+i)'."""
    from tests.conftest import write_toy_movielens

    return write_toy_movielens(tmp_path_factory.mktemp("serve-toy-ml"), N_ITEMS)


@pytest.fixture(scope="session")
def toy_index(toy_dir, tmp_path_factory):
    from llmrec import Recommender

    out = tmp_path_factory.mktemp("serve-index") / "idx"
    Recommender.build(toy_dir, kcore=2, epochs=2, hidden=16, max_len=12, batch_size=32).save(out)
    return out


def make_backend(toy_index, tokenizer, method="listwise", playground=None, pad_to_multiple_of=1):
    from llmrec import Recommender, Reranker
    from llmrec.serve._backend import Backend
    from tests.conftest import make_tiny_llama

    idx = Recommender.load(toy_index)
    rr = Reranker(make_tiny_llama(len(tokenizer)), tokenizer, idx.catalog, method=method, max_history=5)
    rec = Recommender(idx.retriever, idx.index, idx.item_ids, idx.catalog, rr, n_candidates=8,
                      user_histories=idx.user_histories)
    return Backend(rec, {"index": str(toy_index), "adapter": None, "base_model": "tiny", "method": method,
                         "n_items": rec.n_items}, playground, pad_to_multiple_of=pad_to_multiple_of)


@pytest.fixture(scope="session")
def backend(toy_index, tiny_tokenizer):
    return make_backend(toy_index, tiny_tokenizer)


@pytest.fixture()
def client(backend):
    from fastapi.testclient import TestClient

    from llmrec.serve.app import ServeConfig, create_app

    with TestClient(create_app(backend, ServeConfig(max_wait_ms=2.0)), raise_server_exceptions=False) as c:
        yield c
