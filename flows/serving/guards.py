"""What stands between the network and the model: a bearer token and a cap on the request body.

Both are plain ASGI middlewares, so a refused request costs no body parsing and no model work. The token
guard is outermost: a caller without the token cannot even make the service read a body.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

TOKEN_ENV = "FLOWTUNE_SERVE_TOKEN"  # set from a Secret in infra/k8s/serve.yaml and infra/compose
MIN_TOKEN_CHARS = 16
OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes of the orchestrator carry no token


class TokenError(ValueError):
    """The token cannot be used; the message says why and how to fix it, in one line."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def read_token(token_file: str | None, host: str) -> str | None:
    """The token from --token-file, else from $FLOWTUNE_SERVE_TOKEN; required when `host` is not loopback."""
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TokenError(f"cannot read --token-file {token_file}: {exc.strerror or exc}") from None
        where = f"--token-file {token_file}"
    else:
        token, where = os.environ.get(TOKEN_ENV, "").strip(), f"${TOKEN_ENV}"
    if not token:
        if is_loopback(host):
            return None
        raise TokenError(f"--host {host} offers the service to the network: give it a token (--token-file FILE or "
                         f"${TOKEN_ENV}; e.g. `openssl rand -hex 32`), or bind 127.0.0.1")
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenError(f"the token in {where} has {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
                         "(e.g. `openssl rand -hex 32`)")
    return token


async def _answer(send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    from starlette.responses import JSONResponse

    await JSONResponse({"detail": detail}, status_code=status, headers=headers)({"type": "http"}, None, send)


class BearerToken:
    """Every path but the probes needs `Authorization: Bearer <token>`; 401 otherwise."""

    def __init__(self, app, token: str):
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if not hmac.compare_digest(given, self.expected):  # constant time: no guessing by timing
            return await _answer(send, 401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                                 {"WWW-Authenticate": "Bearer"})
        return await self.app(scope, receive, send)


class BodyLimit:
    """A body over `limit` bytes is answered 413 without reaching the app: at once when Content-Length says
    so, otherwise (chunked) once the bytes read pass the limit; what is under it is handed on whole."""

    def __init__(self, app, limit: int, advice: str):
        self.app, self.limit, self.advice = app, limit, advice

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:  # the server holds the client to it: no more bytes than declared arrive
            if not declared.isdigit() or int(declared) > self.limit:
                return await self._too_large(send)
            return await self.app(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.limit:
                return await self._too_large(send)
            if not message.get("more_body"):
                break
        return await self.app(scope, _replay(bytes(body), receive), send)

    async def _too_large(self, send):
        await _answer(send, 413, f"request body over {self.limit} bytes; {self.advice}")


def _replay(body: bytes, receive):
    """A `receive` that gives the buffered body once, then whatever the connection says next (disconnect)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
