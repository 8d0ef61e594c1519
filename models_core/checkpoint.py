"""The checkpoint store: versioned, self-describing, atomically published model versions.

Layout:  ROOT/<model-name>/<version>/
             manifest.json        what the version is and the sha256 of every other file
             weights.safetensors  inference weights only
             extras.safetensors   optional tensors computed at publish time (e.g. a PCA basis)

A version is published by writing a hidden temp dir next to the versions, fsyncing it and
renaming it into place, so readers see a whole version or none, and a crash mid-publish leaves
the earlier versions untouched. Nothing here unpickles: weights are safetensors, metadata JSON.
"""

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models_core.atomic_files import atomic_path, atomic_write_bytes, claim_next_number, fsync_dir, fsync_tree
from models_core.attributes import AttributeDirections
from models_core.dcgan import DISCRIMINATOR_PREFIX, ENCODER_PREFIX, discriminator_from_extras, encoder_from_extras
from models_core.int8 import dequantized, quantized_state
from models_core.latent import PcaBasis, sample_prior
from models_core.kinds import ModelKind, build_model, get_kind

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.safetensors"
EXTRAS_FILE = "extras.safetensors"

# Names become directory names: one path component, no dots first, nothing a shell or URL mangles.
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
VERSION_DIR_RE = re.compile(r"^[0-9]{6,}$")
WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DDP wrappers
PRIORS = ("auto", "standard", "fitted")
# int8: weight-only (models_core/int8.py), conv and linear weights as int8 with per-channel scales
WEIGHT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "int8": torch.int8}


class CheckpointError(Exception):
    """A version that cannot be published or loaded; the message names the file and the problem."""


# --- files ------------------------------------------------------------------------------------


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None):
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- manifest ---------------------------------------------------------------------------------


@dataclass
class Manifest:
    name: str
    kind: str
    version: int
    config: dict
    created_at: str
    files: dict[str, str]  # file name -> sha256
    step: int = 0
    epoch: int = 0
    data_fingerprint: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    weights_dtype: str = "float32"
    provenance: dict[str, Any] = field(default_factory=dict)  # where it came from: run folder, promoted from
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        if not path.is_file():
            raise CheckpointError(f"{path}: manifest is missing")
        try:
            raw = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: manifest is not valid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: manifest must be a JSON object")
        schema = raw.get("schema_version")
        if schema != SCHEMA_VERSION:
            raise CheckpointError(f"{path}: schema version {schema!r} is not supported (this build reads {SCHEMA_VERSION})")
        missing = [f for f in ("name", "kind", "version", "config", "created_at", "files") if f not in raw]
        if missing:
            raise CheckpointError(f"{path}: manifest lacks {', '.join(missing)}")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise CheckpointError(f"{path}: manifest has unknown fields {', '.join(sorted(unknown))}")
        return cls(**raw)


