"""The study's report: README.md with each claim's words, figures, plot and verdict, and study.json with every number."""

import json
from pathlib import Path

import numpy as np

# (title, the seed's own words, line in ../shared/seed/vae_gan_celeba.md)
CLAIMS = {
    "1": ("Variance sits in a few principal components",
          "Most variance concentrates in just a few dimensions. The top 10-20 PCs probably capture 80%+ of variation."),
    "2": ("The latent could be compressed to 20-30 dimensions",
          "We used 100 latent dims but could probably get similar results with 20-30 dims. The KL term pushed the encoder "
          "to use fewer effective dimensions."),
    "3": ("Slerp beats lerp", "SLERP consistently beats linear interpolation. It respects the hypersphere geometry where "
          "latent density naturally concentrates."),
    "4": ("The AE's latent grid repeats; the VAE's is structured",
          "the latent space visualization shows repeated patterns. [...] VAE latent space looks much more structured. "
          "The faces transition smoothly across the grid"),
    "5": ("Principal components are semantic", "Principal components often correspond to semantic features. Walking "
          "along PC1 might gradually change lighting or pose, PC2 might control gender or age."),
    "6": ("GAN samples are sharper than VAE samples", "Generated faces look noticeably sharper than VAE samples."),
    "7": ("Training dynamics", "Reconstruction loss dominated early on, then KL divergence kicked in to regularize the "
          "space. [...] (GAN) The losses bounce around as the networks compete, but eventually reach an equilibrium "
          "where neither dominates."),
}


CAVEATS = [
    "- FID and KID compare N samples with N held-out test faces. FID is biased upwards at small N (KID is not), so "
    "compare FIDs within this report only, not with published figures at N = 10,000 or 50,000.",
    "- Every figure describes these versions, trained as briefly as the setup says, on the faces the data holds; "
    "the seed trained longer on all of CelebA. A verdict here is about these models, not about VAEs and GANs at large.",
    "- Claim 7 reads run logs (`metrics.jsonl`), not the bundled versions' own training: its section names the runs.",
    "- Each verdict's threshold is written beside it; the seed's words are soft (\"probably\", \"often\"), so a "
    "threshold is our reading of them.",
]


