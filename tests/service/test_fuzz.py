"""Schemathesis over the OpenAPI schema, against a real server: whatever the schema admits, no 5xx."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from models_core.checkpoint import CheckpointStore
from tests.conftest import publish_tiny
from tests.service.conftest import start_server


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    store = CheckpointStore(tmp_path_factory.mktemp("fuzz") / "checkpoints")
    for kind in ("ae", "vae", "gan"):
        publish_tiny(store, kind)
    server = start_server(store.root)
    yield server.url
    server.stop()


def test_no_input_makes_the_server_fail(server_url):
    schema = schemathesis.openapi.from_url(f"{server_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    failures, calls = [], []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            response = case.call(timeout=30)
            calls.append(response.status_code)
            assert response.status_code < 500, f"{case.method} {case.path} {case.query} -> {response.status_code}"

        try:
            fuzz()
        except AssertionError as e:
            failures.append(str(e).splitlines()[0])
    assert not failures, "\n".join(failures)
    assert len(calls) > 5 * len(operations)
