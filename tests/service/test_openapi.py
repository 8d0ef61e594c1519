"""The OpenAPI document tells the truth: schemathesis, all checks, against a real server."""

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from models_core.checkpoint import CheckpointStore
from tests.conftest import publish_tiny
from tests.service.conftest import start_server

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    store = CheckpointStore(tmp_path_factory.mktemp("openapi") / "checkpoints")
    for kind in ("ae", "vae", "gan"):
        publish_tiny(store, kind)
    server = start_server(store.root, {"FACEGEN_PROJECTION_TIME_S": "0.5"})  # a projection of up to 1000 steps stops there
    yield server.url
    server.stop()


def test_schemathesis_finds_no_contract_failure(server_url, tmp_path):
    # As a client outside would, from a checkout: the command line over HTTP with the repository's schemathesis.toml,
    # its default phases and response timeout, all checks.
    st = Path(sys.executable).with_name("st")
    run = subprocess.run([str(st), "run", f"{server_url}/openapi.json", "--checks", "all",
                          "--max-examples", "25", "--seed", "1", "--no-color"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    tested = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert tested and int(tested[1]) > 500 and tested[1] == tested[2], run.stdout[-2000:]


def test_every_error_status_is_documented_with_the_real_body(server_url):
    paths = httpx.get(f"{server_url}/openapi.json").json()["paths"]
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, method, statuses in [("/sample", "get", {"200", "304", "404", "409", "413", "422", "503", "504"}),
                                   ("/reconstruct", "post", {"200", "404", "409", "413", "415", "422", "503", "504"}),
                                   ("/healthz", "get", {"200", "413", "504"})]:
        responses = paths[path][method]["responses"]
        assert set(responses) == statuses, (path, method, sorted(responses))
        for status in statuses - {"200", "304"}:
            assert responses[status]["content"]["application/json"]["schema"] == error_ref, (path, status)


def test_options_and_405_list_every_method_of_the_path(server_url):
    options = httpx.options(f"{server_url}/reconstruct")
    assert options.status_code == 204 and options.headers["allow"] == "GET, POST, OPTIONS"
    wrong = httpx.request("TRACE", f"{server_url}/reconstruct", content=b"x" * 100)  # a body: still 405, not 413
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, POST, OPTIONS"
    assert wrong.json()["error"] == "TRACE is not allowed on /reconstruct"
    assert httpx.delete(f"{server_url}/sample").headers["allow"] == "GET, OPTIONS"


def test_the_headers_a_png_comes_with_are_documented_and_sent(server_url):
    paths = httpx.get(f"{server_url}/openapi.json").json()["paths"]
    identity, cached = {"X-Model", "X-Model-Version", "X-Precision"}, {"ETag", "Cache-Control", "X-Seed"}
    projection = {"X-Projection-PSNR", "X-Projection-Steps", "X-Projection-Seconds"}
    for path, method, names in [("/sample", "get", identity | cached), ("/reconstruct", "get", identity | cached | projection),
                                ("/project", "post", identity | projection), ("/interpolate", "post", identity | projection)]:
        assert set(paths[path][method]["responses"]["200"]["headers"]) == names, (path, method)
    assert set(paths["/sample"]["get"]["responses"]["304"]["headers"]) == identity | cached
    sample = httpx.get(f"{server_url}/sample", params={"model": "gan", "n": 1, "seed": 3})
    assert all(h.lower() in sample.headers for h in identity | cached) and sample.headers["x-seed"] == "3"
    projected = httpx.get(f"{server_url}/reconstruct", params={"model": "gan", "n": 1, "steps": 2}, timeout=60)
    assert projected.status_code == 200, projected.text
    assert all(h.lower() in projected.headers for h in identity | projection)
    assert int(projected.headers["x-projection-steps"]) == 2
