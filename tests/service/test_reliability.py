"""No request is lost or left hanging: retirement, deadlines, disconnects, hot swaps and SIGTERM."""

import asyncio
import io
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from PIL import Image

from service.app import create_app
from service.admission import Retired
from service.batching import DecodeBatcher
from service.guard import RequestGuard
from tests.conftest import publish_tiny
from service.local_server import wait_until
from tests.service.conftest import inference_threads_held, make_settings, metric, start_server, threaded_server, with_app

HANG = 5.0  # a future still pending after this long is a request that would hang forever


def batcher(forward=lambda z: z, **kwargs) -> DecodeBatcher:
    return DecodeBatcher(forward, ThreadPoolExecutor(1), **{"max_batch": 64, "max_wait": 0.0, "max_queue_s": 1.0, **kwargs})


def test_rows_taken_while_collecting_a_batch_are_answered_when_retired():
    """The worker holds a row during its max_wait window; retiring then must not drop it."""
    async def body():
        b = batcher(max_wait=0.3)
        request = asyncio.ensure_future(b.decode(torch.ones(1, 2)))
        await asyncio.sleep(0.05)  # the worker took the row and waits for company
        await b.retire(grace=HANG)
        return await asyncio.wait_for(request, HANG)

    assert asyncio.run(body()).sum().item() == 2


def test_rows_still_held_past_the_grace_fail_with_retired_not_silence():
    async def body():
        b = batcher(forward=lambda z: (time.sleep(0.5), z)[1])
        request = asyncio.ensure_future(b.decode(torch.ones(1, 2)))
        queued = asyncio.ensure_future(b.decode(torch.ones(1, 2)))
        await asyncio.sleep(0.05)  # the first is in the forward pass, the second queued behind it
        await b.retire(grace=0.1)
        return await asyncio.wait_for(asyncio.gather(request, queued, return_exceptions=True), HANG)

    results = asyncio.run(body())
    assert all(isinstance(r, Retired) for r in results), results


def test_decode_after_retirement_is_refused_at_once():
    async def body():
        b = batcher()
        await b.retire()
        with pytest.raises(Retired):
            await asyncio.wait_for(b.decode(torch.ones(1, 2)), HANG)

    asyncio.run(body())


def test_retirement_waits_for_the_requests_holding_the_version():
    async def body():
        b = batcher()
        holders = 1
        retiring = asyncio.ensure_future(b.retire(in_use=lambda: holders > 0, grace=HANG))
        await asyncio.sleep(0.1)
        assert not retiring.done()
        holders = 0
        await asyncio.wait_for(retiring, HANG)

    asyncio.run(body())


def test_rows_of_a_cancelled_request_are_dropped_before_the_forward_pass():
    seen, dropped = [], []

    async def body():
        b = batcher(forward=lambda z: (seen.append(len(z)), z)[1], max_wait=0.2, on_drop=dropped.append)
        keep = asyncio.ensure_future(b.decode(torch.ones(3, 2)))
        gone = asyncio.ensure_future(b.decode(torch.ones(5, 2)))
        await asyncio.sleep(0.05)
        gone.cancel()  # the client disconnected while the batch was being collected
        await asyncio.wait_for(keep, HANG)
        await b.retire()

    asyncio.run(body())
    assert seen == [3] and dropped == [5]


def test_a_request_past_its_deadline_gets_a_json_504(served_store):
    app = create_app(make_settings(served_store, request_timeout_s=0.3, cache_mb=0))

    async def body(client):
        with inference_threads_held(app):  # the decode cannot start before the deadline
            r = await client.get("/sample?model=gan&n=1")
        return r, await client.get("/metrics")

    r, metrics = asyncio.run(with_app(app, body))
    assert r.status_code == 504 and r.headers["content-type"] == "application/json"
    assert "deadline" in r.json()["detail"]
    assert metric(metrics.text, 'facegen_requests_total{endpoint="/sample",model="gan",status="504"}') == 1


