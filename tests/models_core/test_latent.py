import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from models_core.latent import PcaBasis, interpolation_path, latent_sweep, lerp, sample_prior, slerp

finite = st.floats(-10, 10, allow_nan=False, width=32)


def vectors(dim):
    return arrays(np.float32, (dim,), elements=finite).map(torch.from_numpy)


def angle(a, b):
    return torch.acos((a / a.norm() * b / b.norm()).sum().clamp(-1, 1))


@settings(max_examples=200, deadline=None)
@given(vectors(6), vectors(6))
def test_slerp_endpoints_are_exact(z0, z1):
    assert torch.equal(slerp(z0, z1, 0.0), z0)
    assert torch.equal(slerp(z0, z1, 1.0), z1)


@settings(max_examples=200, deadline=None)
@given(vectors(6), vectors(6), st.floats(0, 1), st.floats(0.1, 20))
def test_slerp_stays_on_the_sphere(z0, z1, t, radius):
    if z0.norm() < 1e-3 or z1.norm() < 1e-3:
        return
    if math.sin(angle(z0.double(), z1.double()).item()) < 1e-3:
        return  # (anti)parallel: no unique great circle, the documented lerp fallback applies
    a, b = z0 / z0.norm() * radius, z1 / z1.norm() * radius
    assert slerp(a, b, t).norm().item() == pytest.approx(radius, rel=1e-4)


@settings(max_examples=100, deadline=None)
@given(vectors(5), vectors(5))
def test_slerp_angle_grows_monotonically_and_uniformly(z0, z1):
    if z0.norm() < 1e-2 or z1.norm() < 1e-2:
        return
    a, b = z0.double(), z1.double()
    omega = angle(a, b).item()
    if omega < 1e-2 or omega > math.pi - 1e-2:
        return
    t = torch.linspace(0, 1, 9, dtype=torch.float64)[:, None]
    angles = torch.stack([angle(a, p) for p in slerp(a, b, t)])
    assert (angles.diff() > 0).all()
    # With equal norms the speed is constant too: the angle is exactly t * omega.
    b = b / b.norm() * a.norm()
    angles = torch.stack([angle(a, p) for p in slerp(a, b, t)])
    torch.testing.assert_close(angles, t[:, 0] * omega, atol=1e-6, rtol=1e-6)


