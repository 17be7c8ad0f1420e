"""Hostile clients against a real server: slow bodies and slow headers are cut off at
their deadlines without taking the capacity other clients are served from, and feedback
takes only the credentials it was configured for."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from directrec.serve.tokens import issue
from tests.serve.conftest import Server

KEY = "a-test-key-of-enough-bytes"
SHARED = "shared-backend-token"
TIMEOUT = 1.0  # header and body deadline of the server under test


@pytest.fixture(scope="module")
def hostile(world):
    db, reg = world
    s = Server(
        reg,
        db,
        "--max-inflight",
        "1",
        "--header-timeout",
        str(TIMEOUT),
        "--body-timeout",
        str(TIMEOUT),
        "--token-key",
        KEY,
        "--feedback-token",
        SHARED,
    )
    s.user, s.item = s.client.get("/v1/users").json()["users"][0], None
    s.item = s.client.get(f"/v1/users/{s.user}").json()["history"][0]["item_id"]
    yield s
    s.stop()


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed."""
    got = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return got, time.monotonic()
        got += chunk


def test_slow_bodies_time_out_without_holding_an_admission_slot(hostile):
    """Five connections send their headers and 5 of 31 body bytes, then nothing: each is
    answered 408 and closed at the body deadline, and meanwhile list requests (one slot:
    --max-inflight 1) keep answering 200, never 503."""
    head = (
        b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 31\r\n\r\n"
    )
    slow = [connect(hostile) for _ in range(5)]
    start = time.monotonic()
    for sock in slow:
        sock.sendall(head + b'{"eve')
    results: list[tuple[bytes, float]] = [(b"", 0.0)] * len(slow)

    def wait(n: int) -> None:
        results[n] = read_until_closed(slow[n])

    threads = [threading.Thread(target=wait, args=(n,)) for n in range(len(slow))]
    for t in threads:
        t.start()
    statuses = []
    while time.monotonic() - start < TIMEOUT * 0.8:  # all slow bodies are still pending
        r = hostile.client.get(f"/v1/users/{hostile.user}/recommendations", params={"k": 5})
        statuses.append(r.status_code)
    for t in threads:
        t.join(10)
    assert statuses and set(statuses) == {200}, statuses
    for got, closed in results:
        assert got.startswith(b"HTTP/1.1 408"), got[:80]
        assert b"connection: close" in got.lower()
        assert TIMEOUT * 0.9 <= closed - start < TIMEOUT + 2.0
    for sock in slow:
        sock.close()
    # The service is whole afterwards: a complete request on the same path works.
    r = hostile.client.post(
        "/v1/feedback",
        json={"events": [{"user_id": hostile.user, "item_id": hostile.item, "type": "like"}]},
        headers={"Authorization": f"Bearer {SHARED}"},
    )
    assert r.status_code == 200, r.text


def test_slow_headers_and_silent_connections_are_closed_at_the_header_deadline(hostile):
    """Three connections send one header line per 0.4 s (they would go on for 4 s), one
    sends nothing: all are answered 408 and closed at the header deadline."""
    socks = [connect(hostile) for _ in range(4)]
    start = time.monotonic()
    results: list[tuple[bytes, float]] = [(b"", 0.0)] * len(socks)

    def trickle(n: int) -> None:
        sock = socks[n]
        try:
            if n < 3:
                sock.sendall(b"GET /healthz HTTP/1.1\r\n")
                for i in range(10):
                    time.sleep(0.4)
                    sock.sendall(f"X-Slow-{i}: {i}\r\n".encode())
        except OSError:  # the server closed it: what this test wants
            pass

    def wait(n: int) -> None:
        results[n] = read_until_closed(socks[n])

    threads = [threading.Thread(target=f, args=(n,)) for n in range(4) for f in (trickle, wait)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for got, closed in results:
        assert got.startswith(b"HTTP/1.1 408"), got[:80]
        assert TIMEOUT * 0.9 <= closed - start < TIMEOUT + 1.5
    for sock in socks:
        sock.close()
    assert hostile.client.get("/healthz").status_code == 200  # a prompt client is served


def post_as(server: Server, token: str | None, *users: str):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    events = [{"user_id": u, "item_id": server.item, "type": "click"} for u in users]
    return server.client.post("/v1/feedback", json={"events": events}, headers=headers)


def test_per_user_tokens_post_for_their_own_user_only(hostile):
    key, user = KEY.encode(), hostile.user
    other = next(u for u in hostile.client.get("/v1/users").json()["users"] if u != user)
    good = issue(key, user, expires_in=600)
    assert post_as(hostile, good, user).status_code == 200
    assert post_as(hostile, issue(key, user), user, user).json()["stored"] == 2  # no expiry

    r = post_as(hostile, good, user, other)  # one event for someone else: nothing stored
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["status"] == 403 and err["users"] == [other] and user in err["message"]

    expired = issue(key, user, expires_in=5, now=time.time() - 60)
    r = post_as(hostile, expired, user)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]

    parts = good.split(".")
    forged = [  # another user's id, a later expiry, a changed signature, another key
        ".".join([issue(key, other).split(".")[0], *parts[1:]]),
        ".".join([parts[0], str(int(parts[1]) + 1000), parts[2]]),
        ".".join([*parts[:2], ("A" if parts[2][0] != "A" else "B") + parts[2][1:]]),
        issue(b"another-key-of-enough-bytes", user),
        "not-a-token",
    ]
    for token in forged:
        r = post_as(hostile, token, user)
        assert r.status_code == 401, (token, r.text)
        assert r.headers["www-authenticate"] == "Bearer"

    r = post_as(hostile, None, user)  # missing
    assert r.status_code == 401 and r.json()["error"]["status"] == 401
    # The shared token of a trusted backend still posts for anyone.
    assert post_as(hostile, SHARED, user, other).status_code == 200
