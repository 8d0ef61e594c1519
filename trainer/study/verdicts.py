"""Each claim's verdict from its figures, with the threshold it uses written beside it.

A verdict is one of HOLDS, PARTLY, FAILS, or NOT_MEASURED where its inputs are missing (no
Inception network, no labels, no run log). The functions take plain numbers so each rule can be
tested on inputs that make it hold and inputs that make it fail.
"""

from dataclasses import asdict, dataclass

HOLDS, PARTLY, FAILS, NOT_MEASURED = "holds", "partly holds", "does not hold", "not measured"

FEW_COMPONENTS = 20  # claim 1: "the top 10-20 PCs capture 80%+"
COMPRESSED_DIMS = 30  # claim 2: "compress from 100 to 20-30 dims"
MUCH_QUALITY_DB = 1.0  # claim 2: "without losing much quality": within this many dB of the full latent
MARGIN = 0.05  # claims 3 and 4: one figure beats another only by more than 5% of it
EVEN_STEPS = 0.5  # claim 4: neighbouring grid tiles change evenly when their distances' std / mean is at most this
SEMANTIC_R = 0.3  # claim 5: a PC "corresponds" to an attribute at |Pearson r| >= this
SHARPER = 1.5  # claim 6: "noticeably sharper" = Laplacian variance at least 1.5× the VAE's
SOMEWHAT_SHARPER = 1.1
EARLY = 0.02  # claim 7: "early on" = the first 2% of a run's logged steps
RECON_DOMINATES = 0.9  # claim 7: reconstruction's share of the VAE loss early on
KL_KICKS_IN = 2.0  # claim 7: the KL (nats) at the end at least 2× its early value
D_DOMINATES = 0.8  # claim 7: D(x) - D(G(z)) above this means D wins outright
BALANCED_SHARE = 0.9  # claim 7: share of the late steps in balance for "holds"


@dataclass
class Verdict:
    verdict: str
    threshold: str
    why: str

    def to_dict(self) -> dict:
        return asdict(self)


def combine(parts: list[str]) -> str:
    """All parts hold -> holds; none holds (or partly) -> does not hold; otherwise partly."""
    measured = [p for p in parts if p != NOT_MEASURED]
    if not measured:
        return NOT_MEASURED
    if all(p == HOLDS for p in measured):
        return HOLDS
    if all(p == FAILS for p in measured):
        return FAILS
    return PARTLY


def few_components(k80: dict[str, int]) -> Verdict:
    """Claim 1, k80 = {model: components reaching 80%}."""
    holding = {m: k <= FEW_COMPONENTS for m, k in k80.items()}
    parts = [HOLDS if ok else FAILS for ok in holding.values()]
    why = "; ".join(f"{m}: 80% at k = {k}" for m, k in k80.items())
    return Verdict(combine(parts), f"holds for a model when 80% of the variance is reached by k <= {FEW_COMPONENTS}", why)


def compressible(psnr_by_k: dict[str, dict[int, float]], active_units: int | None, latent_dim: int,
                 k90: dict[str, int]) -> Verdict:
    """Claim 2. psnr_by_k = {model: {k: dB}}, k90 = {model: components reaching 90%}."""
    parts, why = [], []
    for model, by_k in psnr_by_k.items():
        k = max(k for k in by_k if k <= COMPRESSED_DIMS)  # a latent narrower than 30 is compared at its width
        loss = by_k[max(by_k)] - by_k[k]
        parts.append(HOLDS if loss <= MUCH_QUALITY_DB else PARTLY if loss <= 2 * MUCH_QUALITY_DB else FAILS)
        why.append(f"{model} loses {loss:.2f} dB at k = {k}")
    if active_units is not None and "vae" in k90 and "ae" in k90:
        fewer = active_units <= latent_dim // 2 and k90["vae"] < k90["ae"]
        parts.append(HOLDS if fewer else FAILS)
        why.append(f"VAE active units {active_units} of {latent_dim}; 90% at k = {k90['vae']} (VAE) vs {k90['ae']} (AE)")
    return Verdict(combine(parts), f"compression holds when PSNR at k = {COMPRESSED_DIMS} is within {MUCH_QUALITY_DB:g} dB "
                   f"of k = all (partly within {2 * MUCH_QUALITY_DB:g}); 'fewer effective dimensions' when the VAE has "
                   f"at most half its dimensions active and needs fewer components than the AE for 90%", "; ".join(why))


def beats(a: float, b: float) -> bool:
    """a is lower (better) than b by more than MARGIN of b."""
    return a < b * (1 - MARGIN)


def slerp_beats_lerp(mid_fid: dict[str, dict[str, float]] | None) -> Verdict:
    """Claim 3, mid_fid = {model: {'lerp': FID, 'slerp': FID}} of path midpoints."""
    if not mid_fid:
        return Verdict(NOT_MEASURED, "", "FID needs the Inception network (pip install '.[eval]')")
    parts, why = [], []
    for model, fid in mid_fid.items():
        parts.append(HOLDS if beats(fid["slerp"], fid["lerp"]) else FAILS if beats(fid["lerp"], fid["slerp"]) else PARTLY)
        why.append(f"{model}: midpoint FID slerp {fid['slerp']:.1f} vs lerp {fid['lerp']:.1f}")
    return Verdict(combine(parts), f"holds for a model when slerp's midpoint FID is more than {MARGIN:.0%} below lerp's "
                   "(a tie within 5% counts as partly)", "; ".join(why))


