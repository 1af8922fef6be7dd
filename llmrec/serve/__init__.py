"""``llmrec serve``: the reranker behind HTTP (FastAPI + uvicorn), with request batching, limits, metrics,
an API key for non-local binding, and the prompt playground (issue 16).

* :func:`llmrec.serve.app.create_app` - the ASGI app around a :class:`llmrec.serve._backend.Backend`.
* ``llmrec serve`` itself is :mod:`llmrec.cli.serve`.

Only :mod:`llmrec.serve._backend` imports llmrec internals; the web modules import fastapi lazily (the
``serve`` extra: ``pip install 'llmrec[serve]'``).
"""
