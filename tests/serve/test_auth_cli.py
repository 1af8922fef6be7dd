"""Binding and keys: loopback needs nothing, any other address needs an API key (bearer, constant-time
compare), refused otherwise; the DNS-rebinding Host guard of local mode; the `llmrec serve` command's checks."""

from __future__ import annotations

import pytest

from llmrec.serve.auth import bearer_ok, is_loopback, resolve_api_key

KEY = "k" * 20 + "-secret"


def test_loopback_and_key_rules(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("example.org")
    assert resolve_api_key("127.0.0.1", env={}) is None
    with pytest.raises(ValueError, match="needs an API key"):
        resolve_api_key("0.0.0.0", env={})
    with pytest.raises(ValueError, match="at least 16"):
        resolve_api_key("0.0.0.0", env={"LLMREC_API_KEY": "short"})
    assert resolve_api_key("0.0.0.0", env={"LLMREC_API_KEY": KEY}) == KEY
    f = tmp_path / "key"
    f.write_text(KEY + "\n")
    assert resolve_api_key("10.1.2.3", f, env={}) == KEY
    assert bearer_ok(f"Bearer {KEY}", KEY) and bearer_ok(f"bearer {KEY}", KEY)
    assert not bearer_ok(None, KEY) and not bearer_ok(KEY, KEY) and not bearer_ok(f"Bearer {KEY}x", KEY)
    assert not bearer_ok("Basic abc", KEY) and not bearer_ok("Bearer \udcff", KEY)


def test_app_requires_the_key(backend):
    from fastapi.testclient import TestClient

    from llmrec.serve.app import ServeConfig, create_app

    with TestClient(create_app(backend, ServeConfig(api_key=KEY))) as c:
        body = {"history": ["1"], "candidates": ["2", "3"]}
        r = c.post("/v1/rerank", json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "API key" in r.json()["error"]
        assert c.post("/v1/rerank", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/v1/rerank", json=body, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200  # probes stay open
        assert c.get("/docs").status_code == 200


def test_local_mode_host_guard(backend):
    from fastapi.testclient import TestClient

    from llmrec.serve.app import ServeConfig, create_app

    cfg = ServeConfig(allowed_hosts={"127.0.0.1", "localhost", "::1"})
    with TestClient(create_app(backend, cfg), base_url="http://127.0.0.1:8000") as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/healthz", headers={"host": "evil.example:8000"})
        assert r.status_code == 403 and "DNS rebinding" in r.json()["error"]


def test_cli_serve_refuses_public_host_without_key(capsys, monkeypatch, tmp_path):
    from llmrec.cli import main

    monkeypatch.delenv("LLMREC_API_KEY", raising=False)
    with pytest.raises(SystemExit) as e:
        main(["serve", "--index", str(tmp_path), "--host", "0.0.0.0"])
    assert e.value.code == 2 and "needs an API key" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["serve", "--index", str(tmp_path / "missing"), "--max-batch", "0"])
    assert e.value.code == 2 and "--max-batch 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["serve", "--index", str(tmp_path / "missing"), "--pad-multiple", "0"])
    assert e.value.code == 2 and "--pad-multiple 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["serve", "--index", str(tmp_path / "missing")])
    assert e.value.code == 2 and "manifest.json not found" in capsys.readouterr().err
    try:
        main(["serve", "--help"])
    except SystemExit as e:
        assert not e.code
    assert "--no-batching" in capsys.readouterr().out