def vae_grid_more_structured(prior_fid: dict[str, float] | None, grid: dict[str, dict]) -> Verdict:
    """Claim 4. prior_fid = {'ae': FID of samples from N(0, I), 'vae': ...}; grid = {'ae': {'variety': mean distance
    between the grid's tiles, 'step_spread': std / mean of neighbouring tiles' distances}, 'vae': ...}."""
    parts, why = [], []
    if prior_fid:
        parts.append(HOLDS if beats(prior_fid["vae"], prior_fid["ae"]) else FAILS)
        why.append(f"FID of N(0, I) samples: VAE {prior_fid['vae']:.1f} vs AE {prior_fid['ae']:.1f}")
    if grid:
        ae, vae = grid["ae"], grid["vae"]
        parts.append(HOLDS if vae["variety"] > ae["variety"] * (1 + MARGIN) else FAILS)
        parts.append(HOLDS if vae["step_spread"] <= EVEN_STEPS else FAILS)
        why.append(f"grid tiles vary by {vae['variety']:.2f} (VAE) vs {ae['variety']:.2f} (AE); VAE step spread "
                   f"{vae['step_spread']:.2f}")
    return Verdict(combine(parts), f"holds when the VAE beats the AE by more than {MARGIN:.0%} on the FID of samples from "
                   "N(0, I) and on the variety of its grid (mean Inception distance between its tiles: an AE grid of one "
                   f"repeated tile has none), and its grid changes evenly (std / mean of neighbouring steps <= {EVEN_STEPS})",
                   "; ".join(why))


def semantic_components(strongest: dict[str, list[tuple[str, float]]]) -> Verdict:
    """Claim 5, strongest = {model: [(attribute, r) of PC1, of PC2, ...]}: each PC's strongest attribute."""
    if not strongest:
        return Verdict(NOT_MEASURED, "", "needs a dataset with CelebA's attribute labels")
    parts, why = [], []
    for model, pcs in strongest.items():
        named = sum(abs(r) >= SEMANTIC_R for _, r in pcs)
        seed_like = (pcs[0][0] in ("brightness", "left_minus_right") and abs(pcs[0][1]) >= SEMANTIC_R) or \
                    (len(pcs) > 1 and pcs[1][0] in ("Male", "Young") and abs(pcs[1][1]) >= SEMANTIC_R)
        parts.append(HOLDS if named >= len(pcs) / 2 and seed_like else PARTLY if named >= 3 else FAILS)
        why.append(f"{model}: {named} of {len(pcs)} PCs have |r| >= {SEMANTIC_R}; PC1 {pcs[0][0]} ({pcs[0][1]:+.2f})"
                   + (f", PC2 {pcs[1][0]} ({pcs[1][1]:+.2f})" if len(pcs) > 1 else ""))
    return Verdict(combine(parts), f"holds for a model when half its top PCs have an attribute with |r| >= {SEMANTIC_R} and "
                   "PC1 follows lighting or PC2 gender/age as the seed says; partly when at least 3 PCs are named", "; ".join(why))


def gan_sharper(laplacian_variance: dict[str, float]) -> Verdict:
    """Claim 6, {model: mean Laplacian variance of its samples}."""
    ratio = laplacian_variance["gan"] / laplacian_variance["vae"]
    verdict = HOLDS if ratio >= SHARPER else PARTLY if ratio >= SOMEWHAT_SHARPER else FAILS
    return Verdict(verdict, f"holds when the GAN's samples have at least {SHARPER:g}× the VAE's Laplacian variance "
                   f"(partly from {SOMEWHAT_SHARPER:g}×)", f"GAN / VAE Laplacian variance = {ratio:.2f}")


def training_dynamics(vae: dict | None, gan: dict | None) -> Verdict:
    """Claim 7, from summaries of run logs (either may be missing):
    vae = {'recon_share_early', 'kl_early', 'kl_late'}; gan = {'balanced_share'}."""
    parts, why = [], []
    if vae:
        early = vae["recon_share_early"] >= RECON_DOMINATES
        kicks = vae["kl_late"] >= KL_KICKS_IN * vae["kl_early"]
        parts.append(HOLDS if early and kicks else PARTLY if early or kicks else FAILS)
        why.append(f"VAE: reconstruction {vae['recon_share_early']:.1%} of the loss early; KL {vae['kl_early']:.3g} -> "
                   f"{vae['kl_late']:.3g} nats")
    if gan:
        share = gan["balanced_share"]
        parts.append(HOLDS if share >= BALANCED_SHARE else PARTLY if share >= 0.5 else FAILS)
        why.append(f"GAN: in balance at {share:.0%} of the late logged steps")
    if not parts:
        return Verdict(NOT_MEASURED, "", "no run log (metrics.jsonl) of a VAE or GAN under --runs")
    return Verdict(combine(parts), f"VAE: reconstruction >= {RECON_DOMINATES:.0%} of the loss over the first {EARLY:.0%} of logged steps, "
                   f"and the KL at the end >= {KL_KICKS_IN:g}× its early value; GAN: over the last half, neither side "
                   f"dominates (D(x) - D(G(z)) < {D_DOMINATES} and D(G(z)) < D(x)) at >= {BALANCED_SHARE:.0%} of logged steps",
                   "; ".join(why))