def face_png(seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(48, 40, 3, generator=g) * 255).to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_hot_swapping_ten_versions_under_load_loses_nothing(served_store):
    """8 clients run /sample and POST /reconstruct on `ae` while 10 new versions are published."""
    server = start_server(served_store.root, env={"FACEGEN_POLL_SECONDS": "0.1", "FACEGEN_MAX_WAIT_MS": "20"})
    stop = threading.Event()
    statuses: list[int] = []
    errors: list[str] = []
    versions: set[str] = set()

    def client(i: int):
        with httpx.Client(base_url=server.url, timeout=30) as c:
            k = 0
            while not stop.is_set():
                k += 1
                try:
                    if (i + k) % 2:
                        r = c.get("/sample", params={"model": "ae", "n": 1 + k % 8, "seed": 1000 * i + k})
                    else:
                        r = c.post("/reconstruct", params={"model": "ae"}, files=[("files", ("f.png", face_png(k), "image/png"))])
                except httpx.HTTPError as e:  # no answer within 30 s, or the connection broke
                    errors.append(repr(e))
                    continue
                statuses.append(r.status_code)
                if r.status_code != 200:
                    errors.append(r.text)
                versions.add(r.headers.get("x-model-version"))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for seed in range(1, 11):  # each new version is published once the last one has answered a request
            time.sleep(0.3)
            version = publish_tiny(served_store, "ae", seed=seed)
            assert wait_until(lambda: str(version) in versions, timeout=30), (version, versions)
        assert wait_until(lambda: len(statuses) > 100, timeout=60)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        output = server.stop()
    assert not [t for t in threads if t.is_alive()], "a client is still waiting for an answer"
    assert not errors, errors[:5]
    assert len(statuses) > 100 and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert {str(v) for v in range(2, 12)} <= versions, versions  # every swap happened under the load
    assert "Traceback" not in output
    print(f"hot swaps: {len(statuses)} requests answered, 10 versions published, {len(versions)} versions served, "
          f"{len(errors)} lost")


def test_sigterm_stops_the_server_within_its_grace_answering_what_is_in_flight(served_store):
    server = start_server(served_store.root, env={"FACEGEN_SHUTDOWN_GRACE_S": "2"})
    answers: list = []

    def client(i):
        try:
            answers.append(httpx.get(f"{server.url}/sample", params={"model": "vae", "n": 64, "seed": i}, timeout=30).status_code)
        except httpx.HTTPError as e:  # refused after the listener closed: fine, never a hang
            answers.append(type(e).__name__)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=20)
    took = time.monotonic() - t0
    for t in threads:
        t.join(timeout=30)
    assert took < 2 + 5, f"the server took {took:.1f} s to exit after SIGTERM"
    assert len(answers) == 16 and all(a in (200, 503) or isinstance(a, str) for a in answers), answers
    assert 500 not in answers


def publish_with_bad_basis(store, name: str) -> int:
    """A version whose PCA basis is one dimension too wide for its network."""
    from models_core.latent import PcaBasis
    from models_core.kinds import MODEL_KINDS, build_model

    config = MODEL_KINDS["vae"].presets["tiny"]
    basis = PcaBasis.fit(torch.randn(64, config.latent_dim + 1))
    return store.publish(name, "vae", config, build_model("vae", config).state_dict(), step=1, extras=basis.to_tensors())


def test_a_broken_version_is_refused_at_load_and_hurts_no_other_model(served_store, caplog):
    import logging

    from fastapi.testclient import TestClient

    caplog.set_level(logging.ERROR, logger="facegen.service")
    publish_with_bad_basis(served_store, "broken")  # its only version: startup must still succeed
    publish_with_bad_basis(served_store, "vae")  # vae v2: v1 must keep serving
    with TestClient(create_app(make_settings(served_store))) as client:
        models = {m["name"]: m["served_version"] for m in client.get("/models").json()["models"]}
        assert models.get("vae") == 1 and "broken" not in models and models.get("gan") == 1
        refusals = [r.getMessage() for r in caplog.records if "refusing" in r.getMessage()]
        assert len(refusals) == 2 and all("PCA basis does not fit" in m for m in refusals), refusals
        assert client.get("/sample?model=vae&n=2").status_code == 200
        r = client.get("/sample?model=vae&version=2")
        assert r.status_code == 404 and "failed to load" in r.json()["error"]
        publish_tiny(served_store, "vae", seed=3)  # v3, good: hot reload goes on past the broken v2
        from service.local_server import wait_until
        assert wait_until(lambda: client.get("/sample?model=vae&n=1").headers["x-model-version"] == "3")


