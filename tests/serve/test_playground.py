"""The prompt playground on the service's app (/playground/): its JSON API in-process, and the page in a real
browser: headless Chromium (Debian package `chromium`) loads it from a live uvicorn server, the page renders the
start template on real MovieLens-100K samples, and a screenshot is saved. Skipped, with the reason, when
Chromium is not installed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def pg_backend(toy_index, tiny_tokenizer):
    from tests.conftest import make_tiny_llama, ml100k_path
    from tests.serve.conftest import make_backend

    data = ml100k_path()

    def factory():
        from llmrec.recipe import load_tallrec
        from llmrec.prompt_lab.playground import PlaygroundContext
        from llmrec.prompts import load_template

        rec, splits = load_tallrec(data)
        names = ("tallrec", "tallrec-short")
        return PlaygroundContext(rec, splits, tiny_tokenizer, make_tiny_llama(len(tiny_tokenizer)), "tiny", 1024,
                                 {n: load_template(n).source for n in names}, "tallrec")

    return make_backend(toy_index, tiny_tokenizer, playground=factory)


def test_playground_api_in_process(pg_backend):
    from fastapi.testclient import TestClient

    from llmrec.prompts.render import render_one
    from llmrec.prompts import load_template
    from llmrec.serve.app import create_app

    with TestClient(create_app(pg_backend)) as c:
        assert c.get("/playground", follow_redirects=False).headers["location"] == "/playground/"
        page = c.get("/playground/")
        assert page.status_code == 200 and "<textarea" in page.text and "fetch('api/preview'" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        tl = c.get("/playground/api/templates").json()
        assert tl["start"] == "tallrec" and "tallrec-short" in tl["templates"]
        r = c.post("/playground/api/preview", json={"template": tl["templates"]["tallrec"], "indices": [0, 1],
                                                    "split": "valid", "score": True}).json()
        ctx = pg_backend.playground()
        assert r["ok"] and r["samples"][0]["text"] == render_one(load_template("tallrec"), ctx.splits.valid[0],
                                                                 ctx.rec.catalog)
        assert all(0 < s["p_yes"] < 1 for s in r["samples"])
        bad = c.post("/playground/api/preview", json={"template": "x", "indices": [0], "split": "nope"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "split"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def test_playground_in_headless_chromium(pg_backend, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium not installed (Debian: apt-get install -y chromium); the browser check of the "
                    "playground needs it")
    import uvicorn

    from llmrec.serve.app import ServeConfig, create_app

    port = _free_port()
    app = create_app(pg_backend, ServeConfig(allowed_hosts={"127.0.0.1", "localhost", "::1"}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        url = f"http://127.0.0.1:{port}/playground/"
        pg_backend.playground()  # load the data before the browser's clock starts
        flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000"]
        env = {**os.environ, "HOME": str(tmp_path)}
        dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120, env=env).stdout
        assert "<textarea" in dom and 'id="status">ok<' in dom, dom[-2000:]
        ctx = pg_backend.playground()
        title = ctx.rec.catalog.title(ctx.splits.valid[0].target)
        import html

        assert html.escape(title, quote=False) in dom  # the first valid sample's target, rendered by the page
        out = Path(os.environ.get("LLMREC_SCREENSHOT_DIR", tmp_path)) / "playground.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(flags + ["--window-size=1280,900", f"--screenshot={out}", url], capture_output=True,
                       timeout=120, env=env)
        assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    finally:
        server.should_exit = True
        th.join(10)
