"""FACEGEN_COMPILE: compiled decoders serve the eager images, hot swaps compile too, and a failing
compiler leaves the model served eager."""

import io
import logging
import os
import time

import numpy as np
import torch
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from tests.conftest import publish_tiny
from service.local_server import wait_until
from tests.service.conftest import make_settings


def rss_mib() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def pixels(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)), dtype=int)


def eager_samples(store, models, url):
    with TestClient(create_app(make_settings(store, models=models))) as client:
        return {m: pixels(client.get(url.format(m))) for m in models}


def test_compiled_decoders_serve_the_eager_images_and_new_versions_compile(served_store, caplog):
    caplog.set_level(logging.INFO, logger="facegen.service")
    url = "/sample?model={}&n=8&seed=3"
    expected = eager_samples(served_store, ["gan", "vae"], url)
    graphs = torch._dynamo.utils.counters["stats"]

    with TestClient(create_app(make_settings(served_store, models=["gan", "vae"], compile=True, poll_seconds=0.1))) as client:
        assert "compiled gan v1" in caplog.text and "compiled vae v1" in caplog.text
        for m in ("gan", "vae"):
            assert np.abs(pixels(client.get(url.format(m))) - expected[m]).max() <= 2  # float rounding only

        # Five more versions: ten more graphs, past dynamo's recompile limit for one code object.
        rss = {}
        for version in range(2, 7):
            before = graphs["unique_graphs"]
            publish_tiny(served_store, "gan", seed=version)
            assert wait_until(lambda: client.get(url.format("gan")).headers["x-model-version"] == str(version), timeout=60)
            assert f"compiled gan v{version}" in caplog.text
            assert graphs["unique_graphs"] > before, f"gan v{version} was not compiled"
            time.sleep(1.5)  # the retired version's memory is released a moment after it retires
            rss[version] = rss_mib()
    assert "serving it eager" not in caplog.text
    assert rss[6] - rss[3] < 24, f"RSS grew with every compiled version: {rss}"


def test_a_failing_compiler_leaves_the_model_served_eager(served_store, caplog, monkeypatch):
    url = "/sample?model={}&n=4&seed=1"
    expected = eager_samples(served_store, ["gan"], url)

    def broken_compile(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    caplog.set_level(logging.WARNING, logger="facegen.service")
    with TestClient(create_app(make_settings(served_store, models=["gan"], compile=True))) as client:
        assert (pixels(client.get(url.format("gan"))) == expected["gan"]).all()
    assert "torch.compile failed for gan v1, serving it eager: InvalidCxxCompiler" in caplog.text