def test_pinned_versions_load_once_off_the_inference_thread_and_stay_bounded(served_store):
    for seed in range(1, 6):
        publish_tiny(served_store, "gan", seed=seed)  # gan v2..v6
    app = create_app(make_settings(served_store, max_old_versions=2, cache_mb=0))
    loads: list[tuple[str, int, str]] = []

    async def body(client):
        registry = app.state.registry
        real_load = registry.store.load

        def load(name, version, device):
            loads.append((name, version, threading.current_thread().name))
            time.sleep(0.1)  # a slow disk: the concurrent requests below overlap this load
            return real_load(name, version, device)

        registry.store.load = load
        same = await asyncio.gather(*(client.get(f"/sample?model=gan&n=1&version=2&seed={s}") for s in range(8)))
        for v in (3, 4, 5, 2):  # cycle through old versions; the LRU holds 2
            assert (await client.get(f"/sample?model=gan&n=1&version={v}")).status_code == 200
        return same, sorted(registry.older), registry

    same, held, registry = asyncio.run(with_app(app, body))
    assert all(r.status_code == 200 for r in same)
    assert [v for _, v, _ in loads].count(2) == 2  # once for the 8 concurrent requests, once after eviction
    assert all(thread.startswith("loader") for _, _, thread in loads), loads
    assert held == [("gan", 2), ("gan", 5)]


def test_old_versions_are_bounded_by_bytes_too(served_store):
    for seed in range(1, 4):
        publish_tiny(served_store, "gan", seed=seed)
    app = create_app(make_settings(served_store, max_old_versions=10, max_old_versions_mb=0))

    async def body(client):
        for v in (2, 3):
            assert (await client.get(f"/sample?model=gan&n=1&version={v}")).status_code == 200
        return dict(app.state.registry.older)

    assert asyncio.run(with_app(app, body)) == {}  # each was served, then evicted by the 0 MiB bound


def raw_get(url: str, target: str) -> socket.socket:
    """A GET sent on a socket of its own, whose answer nobody reads: closing it is a client leaving."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock


def test_requests_abandoned_by_their_clients_are_never_decoded(served_store):
    """Clients that give up while their rows wait in the queue disconnect; the rows are dropped."""
    app = create_app(make_settings(served_store, cache_mb=0))
    with threaded_server(app) as url:
        pool = app.state.registry.workers
        started, release = threading.Semaphore(0), threading.Event()

        def held():  # other work holds every inference thread until the test lets it go: no race with a slow CPU
            started.release()
            release.wait(60)

        def ask(seed, n, timeout):
            return httpx.get(f"{url}/sample", params={"model": "gan", "n": n, "seed": seed}, timeout=timeout).status_code

        def gone() -> float:
            return metric(httpx.get(f"{url}/metrics").text, 'facegen_requests_total{endpoint="/sample",model="gan",status="499"}')

        def waiting() -> float:
            return metric(httpx.get(f"{url}/metrics").text, 'facegen_queue_depth{model="gan"}')

        for _ in range(pool.workers):
            pool.executor.submit(held)
            assert started.acquire(timeout=30)
        try:
            # These queue behind it; once all six wait (an event, not a time: a slow machine only takes
            # longer), their clients hang up.
            clients = [raw_get(url, f"/sample?model=gan&n=5&seed={s}") for s in range(1, 7)]
            assert wait_until(lambda: waiting() == 6, timeout=30)
            for client in clients:
                client.close()
            assert wait_until(lambda: gone() == 6, timeout=30)  # the server has seen them go
        finally:  # a failed check must not leave the inference threads held
            release.set()
        assert ask(99, 2, 30) == 200  # and the server carries on
        text = httpx.get(f"{url}/metrics").text
    assert metric(text, 'facegen_rows_dropped_total{model="gan"}') == 6 * 5
    assert metric(text, 'facegen_rows_decoded_total{model="gan"}') == 2


def guarded(app, timeout: float, receive, send):
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "state": {}}
    return scope, RequestGuard(app, timeout=timeout)(scope, receive, send)


def test_the_guard_answers_504_only_for_its_own_deadline():
    async def raises_timeout(scope, receive, send):
        raise TimeoutError("a socket's ETIMEDOUT")  # the app's own error: the error handlers answer it

    async def request():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def never():
        await asyncio.Event().wait()

    async def body():
        messages = iter([request, never])
        sent = []

        async def send(message):
            sent.append(message)

        _, call = guarded(raises_timeout, 5, lambda: next(messages)(), send)
        with pytest.raises(TimeoutError, match="ETIMEDOUT"):
            await call
        return sent

    assert asyncio.run(body()) == []


def test_a_client_leaving_while_its_504_goes_out_ends_the_request_quietly():
    async def slow(scope, receive, send):
        await asyncio.sleep(10)

    async def body():
        left = asyncio.Event()
        first = True

        async def receive():
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": b"", "more_body": False}
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message):  # the client stopped reading, then leaves while the 504 is being written
            left.set()
            await asyncio.sleep(1)

        scope, call = guarded(slow, 0.05, receive, send)
        await asyncio.wait_for(call, HANG)  # returns, no CancelledError out of the guard
        return asyncio.current_task().cancelling()

    assert asyncio.run(body()) == 0
