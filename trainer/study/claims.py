"""The seed's seven claims, each measured on a Study's models and faces: (figures, plot data, verdict).

Images come from the service's own latents and decoders (models_core.views, figures.Renderer), so a
figure here describes what the API serves. FID and KID use the standard Inception features
(trainer.fid), cached per image set; without that network they are left out and said so.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models_core import views
from models_core.figures import Renderer
from models_core.images import from_uint8, psnr
from models_core.latent import PcaBasis, lerp, slerp
from trainer.data import PackedFaces
from trainer.fid import fid_from_features, inception_features, kid_from_features, real_features
from trainer.study import measures
from trainer.study import verdicts as v

TRUNCATIONS = (2, 5, 10, 20, 30, 50, 100)
PATH_TS = np.linspace(0, 1, 11)
PPL_EPSILON = 1e-4  # Karras et al. 2019
GRID, SPAN = 7, 3.0  # the study's latent-dimension grid: 7 × 7, ±3 around z = 0
GRID_PAIRS = ((0, 1), (2, 3))  # raw dimensions swept
TOP_PCS = 10
BATCH = 250


@dataclass
class Study:
    """What every claim reads: a renderer per model kind ('ae', 'vae', 'gan'), the dataset, N and a seed."""

    models: dict[str, Renderer]
    data: PackedFaces
    n: int
    seed: int
    inception: object | None = None  # the FID network, or None
    cache: Path | None = None  # where Inception features of generated sets are kept
    ppl_paths: int = 200
    progress: bool = True
    cache_hits: int = 0  # generated sets whose features came from the cache
    cache_misses: int = 0
    _memo: dict = field(default_factory=dict)

    # --- faces and latents, computed once ---

    def faces(self, scoring: bool) -> torch.Tensor:
        """(n, 3, H, W) held-out faces in [-1, 1]: valid for fitting (PCA), test for scoring, where the data has them."""
        split = self.data.held_out(scoring=scoring)
        return self.memo(("faces", split), lambda: from_uint8(self.data.tensor(split, "cpu", limit=self.n)).permute(0, 3, 1, 2))

    def latents(self, kind: str, scoring: bool) -> torch.Tensor:
        return self.memo(("latents", kind, scoring), lambda: self.embed(kind, self.faces(scoring)))

    def embed(self, kind: str, faces: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.models[kind].embed(faces[i : i + BATCH]) for i in range(0, len(faces), BATCH)])

    def basis(self, kind: str) -> PcaBasis:
        """PCA of the latent means of the fitting faces, every component."""
        return self.memo(("basis", kind), lambda: PcaBasis.fit(self.latents(kind, scoring=False)))

    def decode(self, kind: str, z: torch.Tensor) -> torch.Tensor:
        """The served images of z (uint8 as the API returns them), as floats in [-1, 1]."""
        r = self.models[kind]
        return from_uint8(torch.cat([r.decode(z[i : i + BATCH]) for i in range(0, len(z), BATCH)]))

    def memo(self, key, compute):
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    # --- Inception features ---

    def features(self, key: str, images) -> np.ndarray | None:
        """Inception features of a generated set, cached under the checkpoints' identity and `key`;
        `images` is called only on a miss. None without the Inception network."""
        if self.inception is None:
            return None
        ids = "-".join(f"{r.ckpt.manifest.name}{r.ckpt.manifest.version}_{r.ckpt.manifest.files['weights.safetensors'][:10]}"
                       for r in self.models.values())
        name = f"{key}-n{self.n}-s{self.seed}.npy"
        path = self.cache / ids / name if self.cache else None
        if path is not None and path.is_file():
            self.cache_hits += 1
            return np.load(path)
        self.cache_misses += 1
        feats = inception_features(self.inception, images(), "cpu", progress=self.progress)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, feats.astype(np.float32))
        return feats

    def real_features(self) -> np.ndarray | None:
        if self.inception is None:
            return None
        split = self.data.held_out(scoring=True)
        return self.memo("real", lambda: real_features(self.inception, self.data, split, self.n, "cpu", progress=self.progress))

    def fid(self, key: str, images) -> dict | None:
        """{'fid', 'kid_mean', 'kid_std'} of a generated set against the held-out real faces."""
        fake, real = self.features(key, images), self.real_features()
        if fake is None:
            return None
        kid, kid_std = kid_from_features(real, fake, subset_size=min(1000, len(real) // 2), seed=self.seed)
        return {"fid": fid_from_features(real, fake), "kid_mean": kid, "kid_std": kid_std}

    def samples(self, kind: str, prior: str = "auto") -> dict | None:
        ckpt = self.models[kind].ckpt
        prior = ckpt.resolve_prior(prior)
        return self.memo(("samples", kind, prior), lambda: self.fid(
            f"{kind}-samples-{prior}", lambda: self.decode(kind, views.prior_latents(ckpt, self.n, self.seed, prior=prior))))


def claim1_variance(s: Study) -> tuple[dict, dict, v.Verdict]:
    """Cumulative explained variance: AE/VAE latent means of held-out faces, GAN first-layer activations (GANSpace)."""
    ratios = {kind: s.basis(kind).explained_variance_ratio.double().numpy() for kind in ("ae", "vae")}
    G = s.models["gan"].ckpt.model
    z = views.prior_latents(s.models["gan"].ckpt, max(s.n, 2 * G.latent_dim), s.seed)
    with torch.inference_mode():
        acts = torch.cat([G.project(z[i : i + BATCH]).flatten(1) for i in range(0, len(z), BATCH)]).numpy()
    ratios["gan"] = measures.explained_variance_ratio(acts)[: G.latent_dim]
    reach = {kind: measures.components_reaching(r) for kind, r in ratios.items()}
    figures = {"components_reaching": reach,
               "top10_share": {kind: float(r[:10].sum()) for kind, r in ratios.items()},
               "fitted_on": {"ae": "latent means of held-out faces", "vae": "latent means of held-out faces",
                             "gan": "generator's first-layer activations of N(0, I) samples"}}
    return figures, {"ratios": ratios}, v.few_components({k: r["80%"] for k, r in reach.items()})


def claim2_compression(s: Study) -> tuple[dict, dict, v.Verdict]:
    """PSNR with latents kept on their top k PCs, AE against VAE; the VAE's active units."""
    faces = s.faces(scoring=True)
    psnr_by_k = {}
    for kind in ("ae", "vae"):
        b, z = s.basis(kind), s.latents(kind, scoring=True)
        ks = [k for k in TRUNCATIONS if k < b.n_components] + [b.n_components]
        psnr_by_k[kind] = {k: psnr(s.decode(kind, measures.truncate(z, b.mean, b.components, k)), faces).mean().item() for k in ks}
    vae = s.models["vae"].ckpt.model
    with torch.inference_mode():
        mu, logvar = zip(*(vae.encode(faces[i : i + BATCH]) for i in range(0, len(faces), BATCH)))
    mu, logvar = torch.cat(mu), torch.cat(logvar)
    kl = measures.kl_per_dimension(mu, logvar).numpy()
    active = int((kl > measures.ACTIVE_UNIT_NATS).sum())
    active_by_variance = int((mu.double().var(0) > measures.ACTIVE_UNIT_NATS).sum())
    k90 = {kind: measures.components_reaching(s.basis(kind).explained_variance_ratio.double().numpy())["90%"] for kind in ("ae", "vae")}
    figures = {"psnr_db_by_k": {kind: {str(k): round(p, 3) for k, p in by_k.items()} for kind, by_k in psnr_by_k.items()},
               "vae_active_units": active, "vae_active_units_by_mean_variance": active_by_variance,
               "vae_latent_dim": len(kl), "vae_kl_nats_total": float(kl.sum()), "components_reaching_90%": k90}
    verdict = v.compressible(psnr_by_k, active, len(kl), k90)
    return figures, {"psnr_by_k": psnr_by_k, "kl_per_dim": kl}, verdict


