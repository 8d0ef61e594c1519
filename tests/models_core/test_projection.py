import torch

from models_core.images import psnr
from models_core.projection import Projection, ProjectionConfig, project
from tests.conftest import vivid_generator


def samples(g, n, seed):
    with torch.no_grad():
        return g.decode(torch.randn(n, g.latent_dim, generator=torch.Generator().manual_seed(seed)))


def test_projecting_generated_faces_recovers_them():
    g, d = vivid_generator()
    faces = samples(g, 3, seed=1)
    assert psnr(samples(g, 3, seed=2), faces).max() < 15  # another latent's face is far from these
    for discriminator in (None, d):
        z, images, quality = project(g, faces, ProjectionConfig(steps=120), discriminator)
        assert z.shape == (3, g.latent_dim) and images.shape == faces.shape
        assert quality.min() > 25, quality
        torch.testing.assert_close(quality, psnr(images, faces))


def test_projection_is_deterministic_and_keeps_the_best_start():
    g, d = vivid_generator()
    faces = samples(g, 2, seed=1)
    cfg = ProjectionConfig(steps=20, starts=3, explore=5)
    p = Projection(g, faces, cfg, d)
    p.advance(4)
    assert p.z.shape[0] == 6  # every start of both faces
    assert p.result()[0].shape[0] == 2  # the best start of each so far
    p.advance(100)
    assert p.finished and p.done == 20 and p.z.shape[0] == 2  # only the best start of each face went on
    again = Projection(g, faces, cfg, d)
    again.advance(20)
    torch.testing.assert_close(p.result()[0], again.result()[0], rtol=0, atol=0)


def test_more_steps_never_end_further_away():
    g, _ = vivid_generator()
    faces = samples(g, 2, seed=3)
    short = project(g, faces, ProjectionConfig(steps=10))[2]
    long = project(g, faces, ProjectionConfig(steps=80))[2]
    assert (long > short).all()


def test_the_prior_term_keeps_latents_on_the_typical_shell():
    g, _ = vivid_generator()
    faces = torch.zeros(2, 3, 64, 64)  # a grey square: the pixel loss alone pulls z anywhere
    z = project(g, faces, ProjectionConfig(steps=60, prior=10.0))[0]
    radius = z.norm(dim=1) / g.latent_dim**0.5
    assert ((radius - 1).abs() < 0.1).all(), radius


def test_a_start_is_where_the_projection_begins_and_zero_steps_return_it():
    from models_core.dcgan import GanEncoder

    g, d = vivid_generator()
    faces = g.decode(torch.randn(3, g.latent_dim, generator=torch.Generator().manual_seed(4))).detach()
    start = GanEncoder(g.cfg).eval()(faces).detach()
    z, images, _ = project(g, faces, ProjectionConfig(steps=0), d, start=start)
    assert torch.equal(z, start) and torch.allclose(images, g.decode(start).detach())
    p = Projection(g, faces, ProjectionConfig(steps=30, starts=4), d, start=start)
    assert p.cfg.starts == 1 and len(p.z) == 3  # one start per face: the encoder's
    p.advance(30)
    assert p.result()[2].mean() > psnr(images, faces).mean()  # refined from there


def test_from_an_encoders_start_the_refinement_is_on_pixels_unless_asked_otherwise():
    g, d = vivid_generator()
    faces = samples(g, 2, seed=1)
    start = torch.zeros(2, g.latent_dim)
    assert Projection(g, faces, ProjectionConfig(steps=5), d).target_features is not None  # random starts: D's features
    from_encoder = Projection(g, faces, ProjectionConfig(steps=5), d, start=start)
    assert from_encoder.target_features is None and from_encoder.cfg.perceptual == 0
    asked = Projection(g, faces, ProjectionConfig(steps=5, perceptual=1.0), d, start=start)
    assert asked.target_features is not None
