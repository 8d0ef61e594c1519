"""DiffAugment (Zhao et al. 2020): the same random, differentiable changes to every image the
discriminator sees, real or fake, in both the D and the G update.

On small data D learns the training faces by heart and G's signal fades (on 16k CelebA faces the
seed DCGAN's D(x) climbed to 0.94 after ~40 epochs and its samples got worse). Augmenting both
sides keeps D from memorising without teaching G to draw augmented faces, because G's gradient
passes through the same augmentation. Policy: colour, translation by up to 1/8 of the side, and
cutout of a square half the side, as the paper uses for small datasets.
"""

import torch
import torch.nn.functional as F


def diff_augment(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images in [-1, 1] -> augmented float32 images of the same shape; differentiable in x.

    In float32 whatever comes in: under bf16 autocast the fakes arrive in bf16 and the reals in
    float32, and both sides must be changed alike."""
    return cutout(translate(colour(x.float())))


def colour(x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    rand = lambda: torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype)  # noqa: E731
    x = x + (rand() - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (2 * rand()) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (rand() + 0.5) + mean  # contrast


def translate(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio·side pixels in each direction, zeros coming in."""
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (b, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device)[None, :, None] - dy + sy).expand(b, h, w)
    cols = (torch.arange(w, device=x.device)[None, None, :] - dx + sx).expand(b, h, w)
    padded = F.pad(x, [sx, sx, sy, sy])
    batch = torch.arange(b, device=x.device)[:, None, None].expand(b, h, w)
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero a square of ratio·side at a random place in each image (it may hang over the edge)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device) - cw // 2
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)
