"""The study's measurements as plain functions of tensors and arrays: no models, no files."""

import numpy as np
import torch
import torch.nn.functional as F

LEVELS = (0.8, 0.9, 0.95)  # shares of variance the study asks "how many components reach"
ACTIVE_UNIT_NATS = 0.01  # a latent dimension is active when its mean KL is above this (Burda et al. 2016)


def explained_variance_ratio(x: np.ndarray) -> np.ndarray:
    """Each principal component's share of the total variance of the rows of x, largest first."""
    from sklearn.decomposition import PCA

    return PCA(svd_solver="full").fit(np.asarray(x, dtype=np.float64)).explained_variance_ratio_


def components_reaching(ratios: np.ndarray, levels=LEVELS) -> dict[str, int]:
    """{'80%': k, ...}: the fewest leading components whose shares add up to each level."""
    cumulative = np.cumsum(ratios)
    return {f"{round(level * 100)}%": int(min(np.searchsorted(cumulative, level - 1e-9) + 1, len(ratios)))
            for level in levels}


def truncate(z: torch.Tensor, mean: torch.Tensor, components: torch.Tensor, k: int) -> torch.Tensor:
    """Latents kept only along their first k principal components (rows of `components`)."""
    v = components[:k]
    return mean + ((z - mean) @ v.T) @ v


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(D,) mean KL(q(z_d|x) || N(0, 1)) in nats over the rows: 0.5 (mu² + σ² - log σ² - 1)."""
    return (0.5 * (mu.double() ** 2 + logvar.double().exp() - logvar.double() - 1)).mean(0)


def laplacian_variance(images: torch.Tensor) -> torch.Tensor:
    """(N,) variance of the 3×3 Laplacian of each image's grey levels in [0, 1]: a standard sharpness score."""
    grey = ((images.float() + 1) / 2).mean(1, keepdim=True)
    kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)
    return F.conv2d(grey, kernel).flatten(1).var(1)


def radial_power_spectrum(images: torch.Tensor) -> np.ndarray:
    """Mean power of the grey images' 2-D spectrum by integer radius 1 .. H/2 (cycles per image)."""
    grey = ((images.float() + 1) / 2).mean(1)
    grey = grey - grey.mean((1, 2), keepdim=True)
    power = torch.fft.fftshift(torch.fft.fft2(grey).abs() ** 2, dim=(-2, -1)).mean(0).double()
    h, w = power.shape
    yy, xx = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    radius = (yy**2 + xx**2).double().sqrt().round().long()
    sums = torch.zeros(radius.max() + 1, dtype=torch.float64).index_add_(0, radius.flatten(), power.flatten())
    counts = torch.bincount(radius.flatten()).double()
    return (sums / counts)[1 : h // 2 + 1].numpy()


def high_frequency_share(spectrum: np.ndarray) -> float:
    """Share of the spectrum's power in its upper half of frequencies."""
    return float(spectrum[len(spectrum) // 2 :].sum() / spectrum.sum())


def perceptual_path_length(fa: np.ndarray, fb: np.ndarray, epsilon: float) -> dict[str, float]:
    """PPL (Karras et al. 2019, §3): squared feature distance between images ε apart on a path, / ε².
    Here in Inception feature space; the 1% tails are dropped as in the paper."""
    d = ((fa - fb) ** 2).sum(1) / epsilon**2
    lo, hi = np.percentile(d, [1, 99])
    kept = d[(d >= lo) & (d <= hi)]
    return {"mean": float(kept.mean()), "median": float(np.median(d)), "paths": len(d)}


def grid_neighbour_distances(features: np.ndarray, steps: int) -> np.ndarray:
    """Feature distances between horizontally and vertically adjacent tiles of a steps × steps grid."""
    f = features.reshape(steps, steps, -1)
    across = np.linalg.norm(f[:, 1:] - f[:, :-1], axis=-1).ravel()
    down = np.linalg.norm(f[1:] - f[:-1], axis=-1).ravel()
    return np.concatenate([across, down])


def mean_distance_within(features: np.ndarray) -> float:
    """Mean distance between all pairs of different rows: how much a set of tiles varies at all."""
    d = np.linalg.norm(features[:, None] - features[None], axis=-1)
    n = len(features)
    return float(d.sum() / (n * (n - 1)))


def mean_pair_distance(features: np.ndarray, pairs: int = 2000, seed: int = 0) -> float:
    """Mean feature distance between random pairs of different rows: the scale grid steps are measured in."""
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(features), pairs), rng.integers(0, len(features), pairs)
    keep = i != j
    return float(np.linalg.norm(features[i[keep]] - features[j[keep]], axis=1).mean())


def correlations(coords: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(K, A) Pearson correlation of each coordinate with each label column, over the rows where the
    label is known (non-zero); NaN where a label is constant over those rows."""
    out = np.full((coords.shape[1], labels.shape[1]), np.nan)
    for a in range(labels.shape[1]):
        known = labels[:, a] != 0
        y = labels[known, a].astype(np.float64)
        if known.sum() < 3 or y.std() == 0:
            continue
        x = coords[known].astype(np.float64)
        x = (x - x.mean(0)) / x.std(0).clip(min=1e-12)
        out[:, a] = (x * ((y - y.mean()) / y.std())[:, None]).mean(0)
    return out


def image_statistics(images: torch.Tensor) -> dict[str, np.ndarray]:
    """Lighting stand-ins the attribute labels lack: overall brightness, and left-minus-right brightness
    (light from one side, or a turned head)."""
    grey = ((images.float() + 1) / 2).mean(1)
    half = grey.shape[-1] // 2
    return {"brightness": grey.mean((1, 2)).numpy(),
            "left_minus_right": (grey[..., :half].mean((1, 2)) - grey[..., -half:].mean((1, 2))).numpy()}


def window_mean(values: list[float], start: float, end: float) -> float:
    """Mean of the values between fractions start and end of the list (at least one value)."""
    n = len(values)
    a = min(int(n * start), n - 1)
    b = max(int(n * end), a + 1)
    return float(np.mean(values[a:b]))
