"""A small CNN that tells CelebA's 40 attributes from a 64×64 face, trained on the labelled faces.

It labels a GAN's samples (InterFaceGAN fits its boundaries on what such a classifier says about
G(z)), and, trained on other faces than the directions were fitted on, rates edits. Unknown labels
(0) are left out of the loss, so faces labelled for some attributes only still count.
"""

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm


class AttributeClassifier(nn.Module):
    """(B, 3, 64, 64) in [-1, 1] -> (B, A) logits."""

    def __init__(self, n_attributes: int, width: int = 32):
        super().__init__()
        layers, c = [], 3
        for mult in (1, 2, 4, 8):  # 64 -> 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(c, width * mult, 3, 2, 1, bias=False), nn.BatchNorm2d(width * mult), nn.ReLU(inplace=True),
                       nn.Conv2d(width * mult, width * mult, 3, 1, 1, bias=False), nn.BatchNorm2d(width * mult), nn.ReLU(inplace=True)]
            c = width * mult
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(c, n_attributes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, batch: int = 256, autocast=contextlib.nullcontext) -> torch.Tensor:
        """(N, A) P(attribute) for (N, 3, H, W) faces in [-1, 1], with the flipped face averaged in."""
        was = self.training
        self.eval()
        out = []
        for chunk in x.split(batch):
            with autocast():
                logits = self(chunk).float(), self(chunk.flip(-1)).float()
            out.append(0.5 * (torch.sigmoid(logits[0]) + torch.sigmoid(logits[1])))
        self.train(was)
        return torch.cat(out)


def jitter(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips and shifts of up to 4 pixels: 1,000 faces are few for a CNN."""
    flips = torch.rand(len(x), generator=generator) < 0.5
    x = torch.where(flips.view(-1, 1, 1, 1), x.flip(-1), x)
    dy, dx = torch.randint(-4, 5, (2,), generator=generator).tolist()
    return torch.roll(F.pad(x, (4, 4, 4, 4), mode="replicate"), (dy, dx), (2, 3))[..., 4:-4, 4:-4]


def train_classifier(faces: torch.Tensor, labels: torch.Tensor, epochs: int = 40, batch_size: int = 64, lr: float = 2e-3,
                     seed: int = 0, progress: bool = True, autocast=contextlib.nullcontext) -> AttributeClassifier:
    """Fit on (N, 3, H, W) faces in [-1, 1] and (N, A) labels of +1 / -1 / 0 (unknown: no loss)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = AttributeClassifier(labels.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * max(1, len(faces) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    target, known = (labels > 0).float(), (labels != 0).float()
    net.train()
    bar = tqdm(total=steps, desc="attribute classifier", unit="step", disable=not progress, leave=False)
    for _ in range(epochs):
        order = torch.randperm(len(faces), generator=g)
        for b in range(max(1, len(faces) // batch_size)):
            idx = order[b * batch_size:(b + 1) * batch_size]
            with autocast():
                logits = net(jitter(faces[idx], g)).float()
            loss = (F.binary_cross_entropy_with_logits(logits, target[idx], reduction="none") * known[idx]).sum()
            loss = loss / known[idx].sum().clamp_min(1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
    bar.close()
    return net.eval()