def typical_norm(ckpt) -> float:
    """sqrt(E ||z||²) under the model's default prior."""
    mean, std = ckpt.prior_moments()
    return float((mean.double().pow(2).sum() + std.double().pow(2).sum()).sqrt())


def claim3_slerp(s: Study) -> tuple[dict, dict, v.Verdict]:
    """Latent norms along lerp and slerp paths, FID/KID of their midpoints and endpoints, and PPL."""
    figures, plot, mid_fid = {}, {}, {}
    for kind in ("gan", "vae"):
        ckpt = s.models[kind].ckpt
        z0, z1 = views.prior_latents(ckpt, s.n, s.seed), views.prior_latents(ckpt, s.n, s.seed + 1)
        norms = {m: [float(f(z0, z1, t).norm(dim=1).mean()) for t in PATH_TS] for m, f in (("lerp", lerp), ("slerp", slerp))}
        mids = {m: s.fid(f"{kind}-{m}-mid", lambda f=f: s.decode(kind, f(z0, z1, 0.5))) for m, f in (("lerp", lerp), ("slerp", slerp))}
        ends = s.samples(kind)
        figures[kind] = {"typical_norm": typical_norm(ckpt), "midpoint_norm": {m: n[len(n) // 2] for m, n in norms.items()},
                         "midpoint": mids, "endpoints": ends, "ppl": ppl(s, kind) if s.inception is not None else None}
        plot[kind] = {"norms": norms, "typical": typical_norm(ckpt)}
        if mids["lerp"] is not None:
            mid_fid[kind] = {m: r["fid"] for m, r in mids.items()}
    figures["path_t"] = PATH_TS.tolist()
    verdict = v.slerp_beats_lerp(mid_fid)
    if s.inception is not None:  # slerp keeps the norm, so its paths are longer in z: PPL per unit t need not be lower
        verdict.why += "; PPL slerp vs lerp: " + ", ".join(
            f"{k} {figures[k]['ppl']['slerp']['mean']:.4g} vs {figures[k]['ppl']['lerp']['mean']:.4g}" for k in ("gan", "vae"))
    return figures, plot, verdict


def ppl(s: Study, kind: str) -> dict:
    """Perceptual path length of lerp and slerp paths between the model's samples, in Inception space."""
    ckpt, r = s.models[kind].ckpt, s.models[kind]
    m = s.ppl_paths
    z0, z1 = views.prior_latents(ckpt, m, s.seed + 2), views.prior_latents(ckpt, m, s.seed + 3)
    t = torch.rand(m, 1, generator=torch.Generator().manual_seed(s.seed)) * (1 - PPL_EPSILON)

    def decode(z):  # floats, not the served uint8: a step of 1e-4 moves pixels by far less than a level
        with torch.inference_mode(), r.autocast():
            return torch.cat([r.net.decode(z[i : i + BATCH]).float() for i in range(0, len(z), BATCH)])

    out = {}
    for name, f in (("lerp", lerp), ("slerp", slerp)):
        fa = s.features(f"{kind}-ppl-{name}-a{m}", lambda: decode(f(z0, z1, t)))
        fb = s.features(f"{kind}-ppl-{name}-b{m}", lambda: decode(f(z0, z1, t + PPL_EPSILON)))
        out[name] = measures.perceptual_path_length(fa, fb, PPL_EPSILON)
    return out


def claim4_structure(s: Study) -> tuple[dict, dict, v.Verdict]:
    """FID of N(0, I) and fitted samples, AE against VAE; smoothness of the latent-dimension grid."""
    figures, plot = {}, {}
    scale = measures.mean_pair_distance(s.real_features(), seed=s.seed) if s.inception is not None else None
    for kind in ("ae", "vae"):
        ckpt = s.models[kind].ckpt
        figures[kind] = {"standard": s.samples(kind, "standard"), "fitted": s.samples(kind, "fitted")}
        if scale is None:
            continue
        grids = [s.features(f"{kind}-grid-{a}-{b}", lambda a=a, b=b: s.decode(kind, views.latent_grid_latents(
            ckpt, a, b, SPAN, GRID, centre="zero", units="absolute"))) for a, b in GRID_PAIRS]
        dists = np.concatenate([measures.grid_neighbour_distances(g, GRID) for g in grids]) / scale
        figures[kind]["grid"] = {"step_mean": float(dists.mean()), "step_std": float(dists.std()),
                                 "step_spread": float(dists.std() / dists.mean()),
                                 "variety": float(np.mean([measures.mean_distance_within(g) for g in grids])) / scale}
        plot[kind] = dists
    prior_fid = {k: figures[k]["standard"]["fid"] for k in ("ae", "vae")} if s.inception is not None else None
    grid = {k: figures[k]["grid"] for k in ("ae", "vae")} if scale is not None else {}
    figures["grid_is"] = f"{GRID}×{GRID}, ±{SPAN:g} around z = 0 along dimensions {list(GRID_PAIRS)}; distances in " \
                      "units of the mean distance between two random real faces"
    return figures, plot, v.vae_grid_more_structured(prior_fid, grid)


def claim5_semantics(s: Study, max_faces: int = 5000) -> tuple[dict, dict, v.Verdict]:
    """Correlation of the top PCs' coordinates with the 40 attributes (and two lighting stand-ins) on labelled training faces."""
    from trainer.directions import NoLabels, labelled_training_faces

    try:
        labelled = labelled_training_faces(s.data, max_faces)
    except NoLabels as e:
        return {"not_measured": str(e)}, {}, v.semantic_components({})
    stats = measures.image_statistics(labelled.faces)
    names = labelled.names + list(stats)
    labels = np.concatenate([labelled.labels.numpy().astype(np.float64),
                             np.stack([np.sign(x - np.median(x)) for x in stats.values()], 1)], 1)
    figures, plot, strongest = {"n_faces": len(labelled.faces)}, {"names": names}, {}
    for kind in ("ae", "vae"):
        b = s.basis(kind)
        k = min(TOP_PCS, b.n_components)
        coords = b.project(s.embed(kind, labelled.faces))[:, :k].numpy()
        r = measures.correlations(coords, labels)
        r = np.where(np.isnan(r), 0.0, r)
        order = np.argsort(-np.abs(r), axis=1)
        strongest[kind] = [(names[order[pc, 0]], float(r[pc, order[pc, 0]])) for pc in range(k)]
        figures[kind] = {f"PC{pc + 1}": {names[a]: round(float(r[pc, a]), 3) for a in order[pc, :3]} for pc in range(k)}
        plot[kind] = r
    return figures, plot, v.semantic_components(strongest)


def claim6_sharpness(s: Study) -> tuple[dict, dict, v.Verdict]:
    """Laplacian variance and radial power spectra of samples against real test faces; FIDs side by side."""
    sets = {"real": s.faces(scoring=True)}
    for kind in ("gan", "vae", "ae"):
        sets[kind] = s.decode(kind, views.prior_latents(s.models[kind].ckpt, s.n, s.seed))
    lap = {k: float(measures.laplacian_variance(x).mean()) for k, x in sets.items()}
    spectra = {k: measures.radial_power_spectrum(x) for k, x in sets.items()}
    figures = {"laplacian_variance": lap,
               "high_frequency_share": {k: measures.high_frequency_share(p) for k, p in spectra.items()},
               "fid": {k: s.samples(k) for k in ("gan", "vae", "ae")}}
    return figures, {"spectra": spectra, "laplacian": lap}, v.gan_sharper(lap)


def read_run(run_dir: Path) -> tuple[dict, list[dict]]:
    config = json.loads((run_dir / "config.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return config, rows


def latest_run(runs: Path, kind: str) -> Path | None:
    """The newest run folder under `runs` that trained `kind` and logged metrics."""
    found = []
    for config in runs.glob("*/config.json"):
        try:
            if json.loads(config.read_text()).get("model") == kind and (config.parent / "metrics.jsonl").is_file():
                found.append(config.parent)
        except (OSError, json.JSONDecodeError):
            continue
    return max(found, key=lambda p: p.name) if found else None


def vae_dynamics(config: dict, rows: list[dict]) -> dict:
    rows = [r for r in rows if "kl" in r and "loss" in r]
    beta = config.get("beta_kl", 0.03)
    recon_share = [1 - beta * r["kl"] / r["loss"] for r in rows]
    kl = [r["kl"] for r in rows]
    return {"steps": [r["step"] for r in rows], "recon_term": [r["loss"] - beta * r["kl"] for r in rows],
            "kl_term": [beta * r["kl"] for r in rows], "kl": kl, "recon": [r["recon"] for r in rows],
            "recon_share_early": measures.window_mean(recon_share, 0, v.EARLY),
            "kl_early": measures.window_mean(kl, 0, v.EARLY), "kl_late": measures.window_mean(kl, 0.75, 1.0),
            "kl_settled_at_step": next(r["step"] for r, x in zip(rows, kl) if x >= 0.9 * measures.window_mean(kl, 0.75, 1.0)),
            "kl_share_late": 1 - measures.window_mean(recon_share, 0.75, 1.0), "beta_kl": beta}


def gan_dynamics(rows: list[dict]) -> dict:
    rows = [r for r in rows if "D_x" in r]
    late = rows[len(rows) // 2 :]
    balanced = [r["D_x"] - r["D_G_z"] < v.D_DOMINATES and r["D_G_z"] < r["D_x"] for r in late]
    return {"steps": [r["step"] for r in rows], "D_x": [r["D_x"] for r in rows], "D_G_z": [r["D_G_z"] for r in rows],
            "balanced_share": float(np.mean(balanced)) if balanced else 0.0,
            "D_x_late": float(np.mean([r["D_x"] for r in late])) if late else None,
            "D_G_z_late": float(np.mean([r["D_G_z"] for r in late])) if late else None}


def claim7_dynamics(runs: Path | None) -> tuple[dict, dict, v.Verdict]:
    """Reconstruction and KL over a VAE run's steps; D(x) and D(G(z)) over a GAN run's."""
    found = {kind: latest_run(runs, kind) if runs and runs.is_dir() else None for kind in ("vae", "gan")}
    summaries, figures = {}, {}
    for kind, run_dir in found.items():
        if run_dir is None:
            continue
        config, rows = read_run(run_dir)
        summaries[kind] = vae_dynamics(config, rows) if kind == "vae" else gan_dynamics(rows)
        if not summaries[kind]["steps"]:
            del summaries[kind]
            continue
        figures[kind] = {"run": run_dir.name, "preset": config.get("preset"), "epochs": config.get("epochs"),
                         "logged_steps": len(summaries[kind]["steps"]),
                         **{k: x for k, x in summaries[kind].items() if not isinstance(x, list)}}
    verdict = v.training_dynamics(summaries.get("vae"), summaries.get("gan"))
    return figures, summaries, verdict