def test_degenerate_rows_fall_back_to_lerp_alone():
    z0 = torch.tensor([[1.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    z1 = torch.tensor([[0.0, 1.0, 0.0], [2.0, 4.0, 6.0], [-1.0, -2.0, -3.0], [1.0, 1.0, 1.0]])
    out = slerp(z0, z1, 0.5)
    # Row 0 is a genuine slerp: the midpoint of a quarter circle, still of norm 1.
    torch.testing.assert_close(out[0], torch.tensor([1.0, 1.0, 0.0]) / math.sqrt(2))
    # Parallel, antiparallel and zero rows have no unique great circle: lerp.
    torch.testing.assert_close(out[1:], lerp(z0[1:], z1[1:], 0.5))
    # The seed would have lerped row 0 too (norm 0.707); we do not.
    assert out[0].norm() == pytest.approx(1.0)


def test_slerp_keeps_dtype_and_broadcasts_t():
    z0, z1 = torch.randn(4, 10), torch.randn(4, 10)
    out = slerp(z0, z1, torch.rand(4, 1))
    assert out.shape == (4, 10) and out.dtype == torch.float32


def test_lerp():
    torch.testing.assert_close(lerp(torch.zeros(3), torch.ones(3), 0.25), torch.full((3,), 0.25))


@pytest.mark.parametrize("method", ["slerp", "lerp"])
def test_interpolation_path(method):
    z0, z1 = torch.randn(3, 8), torch.randn(3, 8)
    path = interpolation_path(z0, z1, 7, method)
    assert path.shape == (3, 7, 8)
    assert torch.equal(path[:, 0], z0) and torch.equal(path[:, -1], z1)
    with pytest.raises(ValueError):
        interpolation_path(z0, z1, 1)
    with pytest.raises(ValueError, match="method"):
        interpolation_path(z0, z1, 3, "cubic")


def test_latent_sweep_varies_only_the_chosen_dims():
    base = torch.arange(5.0)
    grid = latent_sweep(base, dim_x=1, dim_y=3, span=2.0, steps=5)
    assert grid.shape == (5, 5, 5)
    torch.testing.assert_close(grid[0, :, 1], torch.linspace(-2, 2, 5))  # across the columns
    torch.testing.assert_close(grid[:, 0, 3], torch.linspace(-2, 2, 5))  # down the rows
    for d in (0, 2, 4):
        assert (grid[..., d] == d).all()
    with pytest.raises(ValueError, match="dim_x=5"):
        latent_sweep(base, 5, 0)
    same = latent_sweep(base, 2, 2, span=2.0, steps=5)  # one dimension on both axes: the sum, along the diagonals
    values = torch.linspace(-2, 2, 5)
    torch.testing.assert_close(same[..., 2], values[:, None] + values[None, :])


def test_sample_prior_is_reproducible_from_a_seed():
    a = sample_prior(4, 10, torch.Generator().manual_seed(7), temperature=0.5)
    b = sample_prior(4, 10, torch.Generator().manual_seed(7), temperature=0.5)
    assert torch.equal(a, b) and a.shape == (4, 10)
    c = sample_prior(4, 10, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, 0.5 * c)


@pytest.fixture
def anisotropic_latents():
    # 2000 points in 6-D: stds 5, 2, then small; the big axes rotated off the coordinate axes.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 6, generator=g) * torch.tensor([5.0, 2.0, 0.5, 0.3, 0.2, 0.1])
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    return x @ rotation.T + 3.0, rotation


def test_pca_basis_recovers_the_principal_directions(anisotropic_latents):
    latents, rotation = anisotropic_latents
    basis = PcaBasis.fit(latents)
    assert basis.n_components == 6
    assert abs(torch.dot(basis.components[0], rotation[:, 0])) > 0.999
    assert abs(torch.dot(basis.components[1], rotation[:, 1])) > 0.99
    assert basis.std[0] == pytest.approx(5.0, rel=0.05) and basis.std[1] == pytest.approx(2.0, rel=0.05)
    torch.testing.assert_close(basis.mean, torch.full((6,), 3.0), atol=0.3, rtol=0)
    assert (basis.explained_variance.diff() <= 0).all()
    assert basis.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-5)


def test_pca_coordinates_are_in_standard_deviations(anisotropic_latents):
    latents, _ = anisotropic_latents
    basis = PcaBasis.fit(latents, n_components=3)
    coords = basis.project(latents)
    torch.testing.assert_close(coords.std(0), torch.ones(3), atol=0.01, rtol=0)
    # to_latent(project(z)) is z's projection onto the kept span; with all components, z itself.
    full = PcaBasis.fit(latents)
    torch.testing.assert_close(full.to_latent(full.project(latents[:10])), latents[:10], atol=1e-3, rtol=1e-4)
    # One std along PC0 moves the latent by std0 along component 0.
    step = basis.to_latent(torch.tensor([1.0])) - basis.mean
    torch.testing.assert_close(step, basis.std[0] * basis.components[0])


def test_dim_std_is_each_latent_dimensions_own_spread(anisotropic_latents):
    latents, _ = anisotropic_latents
    basis = PcaBasis.fit(latents)
    torch.testing.assert_close(basis.dim_std, latents.double().std(0).float(), atol=1e-3, rtol=1e-3)


def test_pca_grid_and_its_errors(anisotropic_latents):
    latents, _ = anisotropic_latents
    basis = PcaBasis.fit(latents, n_components=3)
    grid = basis.grid(0, 2, span=3, steps=4)
    assert grid.shape == (4, 4, 6)
    coords = basis.project(grid)
    torch.testing.assert_close(coords[0, :, 0], torch.linspace(-3, 3, 4), atol=1e-4, rtol=0)
    torch.testing.assert_close(coords[:, 0, 2], torch.linspace(-3, 3, 4), atol=1e-4, rtol=0)
    torch.testing.assert_close(coords[..., 1], torch.zeros(4, 4), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="pc_x=3 is beyond the stored components"):
        basis.grid(3, 0)


def test_pca_basis_round_trips_through_tensors(anisotropic_latents):
    basis = PcaBasis.fit(anisotropic_latents[0], n_components=2)
    again = PcaBasis.from_tensors(basis.to_tensors())
    for name in PcaBasis.__dataclass_fields__:
        assert torch.equal(getattr(again, name), getattr(basis, name))
    with pytest.raises(KeyError, match="pca.mean"):
        PcaBasis.from_tensors({})
    with pytest.raises(ValueError):
        PcaBasis.fit(torch.zeros(1, 4))


def test_a_seed_names_the_same_faces_whatever_the_grid_size():


    one, sixteen = (sample_prior(n, 100, torch.Generator().manual_seed(7)) for n in (1, 16))
    assert torch.equal(one[0], sixteen[0])
    three = sample_prior(3, 100, torch.Generator().manual_seed(7))
    assert torch.equal(three, sixteen[:3])
    basis = PcaBasis.fit(torch.randn(200, 100, generator=torch.Generator().manual_seed(0)), n_components=20)
    # the same coordinates; the basis's matrix product may round the last bit differently by batch size
    torch.testing.assert_close(basis.sample(1, torch.Generator().manual_seed(3))[0],
                               basis.sample(9, torch.Generator().manual_seed(3))[0], rtol=1e-6, atol=1e-6)
