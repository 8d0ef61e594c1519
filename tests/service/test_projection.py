"""GAN projection over HTTP: /project, and /reconstruct and POST /interpolate for a GAN."""

import io
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from models_core.projection import DEFAULT_STEPS_FROM_ENCODER
from service.app import create_app
from tests.conftest import publish_vivid_gan
from service.local_server import wait_until
from tests.service.conftest import make_settings, threaded_server
from tests.service.test_images import grid_side, image_bytes, png_size
from tests.service.conftest import metric


@pytest.fixture
def store(served_store):
    publish_vivid_gan(served_store)
    return served_store


@pytest.fixture
def client(store):
    with TestClient(create_app(make_settings(store))) as c:
        yield c


def upload(*pngs: bytes, field: str = "files"):
    return [(field, (f"face{i}.png", data, "image/png")) for i, data in enumerate(pngs)]


def psnrs(response) -> list[float]:
    return [float(p) for p in response.headers["x-projection-psnr"].split(",")]


def test_projecting_a_generated_face_recovers_it(client):
    faces = client.get("/sample?model=vivid-gan&n=2&seed=7&nrow=2")
    grid = Image.open(io.BytesIO(faces.content))
    crops = []
    for i in range(2):
        buffer = io.BytesIO()
        grid.crop((2 + 66 * i, 2, 66 + 66 * i, 66)).save(buffer, format="PNG")
        crops.append(buffer.getvalue())
    r = client.post("/project?model=vivid-gan&steps=150", files=upload(*crops))
    assert png_size(r) == (grid_side(2), grid_side(2))  # face | G(z*), one face per row
    assert min(psnrs(r)) > 25, r.headers["x-projection-psnr"]
    assert r.headers["x-projection-steps"] == "150" and float(r.headers["x-projection-seconds"]) > 0
    assert r.headers["cache-control"] == "no-store"
    other = client.post("/project?model=vivid-gan&steps=150", files=upload(image_bytes((30, 160, 60))))
    assert max(psnrs(other)) < min(psnrs(r))  # a flat green square is not a face of this G
    again = client.post("/project?model=vivid-gan&steps=150", files=upload(*crops))
    assert again.content == r.content and again.headers["x-projection-psnr"] == r.headers["x-projection-psnr"]


def test_by_default_a_gan_reconstructs_one_face_and_an_encoder_eight(client):
    """A projection takes seconds a face on a CPU: the default answers within a client's usual 10 s."""
    gan = client.get("/reconstruct?model=vivid-gan&steps=5")
    assert png_size(gan) == (grid_side(1), grid_side(2)) and len(psnrs(gan)) == 1
    assert png_size(client.get("/reconstruct?model=vae")) == (grid_side(8), grid_side(2))


def test_a_gan_projection_with_default_steps_stops_at_its_time_budget(client, monkeypatch):
    from service.face_latents import FaceLatents

    monkeypatch.setattr(FaceLatents, "default_answer_s", 1e-6)  # spent before the first step: one slice runs
    quick = client.get("/reconstruct?model=vivid-gan&n=2")
    assert png_size(quick) == (grid_side(2), grid_side(2))
    assert 1 <= int(quick.headers["x-projection-steps"]) < 200
    assert "etag" not in quick.headers and quick.headers["cache-control"] == "no-store"  # stopped: not the answer
    for route in ("/project", "/reconstruct"):  # uploads too
        r = client.post(f"{route}?model=vivid-gan", files=upload(image_bytes((255, 0, 0))))
        assert 1 <= int(r.headers["x-projection-steps"]) < 200, route
    full = client.get("/reconstruct?model=vivid-gan&steps=200")  # steps asked for: they run in full
    assert full.headers["x-projection-steps"] == "200"


