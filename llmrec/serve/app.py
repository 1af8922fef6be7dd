"""The ASGI app: versioned endpoints, batching queues, limits, auth, metrics, offline docs and the playground.

``create_app(backend, ...)`` builds a FastAPI app around a :class:`llmrec.serve._backend.Backend` (or
anything with the same methods). Endpoints:

* ``POST /v1/rerank``, ``POST /v1/recommend``, ``POST /v1/score`` - batched (:mod:`llmrec.serve.batching`);
* ``GET /healthz`` (alive), ``GET /readyz`` (model, index, adapter loaded), ``GET /metrics`` (Prometheus);
* ``GET /docs`` (Swagger UI served from the ``swagger-ui-bundle`` package: works offline), ``/openapi.json``;
* ``GET /playground/`` - the prompt playground (:mod:`llmrec.prompt_lab.playground`) on the same app.

Errors are JSON: ``{"error": ..., "detail": [{"field", "value", "message"}]}``; bad input is ``422`` (413 for
a body over 64 KiB), a full queue ``503`` with ``Retry-After``, a request over its time ``504``, a missing or
wrong API key ``401``. A ``500`` carries no traceback (it is logged).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmrec.serve import schemas as S
from llmrec.serve._backend import BadInput, playground_page
from llmrec.serve.auth import OPEN_PATHS, bearer_ok
from llmrec.serve.batching import Batcher, QueueFull
from llmrec.serve.memory import trimming
from llmrec.serve.metrics import CONTENT_TYPE_LATEST, Metrics

__all__ = ["create_app", "ServeConfig"]

log = logging.getLogger("llmrec.serve")

DOCS_PATHS = ("/docs", "/openapi.json", "/docs-static")
_ENDPOINTS = ("/v1/rerank", "/v1/recommend", "/v1/score", "/healthz", "/readyz", "/metrics", "/docs",
              "/openapi.json", "/playground/", "/playground/api/templates", "/playground/api/preview")
_VALUE_CHARS = 120


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a lone surrogate from a client's JSON cannot break the encoding."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _short(v: Any) -> str | None:
    if v is None:
        return None
    s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=True, default=repr)
    return s if len(s) <= _VALUE_CHARS else s[:_VALUE_CHARS] + f"... ({len(s)} chars)"


def _field(loc: tuple) -> str:
    out = ""
    for x in (loc[1:] if loc and loc[0] == "body" else loc):
        if isinstance(x, int):
            out += f"[{x}]"
        elif str(x) in ("int", "str", "bool", "float") or any(c in str(x) for c in "[-( "):
            continue  # pydantic's union-branch and validator names: not fields
        else:
            out += ("." if out else "") + str(x)
    return out or "body"


def error(status: int, message: str, detail: list[dict] | None = None, headers: dict | None = None) -> Response:
    return AsciiJSONResponse({"error": message, "detail": detail or []}, status_code=status, headers=headers)


class ServeConfig:
    """Knobs of the service (the CLI's flags)."""

    def __init__(self, *, batching: bool = True, max_batch: int = 16, max_wait_ms: float = 5.0,
                 return_wait_ms: float = 50.0, trim_memory: bool = False, max_queue: int = 256,
                 timeout_s: float = 30.0, api_key: str | None = None,
                 allowed_hosts: set[str] | None = None, max_body_bytes: int = S.MAX_BODY_BYTES) -> None:
        self.batching, self.max_batch = bool(batching), int(max_batch) if batching else 1
        self.max_wait_ms = float(max_wait_ms) if batching else 0.0
        self.return_wait_ms = float(return_wait_ms) if batching else 0.0
        self.trim_memory = bool(trim_memory)  # llmrec.serve.memory: lower RSS, slower (see README)
        self.max_queue, self.timeout_s, self.api_key = int(max_queue), float(timeout_s), api_key
        self.allowed_hosts, self.max_body_bytes = allowed_hosts, int(max_body_bytes)


class _TooLarge(Exception):
    pass


class _Guard:
    """Pure ASGI middleware: Host check (local mode), API key, body-size cap, request metrics."""

    def __init__(self, app, cfg: ServeConfig, metrics: Metrics) -> None:
        self.app, self.cfg, self.metrics = app, cfg, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        endpoint = path if path in _ENDPOINTS else ("/docs-static" if path.startswith("/docs-static/") else "other")
        t0, status = time.perf_counter(), [500]

        async def send_wrapped(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        async def reply(resp: Response):
            await resp(scope, receive, send_wrapped)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            if self.cfg.allowed_hosts is not None:
                host = headers.get("host", "").rsplit(":", 1)[0].strip("[]").lower()
                if host not in self.cfg.allowed_hosts:
                    return await reply(error(403, f"Host {host!r} not allowed (DNS rebinding guard)"))
            open_path = path in OPEN_PATHS or path.startswith(DOCS_PATHS)
            if self.cfg.api_key is not None and not open_path and not bearer_ok(headers.get("authorization"),
                                                                                self.cfg.api_key):
                return await reply(error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                         headers={"WWW-Authenticate": "Bearer"}))
            limit = self.cfg.max_body_bytes
            try:
                declared = int(headers.get("content-length", "0") or 0)
            except ValueError:
                return await reply(error(400, "bad Content-Length header"))
            if declared > limit:
                return await reply(error(413, f"body of {declared} bytes; the limit is {limit}",
                                         [{"field": "body", "value": f"{declared} bytes", "message": "too large"}]))
            seen = [0]

            async def receive_capped():
                msg = await receive()
                if msg["type"] == "http.request":
                    seen[0] += len(msg.get("body", b""))
                    if seen[0] > limit:
                        raise _TooLarge()
                return msg

            try:
                await self.app(scope, receive_capped, send_wrapped)
            except _TooLarge:
                await reply(error(413, f"body over {limit} bytes",
                                  [{"field": "body", "value": f">{limit} bytes", "message": "too large"}]))
        finally:
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)


