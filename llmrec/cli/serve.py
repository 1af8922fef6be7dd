"""``llmrec serve``: registered on the main typer app by :func:`register` (from ``llmrec.cli.main``). Errors are ``ValueError`` / ``FileNotFoundError`` with one-line messages (``llmrec.cli.main``
prints them as ``llmrec: error: ...``, exit code 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

__all__ = ["register", "serve"]


def serve(
    index_dir: Path = typer.Option(..., "--index", help="Folder written by `llmrec index`."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="Reranker adapter (eval/rerank_eval.py output); "
                                           "without it, the base model zero-shot (listwise)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind. Anything but loopback needs an API key."),
    port: int = typer.Option(8000, "--port", help="Port to bind."),
    api_key_file: Optional[Path] = typer.Option(None, "--api-key-file", help="File whose first line is the API key "
                                                "(else $LLMREC_API_KEY); clients send 'Authorization: Bearer <key>'."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Base model (default: the adapter's, else "
                                             "the embedded SmolLM2-135M-Instruct)."),
    candidates: int = typer.Option(20, "--candidates", help="Retrieved items /v1/recommend reranks."),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="Score concurrent requests together."),
    max_batch: int = typer.Option(16, "--max-batch", help="Most requests per scoring batch."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", help="How long a request to an idle server waits for "
                                      "more requests."),
    return_wait_ms: float = typer.Option(50.0, "--return-wait-ms", help="How long after a batch the next batch may "
                                         "wait for the clients that batch answered (0: off)."),
    trim_memory: bool = typer.Option(False, "--trim-memory/--no-trim-memory", help="Give freed heap pages back to "
                                     "the OS after each batch (glibc malloc_trim): about half the RSS, ~3-10% fewer "
                                     "requests/s on a CPU."),
    pad_multiple: int = typer.Option(16, "--pad-multiple", help="Pad each scoring batch's prompt remainders to a "
                                     "multiple of this many tokens (masked; 1: none). Few distinct matrix shapes: "
                                     "with bf16 on a CPU, RSS otherwise grows ~0.3 MB per request of a new shape."),
    max_queue: int = typer.Option(256, "--max-queue", help="Waiting requests beyond which the service answers 503."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds per request before 504."),
    playground: bool = typer.Option(True, "--playground/--no-playground", help="Serve the prompt playground at "
                                    "/playground/."),
    dtype: str = typer.Option("auto", help="Scoring precision: auto, bf16, fp16 or fp32."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
):
    """Serve rerank / recommend / score over HTTP (FastAPI + uvicorn), with request batching, limits, metrics,
    OpenAPI docs at /docs and the prompt playground at /playground/."""
    try:
        import uvicorn

        from llmrec.serve.app import ServeConfig, create_app
    except ImportError as e:
        raise ValueError(f"llmrec serve needs the serve extra: pip install 'llmrec[serve]' ({e})") from None
    from llmrec.serve._backend import load_backend
    from llmrec.serve.auth import is_loopback, resolve_api_key

    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port}: must be in 0..65535")
    for flag, v in (("--max-batch", max_batch), ("--max-queue", max_queue), ("--candidates", candidates),
                    ("--pad-multiple", pad_multiple)):
        if v < 1:
            raise ValueError(f"{flag} {v}: must be >= 1")
    if max_wait_ms < 0 or return_wait_ms < 0 or timeout <= 0:
        raise ValueError(f"--max-wait-ms and --return-wait-ms must be >= 0 and --timeout > 0, got {max_wait_ms}, "
                         f"{return_wait_ms} and {timeout}")
    key = resolve_api_key(host, api_key_file)  # refuses a non-loopback host without a key, before loading
    backend = load_backend(index_dir, adapter, base_model=base_model, dtype=dtype, n_candidates=candidates,
                           playground=playground, pad_to_multiple_of=pad_multiple)
    allowed = {"127.0.0.1", "localhost", "::1", host.strip("[]").lower()} if is_loopback(host) and key is None else None
    cfg = ServeConfig(batching=batching, max_batch=max_batch, max_wait_ms=max_wait_ms,
                      return_wait_ms=return_wait_ms, trim_memory=trim_memory, max_queue=max_queue,
                      timeout_s=timeout, api_key=key, allowed_hosts=allowed)
    app = create_app(backend, cfg)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"llmrec serve: http://{shown}:{port}/  (docs /docs, playground /playground/, "
               f"{'batching up to ' + str(max_batch) if batching else 'no batching'}"
               f"{', API key required' if key else ''})", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, timeout_graceful_shutdown=5)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to a typer app."""
    app.command("serve")(serve)
