"""The study's plots, one PNG per claim, drawn with matplotlib's file-only backend."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLOURS = {"ae": "tab:blue", "vae": "tab:orange", "gan": "tab:green", "real": "black"}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def variance(plot: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, ratios in plot["ratios"].items():
        ax.plot(np.arange(1, len(ratios) + 1), np.cumsum(ratios), label=kind.upper(), color=COLOURS[kind])
    for level in (0.8, 0.9, 0.95):
        ax.axhline(level, color="grey", lw=0.5, ls="--")
    ax.set(xlabel="principal components", ylabel="cumulative share of variance", ylim=(0, 1.01), xscale="log",
           title="Claim 1: variance by principal component")
    ax.legend()
    return _save(fig, path)


def compression(plot: dict, path: Path) -> Path:
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for kind, by_k in plot["psnr_by_k"].items():
        a.plot(list(by_k), list(by_k.values()), "o-", label=kind.upper(), color=COLOURS[kind])
    a.set(xlabel="latent kept on its top k PCs", ylabel="reconstruction PSNR (dB)", xscale="log", title="PSNR vs k")
    a.legend()
    kl = np.sort(plot["kl_per_dim"])[::-1]
    b.bar(np.arange(1, len(kl) + 1), kl, color=COLOURS["vae"])
    b.axhline(0.01, color="grey", ls="--", lw=0.8, label="0.01 nats (active)")
    b.set(xlabel="VAE latent dimension (sorted)", ylabel="mean KL (nats)", yscale="log", title="VAE KL per dimension")
    b.legend()
    return _save(fig, path)


def interpolation(plot: dict, figures: dict, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    t = figures["path_t"]
    for ax, kind in zip(axes, ("gan", "vae")):
        for method, style in (("lerp", "--"), ("slerp", "-")):
            ax.plot(t, plot[kind]["norms"][method], style, label=method, color=COLOURS[kind])
        ax.axhline(plot[kind]["typical"], color="grey", lw=0.8, label="prior's typical norm")
        ax.set(xlabel="t", ylabel="mean ||z||", title=f"{kind.upper()}: latent norm along the path")
        ax.legend()
    return _save(fig, path)


def structure(plot: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, dists in plot.items():
        ax.hist(dists, bins=30, alpha=0.6, label=kind.upper(), color=COLOURS[kind])
    ax.set(xlabel="feature distance between neighbouring grid tiles (× mean real-pair distance)", ylabel="tile pairs",
           title="Claim 4: steps across the latent-dimension grid")
    ax.legend()
    return _save(fig, path)


def semantics(plot: dict, path: Path) -> Path:
    kinds = [k for k in ("ae", "vae") if k in plot]
    names = plot["names"]
    fig, axes = plt.subplots(len(kinds), 1, figsize=(14, 3.2 * len(kinds)), squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds):
        r = plot[kind]
        im = ax.imshow(r, cmap="RdBu_r", vmin=-0.8, vmax=0.8, aspect="auto")
        ax.set_yticks(range(len(r)), [f"PC{i + 1}" for i in range(len(r))], fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_title(f"{kind.upper()}: Pearson r of PC coordinates with attributes")
        fig.colorbar(im, ax=ax)
    return _save(fig, path)


def sharpness(plot: dict, path: Path) -> Path:
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for kind, p in plot["spectra"].items():
        a.plot(np.arange(1, len(p) + 1), p, label=kind.upper() if kind != "real" else "real faces", color=COLOURS[kind])
    a.set(xlabel="spatial frequency (cycles per image)", ylabel="mean power", xscale="log", yscale="log",
          title="radial power spectrum")
    a.legend()
    kinds = list(plot["laplacian"])
    b.bar(kinds, [plot["laplacian"][k] for k in kinds], color=[COLOURS[k] for k in kinds])
    b.set(ylabel="mean variance of the Laplacian", title="sharpness")
    return _save(fig, path)


def dynamics(plot: dict, path: Path) -> Path | None:
    panels = [k for k in ("vae", "gan") if k in plot]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, kind in zip(axes[0], panels):
        d = plot[kind]
        if kind == "vae":
            ax.plot(d["steps"], d["recon_term"], label="reconstruction (summed squared error)", color=COLOURS["vae"])
            ax.plot(d["steps"], d["kl_term"], label=f"β·KL (β = {d['beta_kl']:g})", color="tab:red")
            ax.set(yscale="log", ylabel="loss per image", title="VAE: reconstruction and KL")
        else:
            ax.plot(d["steps"], d["D_x"], label="D(x)", color="black")
            ax.plot(d["steps"], d["D_G_z"], label="D(G(z))", color=COLOURS["gan"])
            ax.set(ylim=(0, 1), ylabel="discriminator's mean P(real)", title="GAN: D(x) and D(G(z))")
        ax.set(xlabel="step")
        ax.legend()
    return _save(fig, path)
