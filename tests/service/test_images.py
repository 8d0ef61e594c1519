import io

import numpy as np
import pytest
from PIL import Image

from tests.service.conftest import make_settings


def png_size(response):
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content)).size


def grid_side(n, tile=64, pad=2):
    return n * (tile + pad) + pad


def image_bytes(color=(200, 120, 90), size=(178, 218), fmt="PNG"):
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("url,cols,rows", [
    ("/sample?model=gan&n=9", 3, 3),
    ("/sample?model=vae&n=5&nrow=5", 5, 1),
    ("/sample?model=ae&n=4", 2, 2),
    ("/interpolate?model=vae&steps=6&rows=3", 6, 3),
    ("/interpolate?model=gan&steps=4&method=lerp", 4, 1),
    ("/pca-grid?model=vae&steps=4&pc_x=2&pc_y=5", 4, 4),
    ("/pca-grid?model=gan&steps=3", 3, 3),
    ("/latent-grid?model=ae&steps=5&dim_x=3&dim_y=7&span=2", 5, 5),
    ("/pca-point?model=vae&coords=1.5,-2", 1, 1),
    ("/reconstruct?model=vae&n=5", 5, 2),
    ("/reconstruct?model=ae&n=10", 8, 4),
])
def test_image_endpoints_return_png_grids_of_the_asked_shape(client, url, cols, rows):
    expected = (64, 64) if cols * rows == 1 else (grid_side(cols), grid_side(rows))  # make_grid: one image, no border
    assert png_size(client.get(url)) == expected


def test_identity_headers_and_byte_identical_repeats(client):
    a = client.get("/sample?model=gan&n=4&seed=7")
    assert a.headers["x-model"] == "gan" and a.headers["x-model-version"] == "1" and a.headers["x-seed"] == "7"
    assert client.get("/sample?model=gan&n=4&seed=7").content == a.content
    assert client.get("/sample?model=gan&n=4&seed=8").content != a.content
    assert client.get("/sample?n=4&seed=7").content == a.content  # gan is the default model


