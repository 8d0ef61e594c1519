import torch
from torch.distributions import Normal, kl_divergence as torch_kl

from models_core.losses import (
    DEFAULT_BETA_KL, discriminator_loss, generator_loss, kl_divergence, reconstruction_loss, vae_loss,
)


def test_kl_matches_torch_distributions_and_is_nonnegative():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    q, p = Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros(5), torch.ones(5))
    expected = torch_kl(q, p).sum(-1).mean()
    torch.testing.assert_close(kl_divergence(mu, logvar), expected)
    assert kl_divergence(mu, logvar) > 0
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)) == 0


def test_vae_loss_is_the_per_image_squared_error_plus_beta_kl():
    x, x_recon = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    mu, logvar = torch.ones(2, 3), torch.zeros(2, 3)
    loss = vae_loss(x, x_recon, mu, logvar)
    assert DEFAULT_BETA_KL == 0.03
    torch.testing.assert_close(loss.recon, torch.tensor(0.25))  # reported per pixel
    torch.testing.assert_close(loss.kl, torch.tensor(1.5))  # 0.5 * sum(mu^2) per sample
    torch.testing.assert_close(loss.total, 48 * 0.25 + 0.03 * loss.kl)  # 48 values per image
    torch.testing.assert_close(vae_loss(x, x_recon, mu, logvar, beta_kl=1.0).total, torch.tensor(13.5))
    torch.testing.assert_close(reconstruction_loss(x, x_recon), loss.recon)


def test_the_kl_weight_does_not_grow_with_the_image_size():
    # The seed's per-pixel mean made beta effectively 12,288x larger at 64×64 than at 1×1 pixel.
    # Per image, doubling the side quadruples the squared error and leaves the KL's weight alone.
    g = torch.Generator().manual_seed(0)
    x, x_recon = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    mu, logvar = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    up = lambda t: t.repeat_interleave(2, -1).repeat_interleave(2, -2)  # noqa: E731
    small, large = vae_loss(x, x_recon, mu, logvar), vae_loss(up(x), up(x_recon), mu, logvar)
    torch.testing.assert_close(large.total - 0.03 * large.kl, 4 * (small.total - 0.03 * small.kl))
    torch.testing.assert_close(large.recon, small.recon)
    torch.testing.assert_close(large.kl, small.kl)


def test_gan_losses_equal_the_seeds_probability_form_where_that_is_accurate():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, 0.0, 1.5])
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    seed_d = -(torch.log(d_real).mean() + torch.log(1 - d_fake).mean())
    torch.testing.assert_close(discriminator_loss(real, fake), seed_d)
    torch.testing.assert_close(generator_loss(fake), -torch.log(d_fake).mean())


def test_gan_losses_stay_finite_and_informative_at_extreme_logits():
    fake = torch.tensor([-200.0, 200.0], requires_grad=True)
    loss = generator_loss(fake)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(fake.grad).all()
    # Non-saturating: a confidently rejected fake still gets a full-size gradient.
    assert fake.grad[0].abs() > 0.49
    assert torch.isfinite(discriminator_loss(torch.tensor([-200.0]), torch.tensor([200.0])))
    torch.testing.assert_close(discriminator_loss(torch.tensor([-200.0]), torch.tensor([200.0])), torch.tensor(400.0))