@dataclass
class Checkpoint:
    """A loaded, verified version: the network in eval mode plus its extra tensors."""

    manifest: Manifest
    model: nn.Module
    extras: dict[str, torch.Tensor]
    path: Path

    @property
    def kind(self) -> ModelKind:
        """What the version is: kind.has_encoder says whether faces reach its latents through its own encoder."""
        return get_kind(self.manifest.kind)

    @cached_property
    def pca(self) -> PcaBasis | None:
        return PcaBasis.from_tensors(self.extras) if "pca.components" in self.extras else None

    @cached_property
    def attributes(self) -> AttributeDirections:
        """The attribute directions fitted for this version (none where it has none)."""
        return AttributeDirections.from_tensors(self.extras)

    @cached_property
    def discriminator(self) -> nn.Module | None:
        """A GAN version's discriminator (float32, eval, on the CPU), where the version has one."""
        if self.manifest.kind != "gan":
            return None
        return discriminator_from_extras(self.extras, self.model.cfg)

    @cached_property
    def encoder(self) -> nn.Module | None:
        """A GAN version's encoder (float32, eval, on the CPU): where projections start. None where it has none."""
        if self.manifest.kind != "gan":
            return None
        return encoder_from_extras(self.extras, self.model.cfg)

    @property
    def default_prior(self) -> str:
        """'fitted' for a model with an encoder and a stored basis, 'standard' otherwise."""
        return "fitted" if self.kind.has_encoder and self.pca is not None else "standard"

    def prior_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, per-dimension std) of the distribution the model samples from by default: where
        its typical latents are and how far they spread along each dimension."""
        if self.default_prior == "fitted":
            return self.pca.mean, self.pca.dim_std
        d = self.model.latent_dim
        return torch.zeros(d), torch.ones(d)

    def resolve_prior(self, prior: str) -> str:
        """The prior that `prior` names for this model: 'auto' becomes default_prior."""
        if prior not in PRIORS:
            raise ValueError(f"unknown prior {prior!r}; use one of {', '.join(PRIORS)}")
        return self.default_prior if prior == "auto" else prior

    def sample_latents(self, n: int, generator: torch.Generator, temperature: float = 1.0,
                       prior: str = "auto") -> torch.Tensor:
        """Latents whose decodings are the model's samples.

        standard: N(0, I), the prior the VAE and the GAN are trained with.
        fitted: the Gaussian of the latent means of held-out faces (the stored PCA basis), an
            ex-post density estimate of the aggregate posterior (Ghosh et al. 2020). An AE's
            latents are not N(0, I) at all, and a VAE's aggregate posterior matches its prior only
            after long training, so for models with an encoder this is the default.
        auto: default_prior.
        """
        if self.resolve_prior(prior) == "fitted":
            if self.pca is None or not self.kind.has_encoder:
                raise ValueError(f"{self.manifest.name} v{self.manifest.version} has no fitted latent Gaussian "
                                 "(that needs an encoder and a stored PCA basis); use prior=standard")
            return self.pca.sample(n, generator, temperature)
        return sample_prior(n, self.model.latent_dim, generator, temperature)


# --- the store --------------------------------------------------------------------------------


def validate_model_name(name: str) -> str:
    if not isinstance(name, str) or not MODEL_NAME_RE.match(name):
        raise CheckpointError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit"
        )
    return name


def inference_state(state_dict: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unwrapped from DDP/compile; floating tensors cast to `dtype` if given."""
    out = {}
    for key, value in state_dict.items():
        for prefix in WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.contiguous()
    return out


class CheckpointStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if MODEL_NAME_RE.match(p.name) and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        model_dir = self.root / validate_model_name(name)
        if not model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in model_dir.iterdir() if VERSION_DIR_RE.match(p.name) and p.is_dir())

    def latest(self, name: str) -> int | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def path(self, name: str, version: int) -> Path:
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CheckpointError(f"invalid version {version!r}: versions are positive integers")
        return self.root / validate_model_name(name) / f"{version:06d}"

    def resolve(self, name: str, version: int | None = None) -> int:
        """`version`, or the latest one; a clear error when the model or version does not exist."""
        versions = self.versions(name)
        if not versions:
            raise CheckpointError(f"no published versions of model {name!r} under {self.root}")
        if version is None:
            return versions[-1]
        if version not in versions:
            raise CheckpointError(f"model {name!r} has no version {version}; it has {versions}")
        return version

    def publish(
        self,
        name: str,
        kind: str,
        config: Any,
        state_dict: dict[str, torch.Tensor],
        *,
        step: int = 0,
        epoch: int = 0,
        data_fingerprint: str | None = None,
        metrics: dict[str, Any] | None = None,
        extras: dict[str, torch.Tensor] | None = None,
        dtype: torch.dtype | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> int:
        """Write a new version atomically and return its number (latest + 1)."""
        model_dir = self.root / validate_model_name(name)
        get_kind(kind)
        int8 = dtype == torch.int8
        weights = inference_state(state_dict, None if int8 else dtype)
        config_dict = config if isinstance(config, dict) else config.to_dict()
        self._check_weights_fit(kind, config_dict, weights)
        weights_dtype = str(next(iter(weights.values())).dtype).removeprefix("torch.")
        if int8:
            weights, extras, weights_dtype = *int8_tensors(kind, config_dict, weights, extras or {}), "int8"

        model_dir.mkdir(parents=True, exist_ok=True)
        tmp = model_dir / f".publish-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        try:
            save_file(weights, tmp / WEIGHTS_FILE)
            if extras:
                save_file({k: v.detach().cpu().contiguous() for k, v in extras.items()}, tmp / EXTRAS_FILE)
            files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
            manifest = Manifest(
                name=name, kind=kind, version=0, config=config_dict,
                created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                files=files, step=step, epoch=epoch, data_fingerprint=data_fingerprint,
                metrics=dict(metrics or {}), weights_dtype=weights_dtype,
                provenance=dict(provenance or {}),
            )
            return self._rename_into_place(tmp, model_dir, manifest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _rename_into_place(self, tmp: Path, model_dir: Path, manifest: Manifest) -> int:
        def claim(version: int) -> bool:  # another publisher may take the number first: the rename then fails
            manifest.version = version
            (tmp / MANIFEST_FILE).write_text(manifest.to_json())
            for p in tmp.iterdir():
                p.chmod(0o644)  # safetensors writes 0600; a service running as another user must read them
            fsync_tree(tmp)
            try:
                os.rename(tmp, model_dir / f"{version:06d}")
            except OSError:
                return False
            fsync_dir(model_dir)
            return True

        try:
            return claim_next_number(lambda: (self.latest(manifest.name) or 0) + 1, claim)
        except RuntimeError as e:
            raise CheckpointError(f"{model_dir}: {e}") from None

    @staticmethod
    def _check_weights_fit(kind: str, config: dict, weights: dict[str, torch.Tensor]) -> None:
        try:
            problem = state_mismatch(build_model(kind, config), weights)
        except (TypeError, ValueError) as e:
            problem = str(e)
        if problem:
            raise CheckpointError(f"refusing to publish: weights do not fit a {kind!r} network with config {config}: {problem}")

    def read_manifest(self, name: str, version: int | None = None) -> Manifest:
        version = self.resolve(name, version)
        return Manifest.read(self.path(name, version) / MANIFEST_FILE)

    def load(self, name: str, version: int | None = None, device: str | torch.device = "cpu") -> Checkpoint:
        """Verify and load a version; the network is rebuilt from the manifest alone."""
        version = self.resolve(name, version)
        vdir = self.path(name, version)
        manifest = Manifest.read(vdir / MANIFEST_FILE)
        if manifest.version != version or manifest.name != name:
            raise CheckpointError(
                f"{vdir / MANIFEST_FILE}: describes {manifest.name!r} version {manifest.version}, "
                f"but lies at {name!r} version {version}"
            )
        if WEIGHTS_FILE not in manifest.files:
            raise CheckpointError(f"{vdir / MANIFEST_FILE}: lists no {WEIGHTS_FILE}")
        for file_name, expected in manifest.files.items():
            verify_file(vdir, file_name, expected)

        try:
            model = build_model(manifest.kind, manifest.config)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{vdir / MANIFEST_FILE}: cannot build the network: {e}") from None
        weights = dequantized(read_tensors(vdir / WEIGHTS_FILE))
        problem = state_mismatch(model, weights)
        if problem:
            raise CheckpointError(f"{vdir / WEIGHTS_FILE}: does not match the network in the manifest: {problem}")
        model.load_state_dict(weights)
        extras = dequantized(read_tensors(vdir / EXTRAS_FILE)) if EXTRAS_FILE in manifest.files else {}
        problem = pca_mismatch(extras, model.latent_dim)
        if problem:
            raise CheckpointError(f"{vdir / EXTRAS_FILE}: the PCA basis does not fit the network: {problem}")
        problem = attributes_mismatch(extras, model.latent_dim)
        if problem:
            raise CheckpointError(f"{vdir / EXTRAS_FILE}: the attribute directions do not fit the network: {problem}")
        ckpt = Checkpoint(manifest, model.to(device).eval(), extras, vdir)
        for part in ("discriminator", "encoder"):
            try:
                getattr(ckpt, part)
            except RuntimeError as e:  # load_state_dict's complaint
                raise CheckpointError(f"{vdir / EXTRAS_FILE}: the {part} does not fit the network: {e}") from None
        return ckpt

    @staticmethod
    def load_folder(vdir: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
        """A version named by its folder (STORE/NAME/NNNNNN), verified as `load` verifies it."""
        vdir = Path(vdir)
        if not (vdir / MANIFEST_FILE).is_file():
            raise CheckpointError(f"{vdir} is not a published version (it has no {MANIFEST_FILE}); "
                                  "give a version's folder, e.g. checkpoints/gan/000006")
        manifest = Manifest.read(vdir / MANIFEST_FILE)
        return CheckpointStore(vdir.parent.parent).load(manifest.name, manifest.version, device)

    def copy_from(self, source: "CheckpointStore", name: str, version: int | None = None,
                  dtype: torch.dtype | None = None, extras: dict[str, torch.Tensor] | None = None,
                  metrics: dict[str, Any] | None = None, as_name: str | None = None) -> int:
        """Verify a version of `source` and publish it here as this store's next version of `as_name`
        (default: the same name).

        Step, epoch, data fingerprint, metrics, provenance and extra tensors travel with it, and the
        provenance gains where this copy came from; the weights keep their dtype unless `dtype` is
        given. `extras` and `metrics`, when given, replace the source's.
        """
        ckpt = source.load(name, version)
        m = ckpt.manifest
        origin = {"store": str(source.root.resolve()), "name": name, "version": m.version}
        return self.publish(
            as_name or name, m.kind, m.config, ckpt.model.state_dict(), step=m.step, epoch=m.epoch,
            data_fingerprint=m.data_fingerprint, metrics=m.metrics if metrics is None else metrics,
            extras=ckpt.extras if extras is None else extras, dtype=dtype or WEIGHT_DTYPES.get(m.weights_dtype),
            provenance=m.provenance | {"copied_from": [*m.provenance.get("copied_from", []), origin]},
        )

    def update_metrics(self, name: str, version: int, metrics: dict[str, Any]) -> Manifest:
        """Merge evaluation results into a version's manifest (atomically rewritten)."""
        path = self.path(name, self.resolve(name, version)) / MANIFEST_FILE
        manifest = Manifest.read(path)
        manifest.metrics.update(metrics)
        atomic_write_bytes(path, manifest.to_json().encode())
        return manifest


def int8_tensors(kind: str, config: dict, weights: dict[str, torch.Tensor],
                 extras: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Weights and extras with the network's conv and linear weights (and a GAN's discriminator and
    encoder) in weight-only int8; PCA bases and attribute directions stay as they are."""
    net = build_model(kind, config)
    net.load_state_dict({k: v.float() for k, v in weights.items()})
    extras = dict(extras)
    if kind == "gan":
        for prefix, part in ((DISCRIMINATOR_PREFIX, discriminator_from_extras), (ENCODER_PREFIX, encoder_from_extras)):
            module = part(extras, net.cfg)
            if module is not None:
                extras = {k: v for k, v in extras.items() if not k.startswith(prefix)} | quantized_state(module, prefix)
    return quantized_state(net), extras


def state_mismatch(model: nn.Module, weights: dict[str, torch.Tensor]) -> str | None:
    """A one-line summary of how `weights` fail to fit `model`, or None if they fit."""
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in expected]
    problems += [
        f"size mismatch for {k}: stored {tuple(weights[k].shape)}, network has {tuple(v.shape)}"
        for k, v in expected.items() if k in weights and weights[k].shape != v.shape
    ]
    if not problems:
        return None
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def pca_mismatch(extras: dict[str, torch.Tensor], latent_dim: int) -> str | None:
    """What is wrong with a stored PCA basis for a latent of `latent_dim`, or None (also when there is none)."""
    if not any(k.startswith("pca.") for k in extras):
        return None
    try:
        basis = PcaBasis.from_tensors(extras)
    except KeyError as e:
        return str(e.args[0])
    k = basis.components.shape[0] if basis.components.ndim == 2 else -1
    expected = {"mean": (latent_dim,), "components": (k, latent_dim), "explained_variance": (k,), "explained_variance_ratio": (k,)}
    for field, shape in expected.items():
        actual = tuple(getattr(basis, field).shape)
        if actual != shape or k < 1:
            return f"pca.{field} has shape {actual}, expected {shape} for latent_dim {latent_dim}"
    if not all(torch.isfinite(getattr(basis, f)).all() for f in expected):
        return "it holds non-finite values"
    return None


def attributes_mismatch(extras: dict[str, torch.Tensor], latent_dim: int) -> str | None:
    try:
        found = AttributeDirections.from_tensors(extras)
    except KeyError as e:
        return str(e.args[0])
    bad = [f"{a.name} {tuple(a.direction.shape)}" for a in found.by_name.values() if a.direction.shape != (latent_dim,)]
    return f"directions must be ({latent_dim},): {', '.join(bad)}" if bad else None


def verify_file(vdir: Path, file_name: str, expected_sha256: str) -> None:
    if Path(file_name).name != file_name or file_name.startswith("."):
        raise CheckpointError(f"{vdir / MANIFEST_FILE}: lists an invalid file name {file_name!r}")
    path = vdir / file_name
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise CheckpointError(f"{path}: checksum mismatch (sha256 {actual}, manifest says {expected_sha256}): file is corrupt")


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