def test_etag_and_cache_control(client):
    latest = client.get("/sample?model=vae&n=2")
    pinned = client.get("/sample?model=vae&n=2&version=1")
    assert latest.headers["cache-control"] == "public, max-age=0, must-revalidate"
    assert "immutable" in pinned.headers["cache-control"]
    assert latest.headers["etag"] == pinned.headers["etag"]  # the same resource
    again = client.get("/sample?model=vae&n=2", headers={"If-None-Match": latest.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.get("/sample?model=vae&n=3").headers["etag"] != latest.headers["etag"]


def test_precision_is_part_of_a_response_identity(served_store):
    """bf16 and fp32 decode to different bytes, so they must never share an ETag or a cache entry."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    seen = {}
    for precision in ("fp32", "bf16"):
        with TestClient(create_app(make_settings(served_store, precision=precision))) as c:
            r = c.get("/sample?model=gan&n=4&seed=7")
            assert r.headers["x-precision"] == precision
            gan = next(m for m in c.get("/models").json()["models"] if m["name"] == "gan")
            assert gan["precision"] == {"precision": precision, "reason": "asked for"}
            seen[precision] = r.headers["etag"]
    assert seen["fp32"] != seen["bf16"]


def test_bf16_serves_a_folded_bf16_copy_that_draws_the_fp32_faces(served_store):
    """The served network has BatchNorm folded and its weights stored in bf16; its faces are the
    stored fp32 network's, to bf16's precision, for the decoder and the encoder alike."""
    import torch
    from fastapi.testclient import TestClient

    from service.app import create_app

    def pixels(response):
        assert response.status_code == 200, response.text
        return np.asarray(Image.open(io.BytesIO(response.content)), dtype=float)

    faces = {}
    for precision in ("bf16", "fp32"):
        app = create_app(make_settings(served_store, precision=precision))
        with TestClient(app) as c:
            net = app.state.registry.latest["vae"].serving_net
            assert {p.dtype for p in net.parameters()} == {getattr(torch, {"bf16": "bfloat16", "fp32": "float32"}[precision])}
            assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
            files = [("files", ("face.png", image_bytes((40 * i, 200 - 30 * i, 90)), "image/png")) for i in range(4)]
            faces[precision] = [pixels(c.get("/sample?model=gan&n=4&seed=7")),
                                pixels(c.post("/reconstruct?model=vae", files=files))]
    for bf16, fp32 in zip(faces["bf16"], faces["fp32"]):
        psnr = 10 * np.log10(255**2 / max(((bf16 - fp32) ** 2).mean(), 1e-9))
        assert psnr > 35, f"bf16 vs fp32 PSNR {psnr:.1f} dB"


def test_same_request_is_identical_without_the_cache(served_store):
    from fastapi.testclient import TestClient

    from service.app import create_app

    bodies = []
    for _ in range(2):
        with TestClient(create_app(make_settings(served_store, cache_mb=0))) as c:
            bodies.append(c.get("/interpolate?model=gan&rows=2&seed_a=3").content)
    assert bodies[0] == bodies[1]


@pytest.mark.parametrize("model", ["ae", "vae", "gan"])
def test_a_seed_is_the_same_face_alone_and_first_in_a_grid(client, model):
    def faces(n):  # (n, 64, 64, 3): the tiles of /sample?n=N laid out one per row
        grid = np.asarray(Image.open(io.BytesIO(client.get(f"/sample?model={model}&seed=5&n={n}&nrow=1").content)).convert("RGB"))
        return grid[None].astype(int) if n == 1 else np.stack([grid[2 + 66 * i: 66 + 66 * i, 2:66] for i in range(n)]).astype(int)
    twenty = faces(20)
    for n in range(1, 20):
        # The same latents; a batch of n may round a last bit differently from a batch of 20, never a face apart.
        diff = np.abs(faces(n) - twenty[:n])
        assert diff.mean() < 0.05 and diff.max() <= 2, (n, diff.mean())


def test_temperature_zero_point_is_the_prior_mean(client):
    a = client.get("/sample?model=vae&n=1&temperature=0.0001&seed=1").content
    b = client.get("/sample?model=vae&n=1&temperature=0.0001&seed=2").content
    assert a == b


def test_encoder_models_sample_the_fitted_gaussian_unless_asked_for_n01(client):
    default = client.get("/sample?model=vae&n=4&seed=3")
    assert default.content == client.get("/sample?model=vae&n=4&seed=3&prior=fitted").content
    standard = client.get("/sample?model=vae&n=4&seed=3&prior=standard")
    assert standard.status_code == 200 and standard.content != default.content
    assert standard.headers["etag"] != default.headers["etag"]
    gan = client.get("/sample?model=gan&n=4&seed=3")
    assert gan.content == client.get("/sample?model=gan&n=4&seed=3&prior=standard").content


@pytest.mark.parametrize("url,status,fragment", [
    ("/sample?n=0", 422, "n: Input should be greater than or equal to 1"),
    ("/sample?n=257", 422, "less than or equal to 256"),
    ("/sample?n=abc", 422, "n: Input should be a valid integer"),
    ("/sample?temperature=-1", 422, "temperature"),
    ("/sample?seed=-5", 422, "seed"),
    ("/interpolate?steps=1", 422, "steps"),
    ("/interpolate?method=cubic", 422, "method"),
    ("/sample?model=nope", 404, "unknown model 'nope'"),
    ("/sample?model=../../etc", 422, "model: String should match pattern"),
    ("/sample?model=vae&version=9", 404, "has no version 9"),
    ("/sample?version=0", 422, "version"),
    ("/pca-grid?model=vae&pc_x=8", 409, "pc_x=8 is beyond the stored components"),
    ("/pca-grid?steps=100", 422, "steps"),
    ("/latent-grid?model=gan&dim_y=8", 409, "dim_y=8 is beyond the latent"),
    ("/pca-point?model=vae&coords=1,2,3,4,5,6,7,8,9", 409, "9 coords, but vae v1 has 8"),
    ("/pca-point?model=vae&coords=10.5", 422, "coords"),
    ("/pca-point?model=vae&coords=DROP", 422, "coords"),
    ("/reconstruct?model=gan&n=9", 409, "9 faces to project"),
    ("/pca-grid?model=plain-gan", 409, "has no stored PCA basis"),
    ("/reconstruct?n=65&model=vae", 422, "n:"),
    ("/sample?model=gan&prior=fitted", 409, "prior=fitted is not available for gan"),
    ("/sample?model=plain-gan&prior=fitted", 409, "prior=fitted is not available"),
    ("/sample?prior=uniform", 422, "prior"),
    ("/pca-grid?model=vae&pc_y=1&pc_y=0", 422, "pc_y given more than once"),  # not quietly the last one
    ("/edit?model=vae&attribute=Smiling&seed=1&seed=2", 422, "seed given more than once"),
])
def test_bad_input_is_a_json_4xx_that_says_what_is_allowed(client, url, status, fragment):
    r = client.get(url)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert fragment in r.json()["error"], r.json()


def test_upload_reconstruction(client):
    files = [("files", (f"face{i}.png", image_bytes((40 * i, 100, 200)), "image/png")) for i in range(3)]
    files.append(("files", ("face.jpg", image_bytes(fmt="JPEG"), "image/jpeg")))
    r = client.post("/reconstruct?model=vae", files=files)
    assert png_size(r) == (grid_side(4), grid_side(2))
    assert r.headers["cache-control"] == "no-store"
    grid = np.asarray(Image.open(io.BytesIO(r.content)))
    assert abs(int(grid[30, 30, 0]) - 0) < 3 and abs(int(grid[30, 30, 2]) - 200) < 3  # the first original, unchanged


def test_upload_interpolation(client):
    files = {"a": ("a.png", image_bytes((255, 0, 0)), "image/png"), "b": ("b.png", image_bytes((0, 0, 255)), "image/png")}
    assert png_size(client.post("/interpolate?model=ae&steps=5", files=files)) == (grid_side(5), grid_side(1))


@pytest.mark.parametrize("payload,status,fragment", [
    (b"this is not an image", 415, "not an image"),
    (image_bytes()[:200], 422, "truncated or corrupt"),
    (b"", 422, "empty"),
])
def test_bad_uploads_are_4xx(client, payload, status, fragment):
    r = client.post("/reconstruct?model=vae", files=[("files", ("x.png", payload, "image/png"))])
    assert r.status_code == status and fragment in r.json()["error"] and "'x.png'" in r.json()["error"]


def test_upload_limits(served_store):
    from fastapi.testclient import TestClient

    from service.app import create_app

    with TestClient(create_app(make_settings(served_store, max_upload_bytes=2000, max_files=2, max_upload_pixels=100 * 100))) as c:
        big = image_bytes(size=(40, 40), fmt="BMP")  # 4.9 kB: within the route's body limit, over the file limit
        r = c.post("/reconstruct?model=vae", files=[("files", ("big.bmp", big, "image/bmp"))])
        assert r.status_code == 413 and "the limit is 2,000 bytes" in r.json()["detail"]
        wide = image_bytes(size=(200, 200))
        r = c.post("/reconstruct?model=vae", files=[("files", ("wide.png", wide, "image/png"))])
        assert r.status_code == 422 and "200×200 pixels" in r.json()["error"]
        three = [("files", (f"{i}.png", image_bytes(size=(20, 20)), "image/png")) for i in range(3)]
        r = c.post("/reconstruct?model=vae", files=three)
        assert r.status_code == 422 and "send 1 to 2 images" in r.json()["detail"]
    r = TestClient(create_app(make_settings(served_store)))
    with r as c:
        assert c.post("/reconstruct?model=vae").status_code == 422  # no files at all


def test_models_health_and_metrics(client):
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert set(models) == {"ae", "vae", "gan", "plain-gan"}
    assert models["vae"]["served_version"] == 1 and models["vae"]["versions"] == [1]
    assert models["vae"]["manifest"]["step"] == 10 and models["vae"]["manifest"]["config"]["latent_dim"] == 8
    assert models["gan"]["has_encoder"] is False and models["vae"]["pca_components"] == 8
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    client.get("/sample?model=vae&n=3")
    client.get("/sample?model=vae&n=0")
    client.get("/no-such-page")
    text = client.get("/metrics").text
    assert 'facegen_requests_total{endpoint="/sample",model="vae",status="200"} 1.0' in text
    assert 'facegen_requests_total{endpoint="/sample",model="vae",status="422"} 1.0' in text
    assert 'facegen_requests_total{endpoint="unmatched",model="",status="404"} 1.0' in text
    assert 'facegen_served_version{model="vae"} 1.0' in text
    assert "facegen_request_seconds_bucket" in text and "facegen_batch_rows_bucket" in text


def test_not_ready_without_models(tmp_path):
    from fastapi.testclient import TestClient

    from models_core.checkpoint import CheckpointStore
    from service.app import create_app

    with TestClient(create_app(make_settings(CheckpointStore(tmp_path / "empty")))) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 503
        r = c.get("/sample")
        assert r.status_code == 404 and "models served: none" in r.json()["detail"]


def test_openapi_documents_every_parameter_with_an_example(client):
    spec = client.get("/openapi.json").json()
    for path in ("/sample", "/interpolate", "/pca-grid", "/latent-grid", "/reconstruct", "/models", "/metrics"):
        assert path in spec["paths"]
    for p in spec["paths"]["/sample"]["get"]["parameters"]:
        assert p.get("description") and (p.get("examples") or p["schema"].get("examples")), p


def test_oversized_bodies_are_refused_before_they_are_read(served_store):
    from fastapi.testclient import TestClient

    from service.app import create_app

    from service.app import MULTIPART_FRAMING

    limit = 2 * 2000 + MULTIPART_FRAMING  # max_files × max_upload_bytes + framing allowance
    with TestClient(create_app(make_settings(served_store, max_upload_bytes=2000, max_files=2))) as c:
        big = b"x" * (limit + 1)
        r = c.post("/reconstruct?model=vae", files=[("files", ("huge.png", big, "image/png"))])
        assert r.status_code == 413 and r.json()["error"] == "request body too large"

        def chunks():  # no Content-Length: the limit applies while the body streams
            yield b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
            for _ in range(limit // 65536 + 2):
                yield b"y" * 65536

        r = c.post("/reconstruct?model=vae", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 413
        assert c.get("/sample?model=vae&n=1").status_code == 200  # and the server carries on

    # Each route takes what it accepts: two files for POST /interpolate, no body elsewhere.
    with TestClient(create_app(make_settings(served_store, max_upload_bytes=2000, max_files=8))) as c:
        body = b"z" * (2 * 2000 + MULTIPART_FRAMING + 1)  # over two files' worth, under eight
        multipart = {"content-type": "multipart/form-data; boundary=x"}
        r = c.post("/interpolate?model=vae", content=body, headers=multipart)
        assert r.status_code == 413 and f"at most {2 * 2000 + MULTIPART_FRAMING:,} bytes" in r.json()["detail"]
        assert c.post("/reconstruct?model=vae", content=body, headers=multipart).status_code != 413
        r = c.request("GET", "/sample?model=vae&n=1", content=b"x" * 10)
        assert r.status_code == 413 and r.json()["detail"] == "this route takes no request body"


def test_metric_labels_come_only_from_served_models(client):
    for name in ("nosuchmodel", "another-one"):
        assert client.get(f"/sample?model={name}").status_code == 404
    text = client.get("/metrics").text
    assert "nosuchmodel" not in text and "another-one" not in text
    assert 'facegen_requests_total{endpoint="/sample",model="",status="404"} 2.0' in text


def test_every_route_that_draws_faces_is_refused_early_when_its_model_is_saturated(client):
    paths = client.get("/openapi.json").json()["paths"]
    drawing = {(method.upper(), path) for path, ops in paths.items() for method, op in ops.items()
               if "image/png" in op.get("responses", {}).get("200", {}).get("content", {})}
    assert drawing == client.app.admission.decoding
