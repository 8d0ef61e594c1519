"""/attributes and /edit: geometry, the faces of /sample in its order, conditional edits and errors."""

import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from models_core.attributes import AttributeDirection, AttributeDirections
from service.app import create_app
from tests.service.conftest import make_settings
from tests.service.test_images import grid_side, image_bytes, png_size


def directions(latent_dim: int, seed: int = 0) -> AttributeDirections:
    g = torch.Generator().manual_seed(seed)
    smile, male = torch.randn(latent_dim, generator=g), torch.randn(latent_dim, generator=g)
    return AttributeDirections([AttributeDirection("Smiling", smile / smile.norm(), 1.5, 0.91, 1200),
                                AttributeDirection("Male", male / male.norm(), 2.0, 0.97, 1100),
                                AttributeDirection("Twin", smile / smile.norm(), 1.0, 0.8, 10)])


@pytest.fixture
def edit_client(served_store):
    """The tiny models, each with a second version that carries attribute directions."""
    for name in ("ae", "vae", "gan"):
        ckpt = served_store.load(name)
        served_store.copy_from(served_store, name, extras=ckpt.extras | directions(ckpt.model.latent_dim).to_tensors())
    with TestClient(create_app(make_settings(served_store))) as c:
        yield c


def tiles(response, cols: int, rows: int) -> np.ndarray:
    a = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=float)
    return np.stack([[a[2 + r * 66:][:64, 2 + c * 66:][:, :64] for c in range(cols)] for r in range(rows)])


def test_attributes_lists_each_direction_with_its_accuracy(edit_client):
    body = edit_client.get("/attributes?model=vae").json()
    assert body["version"] == 2 and body["default_span"] == 3.0
    assert {a["name"]: (a["accuracy"], a["n"]) for a in body["attributes"]} == {
        "Smiling": (0.91, 1200), "Male": (0.97, 1100), "Twin": (0.8, 10)}
    assert edit_client.get("/attributes?model=vae&version=1").json()["attributes"] == []


@pytest.mark.parametrize("model", ["ae", "vae", "gan"])
def test_edit_rows_are_the_faces_of_sample_in_order_with_the_unedited_face_in_the_middle(edit_client, model):
    r = edit_client.get(f"/edit?model={model}&attribute=Smiling&seed=5&n=3&steps=5&span=2")
    assert png_size(r) == (grid_side(5), grid_side(3))
    edits = tiles(r, 5, 3)
    samples = tiles(edit_client.get(f"/sample?model={model}&seed=5&n=3&nrow=1"), 1, 3)
    assert np.abs(edits[:, 2] - samples[:, 0]).max() <= 2  # the middle column: /sample's faces, same order
    if model != "gan":  # a freshly initialised tiny G draws nearly the same grey for every z
        assert np.abs(edits[:, 0] - edits[:, 4]).mean() > 0.2  # the ends differ: the faces were edited
    assert r.headers["x-seed"] == "5" and r.headers["x-model-version"] == "2"


def test_holding_an_attribute_changes_the_edit_and_is_part_of_its_identity(edit_client):
    plain = edit_client.get("/edit?model=vae&attribute=Smiling&n=2")
    held = edit_client.get("/edit?model=vae&attribute=Smiling&n=2&hold=Male")
    assert held.status_code == 200 and held.content != plain.content
    assert held.headers["etag"] != plain.headers["etag"]
    again = edit_client.get("/edit?model=vae&attribute=Smiling&n=2&hold=Male", headers={"If-None-Match": held.headers["etag"]})
    assert again.status_code == 304


def test_edit_latents_move_the_samples_along_the_direction(edit_client, served_store):
    from models_core import views

    ckpt = served_store.load("gan", 2)
    z = views.edit_latents(ckpt, "Smiling", seed=5, n=3, steps=5, span=2.0).reshape(3, 5, -1)
    assert torch.equal(z[:, 2], views.prior_latents(ckpt, 3, 5))
    smile = ckpt.attributes["Smiling"]
    assert torch.allclose((z[:, 4] - z[:, 2]) @ smile.direction, torch.full((3,), 2.0 * smile.scale), atol=1e-5)


