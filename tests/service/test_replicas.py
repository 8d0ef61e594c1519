"""Several replicas on one checkpoint root, as real processes: the same bytes, new versions together, and a
rolling restart behind nginx under wrk load that fails no request."""

import shutil
import signal

import httpx
import pytest

from bench.rolling_restart import replicas_behind_nginx, rolling_restart
from tests.conftest import publish_tiny
from service.local_server import wait_until
from tests.service.conftest import start_server

POLL_S = 0.5


def test_replicas_answer_alike_and_serve_a_new_version_within_the_poll_interval(served_store):
    env = {"FACEGEN_POLL_SECONDS": str(POLL_S), "FACEGEN_PRECISION": "fp32"}
    servers = [start_server(served_store.root, env) for _ in range(2)]
    try:
        def get(server, **params):
            r = httpx.get(f"{server.url}/sample", params={"model": "vae", "n": 4, "seed": 7, **params}, timeout=30)
            assert r.status_code == 200, r.text
            return r

        first = [get(s) for s in servers]
        assert first[0].content == first[1].content  # a CDN may cache either replica's answer
        assert first[0].headers["etag"] == first[1].headers["etag"]
        pinned = [get(s, version=1) for s in servers]

        version = publish_tiny(served_store, "vae", seed=1)
        def serves(server) -> bool:  # a 503 while the old version retires is a "not yet"
            r = httpx.get(f"{server.url}/sample", params={"model": "vae", "n": 4, "seed": 7}, timeout=30)
            return r.status_code == 200 and int(r.headers["x-model-version"]) == version

        for server in servers:  # each polls the root every POLL_S; the margin is for a loaded CI machine
            assert wait_until(lambda: serves(server), timeout=POLL_S + 5)
        latest = [get(s) for s in servers]
        assert latest[0].content == latest[1].content and latest[0].headers["etag"] == latest[1].headers["etag"]
        assert latest[0].content != first[0].content

        for server, before in zip(servers, pinned):  # a pinned version never changes
            again = get(server, version=1)
            assert again.content == before.content and again.headers["etag"] == before.headers["etag"]
            assert again.headers["x-model-version"] == "1"
    finally:
        for server in servers:
            server.stop()


def test_readiness_turns_503_at_sigterm_while_requests_are_still_answered(served_store):
    server = start_server(served_store.root, {"FACEGEN_DRAIN_S": "5"})
    try:
        server.proc.send_signal(signal.SIGTERM)
        assert wait_until(lambda: httpx.get(f"{server.url}/readyz", timeout=5).status_code == 503, timeout=1)
        assert httpx.get(f"{server.url}/readyz", timeout=5).json()["status"] == "draining"
        assert httpx.get(f"{server.url}/sample", params={"model": "vae", "n": 1}, timeout=30).status_code == 200
        server.proc.wait(timeout=5 + 10 + 5)  # drain, then the shutdown grace
    finally:
        server.stop()


@pytest.mark.skipif(shutil.which("nginx") is None or shutil.which("wrk") is None,
                    reason="nginx and wrk (Debian packages) are not both installed (.ci/run installs them)")
def test_a_rolling_restart_of_two_replicas_behind_nginx_fails_no_request(served_store):
    # A slow CI machine may leave one replica with all the load for a while: it queues, it does not refuse (503).
    env = {"FACEGEN_SHUTDOWN_GRACE_S": "5", "FACEGEN_DRAIN_S": "0.5", "FACEGEN_PRECISION": "fp32", "FACEGEN_MAX_QUEUE_S": "30"}
    with replicas_behind_nginx(served_store.root, env) as (url, replicas):
        restarted = [r.proc.pid for r in replicas]
        result = rolling_restart(url, replicas, "/sample?model=vae&n=4", concurrency=8, pause_s=1.0)
        assert all(r.proc.pid not in restarted for r in replicas)  # both really went down and came back
    assert result["failures"] == 0, result
    assert result["requests"] > 100, result  # the load ran all through the roll
