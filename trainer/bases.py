"""Latent directions computed once at publish time, so the service never fits anything per request."""

import numpy as np
import torch
import torch.nn as nn

from models_core.dcgan import Generator
from models_core.latent import PcaBasis, sample_prior
from models_core.images import from_uint8


@torch.no_grad()
def latent_pca(net: nn.Module, faces: torch.Tensor, device: torch.device, batch_size: int = 250) -> PcaBasis:
    """PCA of the latent means of held-out faces (the seed's 5000), for AE/VAE `/pca-grid`."""
    net.eval()
    latents = [
        net.embed(from_uint8(faces[i : i + batch_size].to(device)).permute(0, 3, 1, 2)).float().cpu()
        for i in range(0, len(faces), batch_size)
    ]
    return PcaBasis.fit(torch.cat(latents))


@torch.no_grad()
def ganspace_basis(G: Generator, device: torch.device, n_samples: int = 5000, n_components: int = 20, seed: int = 0) -> PcaBasis:
    """GANSpace directions (Härkönen et al. 2020, §2): PCA of the generator's first-layer
    activations for random z, each principal direction carried back to z by least squares.

    The directions are unit vectors in z; since z ~ N(0, I) has unit variance along any unit
    direction, one "standard deviation" along each is 1, and the basis is centred on the prior mean.
    """
    from sklearn.decomposition import PCA

    G.eval()
    z = sample_prior(n_samples, G.latent_dim, torch.Generator().manual_seed(seed))
    feats = torch.cat([G.project(z[i : i + 500].to(device)).flatten(1).float().cpu() for i in range(0, n_samples, 500)])
    k = min(n_components, G.latent_dim, n_samples - 1)
    pca = PCA(n_components=k, svd_solver="randomized", random_state=seed).fit(feats.numpy())
    coords = pca.transform(feats.numpy())  # (N, k)
    directions = np.linalg.lstsq(coords, z.numpy(), rcond=None)[0]  # (k, D): z ≈ coords @ directions
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return PcaBasis(
        mean=torch.zeros(G.latent_dim),
        components=torch.from_numpy(directions).float(),
        explained_variance=torch.ones(k),
        explained_variance_ratio=torch.from_numpy(pca.explained_variance_ratio_).float(),
    )
