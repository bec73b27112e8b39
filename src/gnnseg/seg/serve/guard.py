"""What a request must pass before the service reads it: its size, its Host and Origin, and the token.

Both checks are plain ASGI middleware, so they run before FastAPI parses (and spools to disk) a multipart body.

- :class:`BodyLimit`: a body is refused with 413 from its ``Content-Length`` when that is over the limit, and
  otherwise counted as it streams in and cut off at the limit, so no more than the limit is ever read.
- :class:`RequestGuard`: the threat model is a user's own browser. Any web page the user visits can send requests
  to a server on ``localhost``: a multipart POST needs no CORS preflight, and DNS rebinding lets a page's own host
  name resolve to 127.0.0.1. So the ``Host`` header must name an allowed host (default: the bind address and the
  loopback names), a state-changing request that carries an ``Origin`` must come from an allowed host, and where a
  token is set every ``/v1`` request must carry it (``Authorization: Bearer TOKEN``). The page and its static
  files hold no data and are served without the token; the page reads it from its URL's ``#token=`` fragment,
  which browsers never send to a server.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class ServiceAccess:
    """Who may use the service: the host names it answers to, and the token every API request must carry."""

    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    """``*`` answers to any host name (then a token is the only protection)."""
    token: str | None = None


def is_loopback(host: str) -> bool:
    return host.strip("[]") in LOOPBACK_HOSTS


def error_body(status: int, message: str) -> dict[str, dict[str, Any]]:
    """The service's JSON error body, for every refusal and error it answers."""
    return {"error": {"status": status, "message": message}}


async def refuse(send: Send, status: int, message: str) -> None:
    """Answer with the service's JSON error body, before the application sees the request."""
    body = json.dumps(error_body(status, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class BodyLimitExceeded(Exception):
    """Raised into the application when a body streams past the limit or stalls."""


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` without reading more than that, and bodies that stall for
    ``idle_seconds`` between two chunks (408)."""

    def __init__(self, app: ASGIApp, max_bytes: int, idle_seconds: float = 30.0) -> None:
        self.app, self.max_bytes, self.idle_seconds = app, max_bytes, idle_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await refuse(send, 413, f"the request body ({declared} bytes) exceeds the limit of {self.max_bytes:,} "
                                    "bytes")
            return
        received = 0
        refusal: tuple[int, str] | None = None
        answered = body_done = False

        async def counted_receive() -> Message:
            nonlocal received, refusal, body_done
            if body_done:  # later calls wait for a disconnect, however long the answer takes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.idle_seconds)
            except TimeoutError:
                refusal = (408, f"the request body stalled for {self.idle_seconds:g} s")
                raise BodyLimitExceeded from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    refusal = (413, f"the request body exceeds the limit of {self.max_bytes:,} bytes")
                    raise BodyLimitExceeded
            return message

        async def answer(message: Message) -> None:
            # once the body is refused, whatever the application makes of the cut-off body (a parse error) is
            # replaced by the refusal
            nonlocal answered
            if refusal is None:
                await send(message)
            elif not answered:
                answered = True
                await refuse(send, *refusal)

        try:
            await self.app(scope, counted_receive, answer)
        except BodyLimitExceeded:
            pass
        if refusal is not None and not answered:
            await refuse(send, *refusal)


class RequestGuard:
    """Host allow-list, Origin check on state-changing requests, and an optional bearer token on ``/v1``."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str], token: str | None = None) -> None:
        self.app = app
        self.allowed_hosts = {host.strip("[]").lower() for host in allowed_hosts}
        self.token = token

    def host_allowed(self, host: str | None) -> bool:
        if "*" in self.allowed_hosts:
            return True
        if not host:
            return False
        name = urlsplit(f"//{host}").hostname or ""
        return name.lower() in self.allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if not self.host_allowed(host):
            allowed = ", ".join(sorted(self.allowed_hosts))
            await refuse(send, 421, f"host {host!r} is not served here (allowed: {allowed}; start the service with "
                                    "--allowed-host to add one)")
            return
        origin = _header(scope, b"origin")
        if scope["method"] in STATE_CHANGING and origin is not None:
            if origin == "null":
                await refuse(send, 403, "requests from an opaque origin (a sandboxed page or a file) are not "
                                        "accepted")
                return
            if not self.host_allowed(urlsplit(origin).netloc):
                await refuse(send, 403, f"requests from the web page at {origin} are not accepted")
                return
        if self.token is not None and scope["path"].startswith("/v1"):
            given = _header(scope, b"authorization") or ""
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                await refuse(send, 401, "this service needs its token: send 'Authorization: Bearer TOKEN' (the web "
                                        "page takes it from the address the server printed, after #token=)")
                return
        await self.app(scope, receive, send)