def create_app(backend: Any, config: ServeConfig | None = None) -> FastAPI:
    """The service around ``backend`` (see module docstring)."""
    cfg = config or ServeConfig()
    metrics = Metrics()
    executor = ThreadPoolExecutor(1, thread_name_prefix="llmrec-score")  # forwards are serialised anyway

    def make_batcher(name: str, fn) -> Batcher:
        def on_batch(n: int, secs: float) -> None:
            metrics.batch_size.labels(name).observe(n)
            metrics.batch_seconds.labels(name).observe(secs)

        return Batcher(trimming(fn) if cfg.trim_memory else fn, executor, max_batch=cfg.max_batch,
                       max_wait_ms=cfg.max_wait_ms, return_wait_ms=cfg.return_wait_ms, max_queue=cfg.max_queue,
                       on_batch=on_batch, on_depth=lambda d: metrics.queue_depth.labels(name).set(d))

    batchers = {"rerank": make_batcher("rerank", backend.rerank_batch),
                "score": make_batcher("score", backend.score_batch),
                "recommend": make_batcher("recommend", backend.recommend_batch)}
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(app):
        for b in batchers.values():
            b.start()
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            for b in batchers.values():
                await b.stop()
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="llmrec reranking service", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  default_response_class=AsciiJSONResponse,
                  description="Rerank candidates with a (LoRA-tuned) LM, recommend (retrieve then rerank), score "
                              "P(Yes). Items are ids or exact titles. Errors: JSON `{error, detail[{field, value, "
                              "message}]}`.")
    app.state.metrics, app.state.batchers, app.state.backend, app.state.config = metrics, batchers, backend, cfg

    # ------------------------------------------------------------------ errors
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        detail = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                detail.append({"field": "body", "value": None,
                               "message": f"malformed JSON: {e.get('ctx', {}).get('error', e.get('msg'))}"})
                continue
            detail.append({"field": _field(tuple(e.get("loc", ()))), "value": _short(e.get("input")),
                           "message": str(e.get("msg"))})
        return error(422, "invalid request", detail)

    @app.exception_handler(BadInput)
    async def _bad(request: Request, exc: BadInput):
        return error(422, "invalid request", [{"field": exc.field, "value": _short(exc.value), "message": exc.message}])

    @app.exception_handler(QueueFull)
    async def _full(request: Request, exc: QueueFull):
        metrics.rejected.labels(request.url.path).inc()
        return error(503, f"overloaded: {exc}; retry later", headers={"Retry-After": "1"})

    @app.exception_handler(asyncio.TimeoutError)
    async def _timeout(request: Request, exc):
        return error(504, f"no result within {cfg.timeout_s:g} s")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):  # not UTF-8, or JSON nested too deep
            return error(422, "invalid request", [{"field": "body", "value": None,
                                                   "message": "malformed body: not UTF-8 JSON, or nested too deeply"}])
        return error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); see the server log")

    # ------------------------------------------------------------------ API
    def items(ranked) -> dict:
        return {"items": [asdict(r) for r in ranked]}

    errs = {422: {"model": S.ErrorResponse}, 503: {"model": S.ErrorResponse}, 504: {"model": S.ErrorResponse}}

    @app.post("/v1/rerank", response_model=S.RankedResponse, responses=errs, tags=["v1"])
    async def rerank(req: S.RerankRequest):
        """Reorder candidates for a history; the best `top_k` with scores (higher = better)."""
        job = backend.check_rerank(req.history, req.candidates, req.top_k)
        return items(await batchers["rerank"].submit(job, cfg.timeout_s))

    @app.post("/v1/recommend", response_model=S.RankedResponse, responses=errs, tags=["v1"])
    async def recommend(req: S.RecommendRequest):
        """Top `k` unseen items for a history or a known user: retrieve (FAISS), then rerank with the LM."""
        job = backend.check_recommend(req.history, req.user_id, req.k)
        return items(await batchers["recommend"].submit(job, cfg.timeout_s))

    @app.post("/v1/score", response_model=S.ScoreResponse, responses=errs, tags=["v1"])
    async def score(req: S.ScoreRequest):
        """P(Yes) that the user likes `target` (TALLRec-style pointwise Yes/No)."""
        job = backend.check_score(req.history, req.target)
        p, lo = await batchers["score"].submit(job, cfg.timeout_s)
        return {"target": job.target, "title": backend.lookup.title(job.target), "p_yes": p, "log_odds": lo}

    @app.get("/healthz", tags=["ops"])
    async def healthz():
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz():
        """Model, index and adapter are loaded and the batching queues run (503 otherwise)."""
        if not state["ready"]:
            return error(503, "not ready", headers={"Retry-After": "1"})
        return {"status": "ready", **backend.info,
                "batching": {"max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms,
                             "return_wait_ms": cfg.return_wait_ms, "trim_memory": cfg.trim_memory,
                             "pad_to_multiple_of": getattr(backend, "pad_multiple", 1), "max_queue": cfg.max_queue,
                             "timeout_s": cfg.timeout_s}}

    @app.get("/metrics", tags=["ops"])
    async def metrics_endpoint():
        """Prometheus text format: requests by endpoint and status, latency, batch sizes, queue depth."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ docs (offline)
    _mount_docs(app)

    # ------------------------------------------------------------------ playground
    if getattr(backend, "playground", None) is not None and getattr(backend, "_pg_factory", None) is not None:
        _mount_playground(app, backend, executor)
    app.add_middleware(_Guard, cfg=cfg, metrics=metrics)
    return app


def _mount_docs(app: FastAPI) -> None:
    from fastapi.openapi.docs import get_swagger_ui_html

    try:
        from fastapi.staticfiles import StaticFiles
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # no bundle: FastAPI's default page (its assets come from a CDN)
        swagger_ui_path = None

    if swagger_ui_path is not None:
        app.mount("/docs-static", StaticFiles(directory=swagger_ui_path), name="docs-static")
        js, css, icon = "/docs-static/swagger-ui-bundle.js", "/docs-static/swagger-ui.css", "/docs-static/favicon-32x32.png"
    else:
        js = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"
        css = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"
        icon = "https://fastapi.tiangolo.com/img/favicon.png"

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="llmrec API docs", swagger_js_url=js,
                                   swagger_css_url=css, swagger_favicon_url=icon)


_CSP = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"


def _mount_playground(app: FastAPI, backend: Any, executor) -> None:
    page = playground_page()

    @app.get("/playground", include_in_schema=False)
    async def pg_redirect():
        return RedirectResponse("/playground/")

    @app.get("/playground/", response_class=HTMLResponse, tags=["playground"])
    async def pg_page():
        """The prompt playground: edit a template, see renderings, token counts and scores of samples."""
        return HTMLResponse(page, headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-store",
                                           "X-Content-Type-Options": "nosniff"})

    @app.get("/playground/api/templates", tags=["playground"])
    async def pg_templates():
        ctx = await asyncio.get_running_loop().run_in_executor(executor, backend.playground)
        return {"templates": ctx.templates, "start": ctx.start_template}

    @app.post("/playground/api/preview", tags=["playground"])
    async def pg_preview(req: S.PreviewRequest):
        """Render (and with `score`, score) samples with a template given as text."""
        def run():
            try:
                return backend.preview(req.template, req.indices, req.split, req.score)
            except Exception as e:  # the page shows it; the service keeps serving
                return {"ok": False, "error": f"{type(e).__name__}: {e}", "lint": [], "samples": []}

        return await asyncio.get_running_loop().run_in_executor(executor, run)
