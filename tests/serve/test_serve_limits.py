"""Limits and admission of the HTTP service, against real uvicorn processes with small limits."""

import json
import socket
import threading
import time

import httpx
import pytest

from serve_bodies import features_body, power_body
from service_process import running_service

pytestmark = pytest.mark.system


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _wait_for(condition, timeout_s: float = 30.0) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def slow_server(model_file):
    """8 transmissions in flight at most; the batcher waits 1.5 s for company, so a batch stays in flight."""
    with running_service(model_file, "--max-inflight", "8", "--max-wait-ms", "1500", "--max-requests", "3") as url:
        yield url


def test_counts_are_checked_before_any_transmission_is_validated(slow_server):
    # 2000 transmissions, every one invalid: refused for their number, with no per-item error
    r = httpx.post(f"{slow_server}/v1/localize/batch", json={"transmissions": [{"features": "x"}] * 2000}, timeout=30)
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == [
        {"field": "transmissions", "message": "2000 transmissions, more than the limit of 1024"}
    ]
    r = httpx.post(f"{slow_server}/v1/localize", json={"features": [{"id": 1}] * 300}, timeout=30)
    assert r.status_code == 413 and r.json()["detail"][0]["field"] == "features", r.text
    # more JSON values than any request needs: refused before the parse
    r = httpx.post(f"{slow_server}/v1/localize", content=b"[" * 600_000, timeout=30)
    assert r.status_code == 413 and r.json()["detail"][0]["field"] == "body" and "JSON" in r.text, r.text


def test_a_batch_is_admitted_whole_or_not_at_all(slow_server, store_rows):
    def batch(n, first):
        return {"transmissions": [power_body(store_rows, (first + k) % 8) for k in range(n)]}

    computed_before = _metric(slow_server, "heimdall_batch_size_sum")
    # more transmissions than the service ever holds at once (--max-inflight 8): splitting is the answer
    too_many = httpx.post(f"{slow_server}/v1/localize/batch", json=batch(9, 0), timeout=30)
    assert too_many.status_code == 413 and "split the batch" in too_many.text, too_many.text
    first: list[httpx.Response] = []
    holder = threading.Thread(
        target=lambda: first.append(httpx.post(f"{slow_server}/v1/localize/batch", json=batch(6, 0), timeout=60))
    )
    holder.start()
    _wait_for(lambda: _metric(slow_server, "heimdall_inflight_transmissions") == 6)
    # 6 in flight, 2 places left: a batch of 3 is refused whole, and none of it is computed
    refused = httpx.post(f"{slow_server}/v1/localize/batch", json=batch(3, 6), timeout=30)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["detail"][0]["field"] == "transmissions" and "no room for 3" in refused.text
    fits = httpx.post(f"{slow_server}/v1/localize/batch", json=batch(2, 6), timeout=60)
    holder.join()
    assert first[0].status_code == 200 and fits.status_code == 200
    # the model computed the two admitted batches, nothing of the refused ones
    assert _metric(slow_server, "heimdall_batch_size_sum") - computed_before == 6 + 2
    assert _metric(slow_server, "heimdall_inflight_transmissions") == 0


def test_requests_in_progress_are_bounded(slow_server, store_rows):
    """--max-requests 3: a fourth request with a body is refused before its body is read; GETs always pass."""
    host, port = slow_server.removeprefix("http://").split(":")
    body = json.dumps(features_body(store_rows, 0)).encode()
    stalled = []
    for _ in range(3):  # bodies that never finish arriving
        s = socket.create_connection((host, int(port)))
        s.sendall(
            b"POST /v1/localize HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:100])
        )
        stalled.append(s)
    try:

        def refused():
            r = httpx.post(f"{slow_server}/v1/localize", json=features_body(store_rows, 0), timeout=30)
            return r.status_code == 429 and r.json()["detail"][0]["field"] == "request"

        _wait_for(refused)
        assert httpx.get(f"{slow_server}/healthz").status_code == 200
        assert httpx.get(f"{slow_server}/readyz").status_code == 200
    finally:
        for s in stalled:
            s.close()
    _wait_for(
        lambda: (
            httpx.post(f"{slow_server}/v1/localize", json=features_body(store_rows, 0), timeout=30).status_code == 200
        )
    )


def _open(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=0.5)


def _read_response(s: socket.socket) -> bytes:
    """One whole HTTP response from `s`: the head, then as many body bytes as its Content-Length says (the head
    and the body may come in separate packets)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, data
        body += chunk
    return head + b"\r\n\r\n" + body


def _seconds_until_closed(s: socket.socket, limit_s: float, trickle: bytes = b"") -> float | None:
    """Seconds until the server closes the connection (None if it is still open after limit_s), sending `trickle`
    every second meanwhile, as a slow client keeping its request head unfinished."""
    t0 = last = time.time()
    while time.time() - t0 < limit_s:
        try:
            if s.recv(65536) == b"":
                return time.time() - t0
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.time() - t0
        if trickle and time.time() - last >= 1.0:
            s.sendall(trickle)
            last = time.time()
    return None


@pytest.mark.system
def test_a_request_head_that_never_completes_is_cut_at_the_header_timeout(model_file):
    from heimdall.serve.settings import ServeSettings

    timeout_s = ServeSettings().header_timeout_s
    with running_service(model_file) as url:  # the defaults
        slow = _open(url)
        slow.sendall(b"POST /v1/localize HTTP/1.1\r\nHost: t\r\n")  # a head begun, then a header line a second
        silent = _open(url)  # a connection that sends nothing at all
        closed_s = _seconds_until_closed(slow, timeout_s + 5, trickle=b"X-Slow: 1\r\n")
        assert closed_s is not None and timeout_s - 0.5 <= closed_s, closed_s
        assert _seconds_until_closed(silent, 2) is not None  # closed by the same timeout meanwhile
        assert httpx.get(f"{url}/healthz").status_code == 200


@pytest.mark.system
def test_connections_at_once_keep_alive_and_slow_bodies_are_bounded(model_file, store_rows):
    flags = ["--limit-concurrency", "4", "--keep-alive-s", "1", "--body-timeout-s", "2"]
    with running_service(model_file, *flags) as url:
        # an answered request's connection is closed once idle for the keep-alive time
        kept = _open(url)
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        closed_s = _seconds_until_closed(kept, 5)
        assert closed_s is not None and closed_s >= 1.0, closed_s
        # a body that stops arriving is answered 408 and its place freed
        body = json.dumps(features_body(store_rows, 0)).encode()
        stalled = _open(url)
        stalled.sendall(
            b"POST /v1/localize HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body[:50])
        )
        stalled.settimeout(10)
        answer = _read_response(stalled)
        assert answer.startswith(b"HTTP/1.1 408") and b'"field":"body"' in answer, answer
        kept.close()
        stalled.close()
        # four connections held open: a fifth is answered 503 whatever it asks
        held = [_open(url) for _ in range(4)]
        try:
            assert httpx.get(f"{url}/healthz", timeout=10).status_code == 503
        finally:
            for s in held:
                s.close()
        _wait_for(lambda: httpx.get(f"{url}/healthz", timeout=10).status_code == 200)
