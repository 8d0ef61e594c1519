import asyncio
import contextlib
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from models_core.checkpoint import CheckpointStore
from service.app import create_app
from service.local_server import LocalServer
from service.settings import Settings
from tests.conftest import publish_tiny
from service.local_server import free_port, wait_until


@pytest.fixture
def served_store(tmp_path) -> CheckpointStore:
    """tiny ae, vae (with PCA bases) and gan, version 1 each."""
    store = CheckpointStore(tmp_path / "checkpoints")
    for kind in ("ae", "vae", "gan"):
        publish_tiny(store, kind)
    publish_tiny(store, "gan", name="plain-gan", basis=False)
    return store


def make_settings(store: CheckpointStore, **overrides) -> Settings:
    # fp32 unless a test asks: "auto" would pick bf16 on some CI machines and not on others, and
    # byte-for-byte checks must not depend on the machine. The live servers below run "auto".
    return Settings(**{"checkpoint_root": store.root, "poll_seconds": 0.2, "max_wait_ms": 10, "precision": "fp32",
                       "_env_file": None, **overrides})


@pytest.fixture
def client(served_store):
    with TestClient(create_app(make_settings(served_store))) as c:
        yield c


def start_server(root: Path, env: dict[str, str] | None = None) -> LocalServer:
    """`python -m service` serving `root` in a subprocess on a free loopback port, ready to answer."""
    try:
        return LocalServer(root, env or {}).start()
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture
def live_server(served_store):
    server = start_server(served_store.root)
    yield server
    server.stop()


@contextlib.contextmanager
def threaded_server(app):
    """`app` served by uvicorn on a thread of this process: real HTTP, and the test can reach into app.state."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        assert wait_until(lambda: server.started, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


async def with_app(app, body):
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://facegen") as client:
            return await body(client)


@contextlib.contextmanager
def inference_threads_held(app):
    """Every inference thread taken by other work (as by GAN projections) until the event is set."""
    release, registry = threading.Event(), app.state.registry
    held = [asyncio.ensure_future(registry.workers.run(release.wait, 60)) for _ in range(registry.workers.workers)]
    try:
        yield release
    finally:
        release.set()
        for h in held:
            h.cancel()


@contextlib.contextmanager
def budget_spent(served):
    """The model's whole row budget held, as queued work would hold it: the model is saturated."""
    with served.budget.admit(served.budget.rows):
        yield


def record_entries(app) -> list[tuple[str, str]]:
    """(method, path) of every request that reaches the application's middleware stack."""
    entered = []

    class Recording:
        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http":
                entered.append((scope["method"], scope["path"]))
            await self.inner(scope, receive, send)

    app.add_middleware(Recording)
    return entered


async def until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))
