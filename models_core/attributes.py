"""Attribute directions: one unit vector per face attribute (Smiling, Male, ...) in a model's latent
space, and edits along them.

An edit of t moves a latent t standard deviations along the direction: the spread of latents along
it (`scale`) makes t mean the same for an AE's raw latents as for a GAN's N(0, I). Editing one
attribute can drag others along where their directions correlate (smiling and femaleness do in
CelebA); InterFaceGAN's conditional manipulation (Shen et al. 2020, §2.2) removes that by editing
along the part of the direction orthogonal to the attributes to hold.

Stored with a model version as extra tensors, `attribute.NAME.{direction,scale,accuracy,n}`, so a
version carries the directions fitted for its own weights.
"""

from dataclasses import dataclass

import torch

PREFIX = "attribute."
FIELDS = ("direction", "scale", "accuracy", "n")


@dataclass(frozen=True)
class AttributeDirection:
    name: str
    direction: torch.Tensor  # (D,) unit vector pointing to the attribute (a boundary's normal, or a class-mean difference)
    scale: float  # std of latents along the direction: an edit of 1 moves one of these
    accuracy: float  # cross-validated balanced accuracy of a linear boundary for the attribute on the same latents
    n: int  # examples the boundary was fitted on (labelled faces, or labelled samples for a GAN)


class AttributeDirections:
    """The published attributes of a model version, by name."""

    def __init__(self, attributes: list[AttributeDirection]):
        self.by_name = {a.name: a for a in attributes}

    def __len__(self) -> int:
        return len(self.by_name)

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    @property
    def names(self) -> list[str]:
        return list(self.by_name)

    def __getitem__(self, name: str) -> AttributeDirection:
        if name not in self.by_name:
            raise KeyError(f"unknown attribute {name!r}; this model has: {', '.join(self.names) or 'none'}")
        return self.by_name[name]

    def conditioned(self, name: str, hold: list[str] = ()) -> torch.Tensor:
        """(D,) unit direction of `name` with the directions of `hold` projected out: moving along it
        leaves the held attributes' boundaries' scores unchanged (to first order, exactly for linear ones)."""
        d = self[name].direction.float()
        held = [self[h].direction.float() for h in dict.fromkeys(hold) if h != name]
        if held:
            u, sv, _ = torch.linalg.svd(torch.stack(held, 1), full_matrices=False)
            q = u[:, sv > 1e-4 * sv.max()]  # an orthonormal basis of their span, whatever their overlap
            d = d - q @ (q.T @ d)
        norm = d.norm()
        if norm < 1e-3:
            raise ValueError(f"{name} lies within the span of {', '.join(hold)}: holding them leaves no direction to edit")
        return d / norm

    def edit(self, z: torch.Tensor, name: str, offsets: torch.Tensor, hold: list[str] = ()) -> torch.Tensor:
        """(N, K, D): each of the (N, D) latents moved by each of the K offsets (in scales) along `name`."""
        step = self.conditioned(name, hold) * self[name].scale
        return z[:, None, :] + offsets.to(z)[None, :, None] * step.to(z)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for a in self.by_name.values():
            p = f"{PREFIX}{a.name}."
            out |= {p + "direction": a.direction.float().contiguous(), p + "scale": torch.tensor(float(a.scale)),
                    p + "accuracy": torch.tensor(float(a.accuracy)), p + "n": torch.tensor(int(a.n))}
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "AttributeDirections":
        names = sorted({k[len(PREFIX):].rsplit(".", 1)[0] for k in tensors if k.startswith(PREFIX)})
        attributes = []
        for name in names:
            p = f"{PREFIX}{name}."
            missing = [p + f for f in FIELDS if p + f not in tensors]
            if missing:
                raise KeyError(f"attribute {name!r} is missing tensors: {', '.join(missing)}")
            attributes.append(AttributeDirection(name, tensors[p + "direction"].float(), float(tensors[p + "scale"]),
                                                 float(tensors[p + "accuracy"]), int(tensors[p + "n"])))
        return cls(attributes)


def edit_offsets(span: float, steps: int) -> torch.Tensor:
    """(steps,) offsets from -span to +span; with an odd count the middle one is exactly 0 (the unedited face)."""
    offsets = torch.linspace(-span, span, steps)
    if steps % 2:
        offsets[steps // 2] = 0.0
    return offsets
