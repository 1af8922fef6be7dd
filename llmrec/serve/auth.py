"""Who may call the service: loopback binding needs nothing; any other address needs an API key, sent as
``Authorization: Bearer <key>`` and compared in constant time (:func:`hmac.compare_digest`)."""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

__all__ = ["is_loopback", "resolve_api_key", "bearer_ok", "OPEN_PATHS", "MIN_KEY_CHARS"]

OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # load balancers' probes: never need the key
MIN_KEY_CHARS = 16
ENV_KEY = "LLMREC_API_KEY"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_api_key(host: str, key_file: str | os.PathLike | None = None, env: dict | None = None) -> str | None:
    """The key the service requires (None: none required).

    The key comes from ``key_file`` (first line) or the ``LLMREC_API_KEY`` environment variable (never from
    the command line, where ``ps`` shows it).

    Raises:
        ValueError: a non-loopback ``host`` without a key, or a key shorter than 16 characters.
    """
    env = os.environ if env is None else env
    key = None
    if key_file is not None:
        lines = Path(key_file).read_text(encoding="utf-8").splitlines()
        key = lines[0].strip() if lines else ""
    elif env.get(ENV_KEY):
        key = env[ENV_KEY].strip()
    if key is None:
        if not is_loopback(host):
            raise ValueError(f"--host {host}: binding beyond loopback needs an API key (--api-key-file FILE or "
                             f"${ENV_KEY}); clients then send 'Authorization: Bearer <key>'")
        return None
    if len(key) < MIN_KEY_CHARS:
        raise ValueError(f"the API key has {len(key)} characters; use at least {MIN_KEY_CHARS} "
                         "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return key


def bearer_ok(header: str | None, key: str) -> bool:
    """``header`` is ``Bearer <key>`` (constant-time comparison of the key)."""
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode("utf-8", "surrogatepass"),
                                                              key.encode("utf-8"))
