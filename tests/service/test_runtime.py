"""Batching under concurrency, backpressure, hot reload, corrupt versions, and a real server."""

import asyncio
import gc
import logging
import os
import shutil
import signal
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from models_core.checkpoint import WEIGHTS_FILE, CheckpointStore
from service.app import create_app
from service.admission import QueueFull, Retired, RowBudget
from service.batching import DecodeBatcher
from service.workers import InferencePool
from tests.conftest import publish_tiny
from service.local_server import wait_until
from tests.service.conftest import budget_spent, inference_threads_held, make_settings, metric, record_entries, until, with_app


def test_concurrent_requests_are_batched_and_identical_to_single_ones(served_store):
    app = create_app(make_settings(served_store, max_wait_ms=50, cache_mb=0))

    async def body(client):
        single = (await client.get("/sample?model=vae&n=1&seed=5")).content
        responses = await asyncio.gather(*(client.get(f"/sample?model=vae&n=1&seed={s}") for s in range(32)))
        return single, responses, (await client.get("/metrics")).text

    single, responses, text = asyncio.run(with_app(app, body))
    assert all(r.status_code == 200 for r in responses)
    assert responses[5].content == single  # batching does not change the bytes
    forward_passes = metric(text, 'facegen_batches_total{model="vae"}')
    assert forward_passes < 32 / 2, f"33 requests took {forward_passes} forward passes"
    assert metric(text, 'facegen_batch_rows_count{model="vae"}') == forward_passes
    assert metric(text, 'facegen_batch_rows_sum{model="vae"}') == 33


def sleeping(seconds: float):
    """A forward pass that takes `seconds` and returns its input."""
    return lambda z: (time.sleep(seconds), z)[1]


def test_batcher_admits_by_rows_not_requests():
    async def body():
        # Before any pass has been timed, and at max_queue_s 0, the budget is four full batches: 4 rows.
        batcher = DecodeBatcher(sleeping(0.3), ThreadPoolExecutor(1), max_batch=1, max_wait=0, max_queue_s=0)
        first = asyncio.ensure_future(batcher.decode(torch.zeros(1, 2)))
        await asyncio.sleep(0.05)  # the worker takes it and blocks in forward: 1 row pending
        queued = [asyncio.ensure_future(batcher.decode(torch.ones(1, 2))) for _ in range(3)]
        await asyncio.sleep(0)
        assert batcher.budget.pending_rows == 4
        with pytest.raises(QueueFull):  # one more row is over the budget
            await batcher.decode(torch.ones(1, 2))
        results = await asyncio.gather(first, *queued)
        assert batcher.budget.pending_rows == 0

        big = asyncio.ensure_future(batcher.decode(torch.ones(3, 2)))  # idle: admitted whatever its size
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):  # 3 pending + 2 > 4: refused, though it is only the second request
            await batcher.decode(torch.ones(2, 2))
        small = await batcher.decode(torch.ones(1, 2))  # 3 + 1 fits
        await big
        await batcher.retire()
        return results, small

    results, small = asyncio.run(body())
    assert [r.sum().item() for r in results] == [0, 2, 2, 2] and small.sum().item() == 2


def test_the_row_budget_follows_the_measured_decode_rate():
    async def body():
        batcher = DecodeBatcher(sleeping(0.05), ThreadPoolExecutor(1), max_batch=2, max_wait=0, max_queue_s=2.0)
        for _ in range(5):
            await batcher.decode(torch.ones(20, 2))  # 20 rows in ~50 ms: ~400 rows/s
        await batcher.retire()
        return batcher

    batcher = asyncio.run(body())
    assert 100 < batcher.budget.rows_per_s <= 400
    assert batcher.budget.rows == int(batcher.budget.rows_per_s * 2.0)


def test_full_queue_answers_503_with_retry_after(served_store):
    app = create_app(make_settings(served_store, max_batch=1, max_queue_s=0, max_wait_ms=0, cache_mb=0))

    async def body(client):
        with inference_threads_held(app) as release:  # the 4 rows of the budget wait; the other 2 are refused
            asks = [asyncio.ensure_future(client.get(f"/sample?model=gan&n=1&seed={s}")) for s in range(6)]
            await until(lambda: sum(a.done() for a in asks) == 2)
            release.set()
            return await asyncio.gather(*asks)

    responses = asyncio.run(with_app(app, body))
    busy = [r for r in responses if r.status_code == 503]
    assert len(busy) == 2 and sum(r.status_code == 200 for r in responses) == 4
    assert int(busy[0].headers["retry-after"]) >= 1 and "busy" in busy[0].json()["error"]


