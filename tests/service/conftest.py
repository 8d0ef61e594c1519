import pytest
from fastapi.testclient import TestClient

from models_core.checkpoint import CheckpointStore
from service.app import create_app
from service.settings import Settings
from tests.conftest import publish_tiny


@pytest.fixture
def served_store(tmp_path) -> CheckpointStore:
    """tiny ae, vae (with PCA bases) and gan, version 1 each."""
    store = CheckpointStore(tmp_path / "checkpoints")
    for kind in ("ae", "vae", "gan"):
        publish_tiny(store, kind)
    publish_tiny(store, "gan", name="plain-gan", basis=False)
    return store


def make_settings(store: CheckpointStore, **overrides) -> Settings:
    return Settings(**{"checkpoint_root": store.root, "poll_seconds": 0.2, "max_wait_ms": 10, "_env_file": None, **overrides})


@pytest.fixture
def client(served_store):
    with TestClient(create_app(make_settings(served_store))) as c:
        yield c