def test_repeated_or_overlapping_holds_are_one_hold(edit_client):
    d = directions(16)
    once = d.conditioned("Male", ["Smiling"])
    assert torch.allclose(d.conditioned("Male", ["Smiling", "Smiling"]), once, atol=1e-5)
    assert torch.allclose(d.conditioned("Male", ["Smiling", "Twin"]), once, atol=1e-5)  # Twin = Smiling's direction
    a = edit_client.get("/edit?model=vae&attribute=Male&n=2&hold=Smiling")
    for hold in ("Smiling,Smiling", "Smiling,Male", "Twin,Smiling"):
        b = edit_client.get(f"/edit?model=vae&attribute=Male&n=2&hold={hold}")
        assert b.status_code == 200 and np.abs(tiles(b, 5, 2) - tiles(a, 5, 2)).max() <= 2, hold
    assert edit_client.get("/edit?model=vae&attribute=Male&n=2&hold=Smiling,Smiling").headers["etag"] == a.headers["etag"]


def test_the_direction_held_is_projected_out():
    d = directions(16)
    smile = d.conditioned("Smiling", ["Male"])
    assert abs(float(smile @ d["Male"].direction)) < 1e-5 and abs(float(smile.norm()) - 1) < 1e-5
    z = torch.randn(4, 16)
    moved = d.edit(z, "Smiling", torch.tensor([-3.0, 0.0, 3.0]), ["Male"])
    assert torch.allclose(moved @ d["Male"].direction, (z @ d["Male"].direction)[:, None].expand(4, 3), atol=1e-4)
    assert torch.equal(moved[:, 1], z)


@pytest.mark.parametrize("url,status,fragment", [
    ("/edit?model=vae&attribute=Bald", 404, "known: Male, Smiling, Twin"),
    ("/edit?model=vae&attribute=Smiling&hold=Bald", 404, "unknown attribute 'Bald'"),
    ("/edit?model=vae&attribute=Smiling&hold=Twin", 422, "cannot edit Smiling holding Twin"),
    ("/edit?model=vae&attribute=Smiling&version=1", 409, "has no attribute directions"),
    ("/edit?model=vae&attribute=Smil%20ing", 422, "attribute"),
    ("/edit?model=vae&attribute=Smiling&steps=1", 422, "steps"),
    ("/edit?model=vae&attribute=Smiling&span=0", 422, "span"),
    ("/edit?model=nope&attribute=Smiling", 404, "nope"),
])
def test_bad_edits_are_4xx_that_say_what_is_allowed(edit_client, url, status, fragment):
    r = edit_client.get(url)
    assert r.status_code == status, r.text
    assert fragment in r.text


def test_edit_uploads_through_the_encoder_and_through_projection(edit_client):
    files = [("files", (f"f{i}.png", image_bytes((60 * i, 100, 200)), "image/png")) for i in range(2)]
    r = edit_client.post("/edit?model=vae&attribute=Male&steps=3", files=files)
    assert png_size(r) == (grid_side(3), grid_side(2)) and r.headers["cache-control"] == "no-store"
    recon = tiles(edit_client.post("/reconstruct?model=vae", files=files), 2, 2)[1]
    assert np.abs(tiles(r, 3, 2)[:, 1] - recon).max() <= 2  # the middle column: the plain reconstruction
    g = edit_client.post("/edit?model=gan&attribute=Smiling&steps=4&projection_steps=3", files=files[:1])
    assert png_size(g) == (grid_side(4), grid_side(1)) and g.headers["x-projection-steps"] == "3"
    bad = edit_client.post("/edit?model=vae&attribute=Bald", files=files)
    assert bad.status_code == 404 and "known:" in bad.text


def test_a_version_with_directions_for_another_latent_size_is_refused(served_store):
    from models_core.checkpoint import CheckpointError

    ckpt = served_store.load("vae")
    served_store.copy_from(served_store, "vae", extras=ckpt.extras | directions(ckpt.model.latent_dim + 1).to_tensors())
    with pytest.raises(CheckpointError, match="attribute directions do not fit"):
        served_store.load("vae", 2)