def plain(x):
    """JSON-ready: numpy scalars and arrays to Python, floats rounded to 6 significant digits."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return plain(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(f"{float(x):.6g}")
    if isinstance(x, np.integer):
        return int(x)
    return x


def fmt(x) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def fid_cell(r: dict | None) -> str:
    return "n/a" if r is None else f"FID {r['fid']:.1f}, KID {r['kid_mean'] * 1e3:.1f}±{r['kid_std'] * 1e3:.1f} ×10⁻³"


def details(number: str, f: dict) -> list[str]:
    """The claim's figures as markdown lines."""
    if number == "1":
        rows = [f"| {k.upper()} | {r['80%']} | {r['90%']} | {r['95%']} | {f['top10_share'][k]:.1%} | {f['fitted_on'][k]} |"
                for k, r in f["components_reaching"].items()]
        return ["| model | k for 80% | 90% | 95% | top 10 PCs hold | PCA of |", "| --- | --- | --- | --- | --- | --- |", *rows]
    if number == "2":
        ks = list(next(iter(f["psnr_db_by_k"].values())))
        rows = [f"| {kind.upper()} | " + " | ".join(f"{by_k.get(k, float('nan')):.2f}" for k in ks) + " |"
                for kind, by_k in f["psnr_db_by_k"].items()]
        return ["Reconstruction PSNR (dB) of held-out faces with the latent kept on its top k PCs:", "",
                "| model | " + " | ".join(f"k={k}" for k in ks) + " |", "|" + " --- |" * (len(ks) + 1), *rows, "",
                f"VAE active units (mean KL > 0.01 nats, as the issue asks): **{f['vae_active_units']} of {f['vae_latent_dim']}**; "
                f"by Burda et al.'s own test (variance of the latent mean over faces > 0.01): "
                f"{f['vae_active_units_by_mean_variance']}. Total KL {f['vae_kl_nats_total']:.1f} nats per face. "
                f"Components for 90% of the variance: VAE {f['components_reaching_90%']['vae']}, AE {f['components_reaching_90%']['ae']}."]
    if number == "3":
        lines = ["| model | midpoint ‖z‖ lerp / slerp (typical) | midpoints lerp | midpoints slerp | endpoints | PPL lerp | PPL slerp |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        for kind in ("gan", "vae"):
            g = f[kind]
            ppl = g["ppl"] or {}
            lines.append(f"| {kind.upper()} | {g['midpoint_norm']['lerp']:.2f} / {g['midpoint_norm']['slerp']:.2f} "
                         f"({g['typical_norm']:.2f}) | {fid_cell(g['midpoint']['lerp'])} | {fid_cell(g['midpoint']['slerp'])} | "
                         f"{fid_cell(g['endpoints'])} | {fmt(ppl.get('lerp', {}).get('mean'))} | {fmt(ppl.get('slerp', {}).get('mean'))} |")
        return lines + ["", "PPL: squared Inception-feature distance between images 10⁻⁴ apart along the path, / 10⁻⁸ "
                        "(Karras et al. 2019, with Inception features instead of LPIPS, whose weights cannot be downloaded here); "
                        "lower is smoother."]
    if number == "4":
        lines = ["| model | samples from N(0, I) | from the fitted Gaussian | grid variety | neighbouring step: mean | spread (std/mean) |",
                 "| --- | --- | --- | --- | --- | --- |"]
        for kind in ("ae", "vae"):
            g, grid = f[kind], f[kind].get("grid", {})
            lines.append(f"| {kind.upper()} | {fid_cell(g['standard'])} | {fid_cell(g['fitted'])} | {fmt(grid.get('variety'))} | "
                         f"{fmt(grid.get('step_mean'))} | {fmt(grid.get('step_spread'))} |")
        return lines + ["", f"Grid: {f['grid_is']}. The AE's latents live far from z = 0 at a scale of their own, so its "
                        "grid at the seed's ±3 shows one repeated tile; the fitted Gaussian is how the AE is sampled here."]
    if number == "5":
        if "not_measured" in f:
            return [f["not_measured"]]
        lines = [f"On {f['n_faces']} labelled training faces; each PC's three strongest attributes (Pearson r). "
                 "`brightness` and `left_minus_right` are lighting stand-ins measured on the image (CelebA labels no "
                 "lighting or pose). The GAN is left out: it has no encoder, so a labelled face has GAN coordinates only "
                 "through a projection of seconds per face.", "", "| PC | AE | VAE |", "| --- | --- | --- |"]
        for pc in f["vae"]:
            cells = [", ".join(f"{a} {r:+.2f}" for a, r in f[k].get(pc, {}).items()) for k in ("ae", "vae")]
            lines.append(f"| {pc} | {cells[0]} | {cells[1]} |")
        return lines
    if number == "6":
        lines = ["| | real test faces | GAN | VAE | AE |", "| --- | --- | --- | --- | --- |",
                 "| Laplacian variance | " + " | ".join(f"{f['laplacian_variance'][k]:.4g}" for k in ("real", "gan", "vae", "ae")) + " |",
                 "| power in the upper half of frequencies | " + " | ".join(f"{f['high_frequency_share'][k]:.2%}" for k in ("real", "gan", "vae", "ae")) + " |",
                 "| samples | | " + " | ".join(fid_cell(f["fid"][k]) for k in ("gan", "vae", "ae")) + " |"]
        return lines
    if number == "7":
        lines = []
        if "vae" in f:
            g = f["vae"]
            lines.append(f"- VAE run `{g['run']}` ({g['preset']} preset, {g['epochs']} epochs, {g['logged_steps']} logged steps): "
                         f"reconstruction is {g['recon_share_early']:.1%} of the loss over the first 2% of logged steps; the KL "
                         f"goes from {g['kl_early']:.3g} to {g['kl_late']:.3g} nats (90% of that by step {g['kl_settled_at_step']}) "
                         f"and ends at {g['kl_share_late']:.1%} of the loss.")
        if "gan" in f:
            g = f["gan"]
            lines.append(f"- GAN run `{g['run']}` ({g['preset']} preset, {g['epochs']} epochs, {g['logged_steps']} logged steps): "
                         f"over the last half D(x) = {fmt(g['D_x_late'])}, D(G(z)) = {fmt(g['D_G_z_late'])} on average; "
                         f"in balance at {g['balanced_share']:.0%} of those steps.")
        return lines or ["No run log found."]
    return []


def write_report(out: Path, setup: dict, results: dict[str, dict], plots: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    claims = {number: {"title": CLAIMS[number][0], "seed_words": CLAIMS[number][1], **r, "plot": plots.get(number)}
              for number, r in results.items()}
    (out / "study.json").write_text(json.dumps(plain({"setup": setup, "claims": claims}), indent=1) + "\n")
    lines = ["# The study, measured", "",
             "Every claim of the seed study (`vae_gan_celeba.md`) as numbers, a plot and a verdict, made by "
             f"`{setup['command']}`. Every number is in [`study.json`](study.json).", "",
             "## Verdicts", "", "| # | claim | our figure | verdict |", "| --- | --- | --- | --- |"]
    for number, r in results.items():
        why = r["verdict"]["why"].replace("|", "\\|")
        lines.append(f"| {number} | {CLAIMS[number][0]} | {why} | **{r['verdict']['verdict']}** |")
    lines += ["", "## Setup and caveats", ""] + [f"- {k}: {'; '.join(v.values()) if isinstance(v, dict) else fmt(v)}"
                                                 for k, v in setup.items() if k != "command"]
    lines += ["", *CAVEATS]
    for number, r in results.items():
        title, words = CLAIMS[number]
        lines += ["", f"## {number}. {title}", "", f"> {words}", ""] + details(number, r["figures"])
        if number in plots:
            lines += ["", f"![claim {number}]({plots[number]})"]
        lines += ["", f"**Verdict: {r['verdict']['verdict']}.** {r['verdict']['why']}.", "",
                  f"Threshold: {r['verdict']['threshold'] or 'n/a'}."]
    (out / "README.md").write_text("\n".join(lines) + "\n")