def test_a_saturated_model_is_refused_before_routing_and_others_still_served(served_store):
    app = create_app(make_settings(served_store, shed_pace_ms=0))
    entered = record_entries(app)

    async def body(client):
        with budget_spent(app.state.registry.latest["gan"]):
            busy = await client.get("/sample?n=1", headers={"X-Request-ID": "req-7"})  # gan is the default model
            pinned_busy = await client.get("/latent-grid?model=gan&version=1")
            other = await client.get("/sample?model=vae&n=1")
            unknown = await client.get("/sample?model=nope")
        # the backlog drained: served again
        again = await client.get("/sample?model=gan&n=1")
        return busy, pinned_busy, other, unknown, again, (await client.get("/metrics")).text

    busy, pinned_busy, other, unknown, again, metrics = asyncio.run(with_app(app, body))
    assert busy.status_code == pinned_busy.status_code == 503
    assert "busy" in busy.json()["error"] and int(busy.headers["retry-after"]) >= 1
    assert busy.headers["x-request-id"] == "req-7"
    assert other.status_code == 200 and unknown.status_code == 404 and again.status_code == 200
    assert entered.count(("GET", "/sample")) == 3 and ("GET", "/latent-grid") not in entered  # refused before the stack
    assert metric(metrics, 'facegen_requests_total{endpoint="/sample",model="gan",status="503"}') == 1


def test_refusals_skip_the_whole_stack_but_not_the_method_answers(served_store):
    app = create_app(make_settings(served_store, shed_pace_ms=0))
    entered = record_entries(app)

    async def body(client):
        with budget_spent(app.state.registry.latest["gan"]):
            busy = await client.get("/sample?model=gan&n=1")
            options = await client.options("/sample?model=gan")
            wrong = await client.post("/sample?model=gan")
        return busy, options, wrong

    busy, options, wrong = asyncio.run(with_app(app, body))
    assert busy.status_code == 503
    assert options.status_code == 204 and wrong.status_code == 405
    assert entered == [("OPTIONS", "/sample"), ("POST", "/sample")]  # the refusal never entered FastAPI's stack


def test_many_refused_clients_are_answered_no_faster_than_the_shed_rate(served_store):
    app = create_app(make_settings(served_store, shed_pace_ms=0, shed_rate=20))

    async def timed(request):
        start = time.perf_counter()
        response = await request
        return response.status_code, time.perf_counter() - start

    async def body(client):
        with budget_spent(app.state.registry.latest["gan"]):
            answers = await asyncio.gather(*(timed(client.get(f"/sample?model=gan&n=1&seed={i}")) for i in range(10)))
        return answers, app.admission.held

    answers, held = asyncio.run(with_app(app, body))
    assert {status for status, _ in answers} == {503} and held == 0
    waits = sorted(seconds for _, seconds in answers)
    assert waits[0] < 0.2  # alone, a refusal is not held (pace 0)
    assert waits[-1] >= 9 / 20 - 0.05  # the tenth, with nine already held: 9 / (20 a second)


def test_admission_reads_model_and_version_the_way_the_routes_do(served_store):
    app = create_app(make_settings(served_store, shed_pace_ms=0))

    async def body(client):
        with budget_spent(app.state.registry.latest["gan"]):
            return {q: (await client.get(f"/sample?{q}")).status_code for q in (
                "n=1&model=g%61n", "n=1&model=", "n=1&mymodel=vae", "n=1&model=vae", "n=1&model=gan&version=1",
                "n=1&model=gan&version=01")}

    statuses = asyncio.run(with_app(app, body))
    assert statuses["n=1&model=g%61n"] == 503  # decoded, as FastAPI does
    assert statuses["n=1&model="] == statuses["n=1&mymodel=vae"] == 503  # empty or absent: the default model, gan
    assert statuses["n=1&model=vae"] == 200
    assert statuses["n=1&model=gan&version=1"] == 503  # the served version, pinned
    assert statuses["n=1&model=gan&version=01"] != 200  # not the served version's spelling: the route answers


