"""Running the service: a port in use is one line before any model loads; stalled connections are closed."""

from __future__ import annotations

import socket
import threading
import time

import pytest

pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install -e '.[test]')")

from gnnseg.cli import main  # noqa: E402
from gnnseg.seg.sam.modeling.sam import build_sam  # noqa: E402
from gnnseg.seg.serve import server as serving  # noqa: E402
from gnnseg.seg.serve.app import create_app  # noqa: E402
from gnnseg.seg.serve.guard import ServiceAccess  # noqa: E402


def test_a_port_in_use_is_one_line_and_exit_code_2(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        began = time.perf_counter()
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err and "serving" not in err
    assert time.perf_counter() - began < 5  # refused before the model was loaded


def test_access_rules_for_loopback_and_other_addresses():
    local = serving.access_for("127.0.0.1", None, None)
    assert local.token is None and "localhost" in local.allowed_hosts
    remote = serving.access_for("0.0.0.0", None, None)
    assert remote.token and len(remote.token) >= 24 and remote.allowed_hosts == ("*",)
    assert serving.access_for("0.0.0.0", "t", ["scanner.lan"]) == ServiceAccess(("scanner.lan",), "t")


def test_a_connection_that_never_finishes_its_headers_is_closed(monkeypatch):
    monkeypatch.setattr(serving, "HEADER_SECONDS", 0.5)
    sock = serving.listening_socket("127.0.0.1", 0)
    server = serving.server_for(create_app(build_sam("tiny_vit_mini")))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        with socket.create_connection(sock.getsockname()[:2], timeout=5) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
            began = time.monotonic()
            assert slow.recv(1024) == b""                                   # closed by the server
            assert time.monotonic() - began < 3
        with socket.create_connection(sock.getsockname()[:2], timeout=5) as prompt:
            prompt.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert prompt.recv(1024).startswith(b"HTTP/1.1 200")
    finally:
        server.should_exit = True
        thread.join(10)