def test_a_gan_reconstructs_and_interpolates_real_faces_through_projection(client):
    r = client.get("/reconstruct?model=vivid-gan&n=3&steps=20")
    assert png_size(r) == (grid_side(3), grid_side(2)) and len(psnrs(r)) == 3
    assert r.headers["x-projection-steps"] == "20" and "etag" in r.headers
    cached = client.get("/reconstruct?model=vivid-gan&n=3&steps=20")
    assert cached.content == r.content and cached.headers["x-projection-psnr"] == r.headers["x-projection-psnr"]
    assert client.get("/reconstruct?model=vivid-gan&n=3&steps=20", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    faces = upload(image_bytes((255, 0, 0)), image_bytes((0, 0, 255)))
    r = client.post("/reconstruct?model=vivid-gan&steps=10", files=faces)
    assert png_size(r) == (grid_side(2), grid_side(2)) and len(psnrs(r)) == 2
    r = client.post("/interpolate?model=vivid-gan&steps=5&projection_steps=10",
                    files={"a": ("a.png", image_bytes((255, 0, 0)), "image/png"), "b": ("b.png", image_bytes((0, 0, 255)), "image/png")})
    assert png_size(r) == (grid_side(5), grid_side(1)) and len(psnrs(r)) == 2


@pytest.mark.parametrize("method,url,files,status,fragment", [
    ("post", "/project?model=vae", 1, 409, "is not a GAN"),
    ("post", "/project?model=vivid-gan", 9, 409, "at most 8 faces"),
    ("get", "/reconstruct?model=vivid-gan&n=9", 0, 409, "at most 8 faces"),
    ("post", "/project?model=vivid-gan&steps=0", 1, 409, "has no encoder"),
    ("post", "/project?model=vivid-gan&steps=-1", 1, 422, "steps"),
    ("post", "/project?model=vivid-gan&steps=1001", 1, 422, "steps"),
    ("post", "/project?model=nope", 1, 404, "unknown model"),
])
def test_bad_projection_requests_are_explained(client, method, url, files, status, fragment):
    r = client.post(url, files=upload(*[image_bytes()] * files)) if method == "post" else client.get(url)
    assert r.status_code == status, r.text
    assert fragment in r.text


@pytest.mark.parametrize("payload,status", [(b"not an image", 415), (image_bytes()[:100], 422), (b"", 422)])
def test_bad_uploads_to_project_are_4xx(client, payload, status):
    r = client.post("/project?model=vivid-gan", files=[("files", ("x.png", payload, "image/png"))])
    assert r.status_code == status and "'x.png'" in r.json()["error"]


def test_projection_stops_at_the_time_limit_with_what_it_has(store):
    with TestClient(create_app(make_settings(store, projection_time_s=0.3))) as c:
        r = c.post("/project?model=vivid-gan&steps=1000", files=upload(image_bytes()))
        assert r.status_code == 200 and 0 < int(r.headers["x-projection-steps"]) < 1000
        assert metric(c.get("/metrics").text, 'facegen_projections_total{model="vivid-gan",outcome="timed_out"}') == 1


def test_projections_are_bounded_share_the_thread_and_stop_when_their_client_goes(store):
    app = create_app(make_settings(store, max_projections=1, cache_mb=0))
    with threaded_server(app) as url:
        def steps_run():
            return metric(httpx.get(f"{url}/metrics").text, 'facegen_projection_steps_total{model="vivid-gan"}')

        def long_projection():  # ~1000 steps: tens of seconds; its client gives up after 2 s
            try:
                httpx.post(f"{url}/project?model=vivid-gan&steps=1000", files=upload(image_bytes()), timeout=2)
            except httpx.TimeoutException:
                pass

        client = threading.Thread(target=long_projection)
        client.start()
        assert wait_until(lambda: steps_run() > 0, timeout=10)
        busy = httpx.post(f"{url}/project?model=vivid-gan&steps=5", files=upload(image_bytes()))
        assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1, busy.text
        start = time.perf_counter()
        r = httpx.get(f"{url}/sample?model=gan&n=4&seed=3")  # decoding goes on between the projection's slices
        assert r.status_code == 200 and time.perf_counter() - start < 1.0
        client.join()
        assert wait_until(lambda: metric(httpx.get(f"{url}/metrics").text,
                                         'facegen_projections_total{model="vivid-gan",outcome="cancelled"}') == 1, timeout=5)
        stopped_at = steps_run()
        time.sleep(0.5)
        assert steps_run() == stopped_at < 1000  # no step ran after its client left
        r = httpx.post(f"{url}/project?model=vivid-gan&steps=5", files=upload(image_bytes()))
        assert r.status_code == 200  # the slot is free again


def test_a_version_with_an_encoder_starts_projections_from_it(store):
    """steps=0 answers E(x) alone; more steps refine from there and never end further away."""
    import torch

    from models_core.dcgan import ENCODER_PREFIX, GanEncoder, module_extras

    torch.manual_seed(0)
    ckpt = store.load("vivid-gan")
    encoder = GanEncoder(ckpt.model.cfg).eval()
    store.copy_from(store, "vivid-gan", extras=ckpt.extras | module_extras(ENCODER_PREFIX, encoder.state_dict()))
    with TestClient(create_app(make_settings(store))) as client:
        face = upload(image_bytes((200, 120, 90)))
        at_once = client.post("/project?model=vivid-gan&steps=0", files=face)
        assert at_once.status_code == 200 and at_once.headers["x-projection-steps"] == "0"
        refined = client.post("/project?model=vivid-gan&steps=40", files=face)
        assert psnrs(refined)[0] >= psnrs(at_once)[0] - 0.5  # refined from there (the prior term takes a little)
        by_default = client.post("/project?model=vivid-gan", files=face)
        assert by_default.headers["x-projection-steps"] == str(DEFAULT_STEPS_FROM_ENCODER) == "50"
        assert client.get("/reconstruct?model=vivid-gan&n=2&steps=0").headers["x-projection-steps"] == "0"
        assert client.post("/project?model=vivid-gan&steps=0&version=1", files=face).status_code == 409  # no encoder


def test_a_body_that_is_not_multipart_is_a_documented_422(client):
    boundary = "8efb2279b4a4a75422550d2f31e6fbcf"
    r = client.post("/interpolate?model=vae", content=f"--{boundary}\r\n\xfa--{boundary}--\r\n".encode("latin-1"),
                    headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 422 and r.json()["error"].startswith("invalid request") and "multipart" in r.json()["detail"]