def test_a_refusal_is_held_no_longer_than_its_retry_after_nor_its_client(served_store):
    app = create_app(make_settings(served_store, shed_pace_ms=30_000))

    async def body(client):
        gan = app.state.registry.latest["gan"]
        gan.budget.observe_pass(rows=10**6, seconds=1.0, beside=1)  # a fast model: a full queue is 1 s of work, Retry-After 1
        with budget_spent(gan):
            start = time.perf_counter()
            capped = await client.get("/sample?model=gan&n=1")
            capped_s = time.perf_counter() - start
            sent, gone_s = await abandoned_refusal(app)
        return capped, capped_s, sent, gone_s, app.admission.held, (await client.get("/metrics")).text

    capped, capped_s, sent, gone_s, held, metrics = asyncio.run(with_app(app, body))
    assert capped.status_code == 503 and capped.headers["retry-after"] == "1" and capped_s < 2  # not the 30-s pace
    assert sent == [] and gone_s < 0.5 and held == 0  # the client left: its hold ended, nothing was answered
    assert metric(metrics, 'facegen_requests_total{endpoint="/sample",model="gan",status="499"}') == 1


async def abandoned_refusal(app) -> tuple[list, float]:
    """A request whose client leaves after 50 ms: what it was sent, and how long it took."""
    async def leaves_after_50_ms():
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/sample", "query_string": b"model=gan", "headers": []}
    start = time.perf_counter()
    await app(scope, leaves_after_50_ms, send)
    return sent, time.perf_counter() - start


def test_versions_retired_after_start_up_are_still_collected(served_store):
    app = create_app(make_settings(served_store, retire_grace_s=0))

    async def body(client):
        old = weakref.ref(app.state.registry.latest["gan"])
        publish_tiny(served_store, "gan", seed=1)
        await app.state.registry.refresh()
        for _ in range(100):
            await asyncio.sleep(0.02)
            gc.collect()
            if old() is None:
                return gc.get_freeze_count(), True
        return gc.get_freeze_count(), False

    frozen, collected = asyncio.run(with_app(app, body))
    assert frozen > 10_000 and collected  # the start-up heap is frozen, and a hot swap still frees the old version


def test_a_saturated_model_still_answers_revalidation_from_what_it_has(served_store):
    app = create_app(make_settings(served_store, shed_pace_ms=300))

    async def timed(request):
        start = time.perf_counter()
        response = await request
        response.elapsed_s = time.perf_counter() - start
        return response

    async def body(client):
        first = await client.get("/sample?model=gan&n=2&seed=4")
        with budget_spent(app.state.registry.latest["gan"]):
            unchanged = await client.get("/sample?model=gan&n=2&seed=4", headers={"If-None-Match": first.headers["etag"]})
            stale = await client.get("/sample?model=gan&n=2&seed=4", headers={"If-None-Match": '"other"'})  # a cache hit
            new = await timed(client.get("/sample?model=gan&n=2&seed=5", headers={"If-None-Match": '"other"'}))  # must decode
            plain = await timed(client.get("/sample?model=gan&n=2&seed=4"))
        return first, unchanged, stale, new, plain

    first, unchanged, stale, new, plain = asyncio.run(with_app(app, body))
    assert unchanged.status_code == 304 and unchanged.headers["etag"] == first.headers["etag"]
    assert stale.status_code == 200 and stale.content == first.content
    assert new.status_code == 503 and plain.status_code == 503  # refused: early, or by the route's admission
    assert new.elapsed_s >= 0.3 and plain.elapsed_s >= 0.3  # both refusals held for the pace


def test_refusals_last_until_the_backlog_falls_below_90_percent():
    budget = RowBudget(max_batch=5, max_queue_s=0)  # four batches: 20 rows
    with budget.admit(17), budget.admit(1):
        with pytest.raises(QueueFull):
            with budget.admit(3):  # 18 + 3 > 20
                pass
        with pytest.raises(QueueFull):  # 18 + 1 would fit, but the model is refusing until below 18
            with budget.admit(1):
                pass
    with budget.admit(17), budget.admit(1):  # below 90% again: admitted
        assert budget.pending_rows == 18
    assert budget.pending_rows == 0


