"""Running the service: bind first, then announce; close stalled connections; cap how many are open.

uvicorn closes an idle keep-alive connection after a few seconds, but waits forever for a request whose headers
arrive a byte at a time (the "slow loris"), so :class:`HeaderTimeoutProtocol` closes a connection that has not
finished its request headers within :data:`HEADER_SECONDS`; a body that stalls between chunks is refused by
:class:`~gnnseg.seg.serve.guard.BodyLimit`'s read timeout. ``limit_concurrency`` answers 503 beyond that many
open connections and requests.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import sys

from uvicorn import Config, Server
from uvicorn.protocols.http.h11_impl import H11Protocol

from gnnseg.seg.serve.guard import ServiceAccess, is_loopback

HEADER_SECONDS = 10.0
MAX_CONNECTIONS = 64


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request headers take over :data:`HEADER_SECONDS`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self.loop.call_later(HEADER_SECONDS, self._close_if_no_request)

    def _close_if_no_request(self) -> None:
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and not self.transport.is_closing():
            self.transport.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``; an address in use is one clear :class:`OSError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    return sock


def access_for(host: str, token: str | None, allowed_hosts: list[str] | None) -> ServiceAccess:
    """Loopback: the loopback names (and ``host``) without a token unless one is given. Any other address: a token
    always (a random one when none is given), and any host name unless ``allowed_hosts`` names them."""
    if is_loopback(host):
        hosts = (*ServiceAccess().allowed_hosts, host, *(allowed_hosts or ()))
        return ServiceAccess(allowed_hosts=hosts, token=token)
    return ServiceAccess(allowed_hosts=tuple(allowed_hosts or ("*",)), token=token or secrets.token_urlsafe(24))


def serve(app, sock: socket.socket, access: ServiceAccess) -> None:
    """Print where the page is (with its token), then serve on the bound ``sock`` until Ctrl+C."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    address = f"http://{shown}:{port}/" + (f"#token={access.token}" if access.token else "")
    print(f"gnnseg: serving {address} (API documentation at /docs); Ctrl+C stops", file=sys.stderr, flush=True)
    server_for(app).run(sockets=[sock])


def server_for(app) -> Server:
    """A uvicorn server for ``app`` with the stalled-connection timeouts and the connection cap."""
    return Server(Config(app, log_level="warning", http=HeaderTimeoutProtocol, limit_concurrency=MAX_CONNECTIONS,
                         timeout_keep_alive=5))