def test_freed_heap_is_handed_back_when_a_queue_drains_and_now_and_then_under_load(monkeypatch):
    import service.memory as memory

    trims = []
    monkeypatch.setattr(memory, "MALLOC_TRIM", lambda pad: trims.append(pad))
    clock = [100.0]
    trim = memory.HeapTrimmer(idle_interval=5, busy_interval=30, clock=lambda: clock[0])
    trim(idle=True)  # too soon after start
    clock[0] += 6
    trim(idle=False)  # busy: not yet
    trim(idle=True)
    trim(idle=True)  # again within 5 s: no
    clock[0] += 31
    trim(idle=False)
    assert len(trims) == 2

    async def body():  # and the batcher reports each pass, idle when its queue is empty
        seen = []
        b = DecodeBatcher(lambda z: z, ThreadPoolExecutor(1), max_batch=4, max_wait=0, max_queue_s=1, after_pass=seen.append)
        await b.decode(torch.ones(1, 2))
        await asyncio.sleep(0.05)
        await b.retire()
        return seen

    assert asyncio.run(body()) == [True]


def test_request_ids_are_echoed_only_when_well_formed(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc-1.2:3"}).headers["x-request-id"] == "abc-1.2:3"
    assert "x-request-id" not in client.get("/healthz", headers={"X-Request-ID": "a\tb" + "x" * 80}).headers


def test_new_versions_are_picked_up_and_corrupt_ones_refused(served_store, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="facegen.service")
    with TestClient(create_app(make_settings(served_store))) as client:
        v1 = client.get("/sample?model=gan&n=4")
        assert v1.headers["x-model-version"] == "1"

        publish_tiny(served_store, "gan", seed=1)
        assert wait_until(lambda: client.get("/sample?model=gan&n=4").headers["x-model-version"] == "2")
        v2 = client.get("/sample?model=gan&n=4")
        assert v2.content != v1.content
        assert client.get("/sample?model=gan&n=4&version=1").content == v1.content  # old versions stay reachable

        # A version that fails verification appears atomically (as a publish would); it is refused.
        staging = CheckpointStore(tmp_path / "staging")
        for seed in (2, 3, 4):
            publish_tiny(staging, "gan", seed=seed)
        bad = staging.path("gan", 3)
        weights = bytearray((bad / WEIGHTS_FILE).read_bytes())
        weights[-10] ^= 0xFF
        (bad / WEIGHTS_FILE).write_bytes(bytes(weights))
        shutil.copytree(bad, served_store.root / "gan" / ".incoming")
        os.rename(served_store.root / "gan" / ".incoming", served_store.path("gan", 3))
        assert wait_until(lambda: any("refusing gan v3" in r.getMessage() for r in caplog.records))
        assert "checksum mismatch" in caplog.text
        assert client.get("/sample?model=gan&n=4").headers["x-model-version"] == "2"
        r = client.get("/sample?model=gan&n=4&version=3")
        assert r.status_code == 404 and "failed to load" in r.json()["error"]
        models = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert models["gan"]["served_version"] == 2


def test_real_server_over_http(live_server):
    base = live_server.url
    r = httpx.get(f"{base}/sample", params={"model": "vae", "n": 4}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    assert httpx.get(f"{base}/sample", params={"n": 1000}, timeout=30).status_code == 422
    assert "facegen" in httpx.get(f"{base}/", timeout=30).text
    output = live_server.stop()
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status reports it.
    assert live_server.proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output and "serving vae v1" in output and "Traceback" not in output


def test_without_a_wait_a_lone_request_goes_at_once_and_a_queue_batches_itself():
    sizes = []

    async def body():
        def slow(z):
            sizes.append(len(z))
            time.sleep(0.2)
            return z

        batcher = DecodeBatcher(slow, ThreadPoolExecutor(1), max_batch=64, max_wait=0, max_queue_s=1)
        first = asyncio.ensure_future(batcher.decode(torch.zeros(1, 2)))
        await asyncio.sleep(0.05)
        assert sizes == [1]  # decoding already: nobody waited for company
        rest = [asyncio.ensure_future(batcher.decode(torch.ones(2, 2))) for _ in range(4)]
        await asyncio.gather(first, *rest)
        await batcher.retire()

    asyncio.run(body())
    assert sizes == [1, 8]  # the four that queued during the first pass share the next


def test_the_event_loop_yields_the_cpu_to_decoding(served_store):
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with TestClient(create_app(make_settings(served_store, loop_nice=5))) as client:
        loop_thread = client.portal.call(threading.get_native_id)
        inference_thread = client.app.state.registry.workers.executor.submit(threading.get_native_id).result()
        assert os.getpriority(os.PRIO_PROCESS, loop_thread) == min(19, base + 5)
        assert os.getpriority(os.PRIO_PROCESS, inference_thread) == base  # started before the loop was lowered
        assert client.get("/sample?model=gan&n=2").status_code == 200


def test_passes_run_side_by_side_each_on_its_share_of_the_cores():
    """Two inference threads decode two batches at once; a pass alone gets every core, a pass
    beside another its share, set for its own thread only."""
    pool = InferencePool(workers=2, threads=2)
    both_in, threads_seen = threading.Barrier(2, timeout=10), []

    def forward(z):
        threads_seen.append(torch.get_num_threads())
        both_in.wait()  # returns only once a second pass runs at the same time
        return z

    async def body():
        b = DecodeBatcher(forward, pool.executor, max_batch=2, max_wait=0, max_queue_s=1, parallel=2,
                          forward_pass=pool.forward_pass)
        out = await asyncio.wait_for(asyncio.gather(b.decode(torch.ones(2, 3)), b.decode(2 * torch.ones(2, 3))), 20)
        await b.retire()
        return out, b.idle

    main_threads = torch.get_num_threads()
    (first, second), idle = asyncio.run(body())
    pool.shutdown()
    assert first.sum() == 6 and second.sum() == 12 and idle
    assert sorted(threads_seen) == [1, 2]  # the first pass started alone, the second beside it
    assert torch.get_num_threads() == main_threads  # other threads keep theirs
    assert pool.threads_for_pass(1) == 2 and pool.threads_for_pass(2) == 1


def passes_seen_while_held(first_rows: int, then: list[int], max_batch: int = 16, min_rows_beside: int = 4):
    """Batch sizes passed to forward while a first pass of `first_rows` rows is held, after requests
    of `then` rows each arrive one by one; every request is answered once the pass is let go."""
    started, release, batches = threading.Event(), threading.Event(), []

    def held(z):
        batches.append(len(z))
        started.set()
        release.wait(10)
        return z

    async def body():
        b = DecodeBatcher(held, ThreadPoolExecutor(2), max_batch=max_batch, max_wait=0, max_queue_s=1, parallel=2,
                          min_rows_beside=min_rows_beside)
        requests = [asyncio.ensure_future(b.decode(torch.ones(first_rows, 2)))]
        assert await asyncio.to_thread(started.wait, 10)  # the first pass holds its rows
        seen = []
        for rows in then:
            requests.append(asyncio.ensure_future(b.decode(torch.ones(rows, 2))))
            await asyncio.sleep(0.1)  # time for a pass beside to start, were it going to
            seen.append(list(batches))
        release.set()
        await asyncio.wait_for(asyncio.gather(*requests), 10)
        await b.retire()
        return seen

    return asyncio.run(body())


def test_a_few_rows_wait_for_a_short_running_pass_and_enough_start_one_beside_it():
    """Beside a short pass, a second one starts only for min_rows_beside rows: fewer join the batch
    after it, in one pass, rather than a small pass each."""
    seen = passes_seen_while_held(1, [1, 1, 1, 1])
    assert seen[:3] == [[1], [1], [1]]  # one, two, three rows wait
    assert seen[3] == [1, 4]  # the fourth: a pass beside


def test_a_single_row_starts_a_pass_beside_a_long_one():
    """Beside a pass of half a batch or more, a lone row does not wait for it."""
    assert passes_seen_while_held(8, [1]) == [[8, 1]]


def test_every_row_of_side_by_side_passes_is_answered_when_retired():
    release = threading.Event()

    def held(z):
        release.wait(10)
        return z

    async def body():
        b = DecodeBatcher(held, ThreadPoolExecutor(2), max_batch=1, max_wait=0, max_queue_s=1, parallel=2)
        requests = [asyncio.ensure_future(b.decode(torch.ones(1, 2))) for _ in range(4)]
        await asyncio.sleep(0.1)  # two rows in passes, two queued
        retiring = asyncio.ensure_future(b.retire(grace=0.1))
        await asyncio.sleep(0.3)
        release.set()
        await retiring
        return await asyncio.wait_for(asyncio.gather(*requests, return_exceptions=True), 10)

    results = asyncio.run(body())
    assert len(results) == 4 and all(isinstance(r, (Retired, torch.Tensor)) for r in results), results
    assert sum(isinstance(r, Retired) for r in results) >= 2  # the queued ones at least; nothing left hanging


def test_other_work_on_the_inference_threads_counts_as_a_pass():
    pool = InferencePool(workers=2, threads=2)

    async def body():
        return await pool.run(lambda: (pool.busy, torch.get_num_threads()))

    assert asyncio.run(body()) == (1, 2) and pool.busy == 0
    pool.shutdown()
