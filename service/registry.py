"""Models being served: loaded and verified from the checkpoint store, hot-swapped on new versions."""

import asyncio
import contextlib
import functools
import logging
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from models_core.checkpoint import MODEL_NAME_RE, Checkpoint, CheckpointError, CheckpointStore
from models_core.device import resolve_device
from models_core.folding import serving_copy
from models_core.images import decode_images
from models_core.latent import PcaBasis
from models_core.projection import Projection, ProjectionConfig
from models_core.precision import Precision, choose_precision
from service.admission import as_api_errors
from service.batching import DecodeBatcher
from service.errors import ApiError
from service.inference import compile_decoder, run_inference
from service.memory import HeapTrimmer, release_memory
from service.settings import Settings
from service.workers import InferencePool, default_workers

log = logging.getLogger("facegen.service")


@dataclass
class ServedModel:
    name: str
    version: int
    checkpoint: Checkpoint
    batcher: DecodeBatcher
    device: torch.device
    precision: Precision = Precision("fp32", "default")
    users: int = 0  # requests holding this version now; it retires only once they are done

    @contextlib.contextmanager
    def in_use(self):
        self.users += 1
        try:
            yield self
        finally:
            self.users -= 1

    async def decode(self, z: torch.Tensor) -> torch.Tensor:
        """uint8 images of latents z, decoded in a batch shared with other requests; a 503 (ApiError)
        when the version is busy or was just retired."""
        with as_api_errors(self):
            return await self.batcher.decode(z)

    @contextlib.contextmanager
    def admit(self, rows: int):
        """Other work on the inference threads (encoding `rows` faces) held against the row budget, as decoding is."""
        with as_api_errors(self), self.budget.admit(rows):
            yield

    async def retire(self, grace: float = 30.0) -> None:
        await self.batcher.retire(in_use=lambda: self.users > 0, grace=grace)

    @property
    def budget(self):
        """Its admission (service/admission.py): the rows it may still take."""
        return self.batcher.budget

    @property
    def manifest(self):
        return self.checkpoint.manifest

    @property
    def serving_net(self):
        """The network as served (models_core.folding.serving_copy); it took the stored network's place
        in `checkpoint.model` as the version loaded, so that one copy is held."""
        return self.checkpoint.model

    @property
    def latent_dim(self) -> int:
        return self.serving_net.latent_dim

    @property
    def has_encoder(self) -> bool:
        return self.checkpoint.kind.has_encoder

    @property
    def basis(self) -> PcaBasis | None:
        return self.checkpoint.pca

    @property
    def nbytes(self) -> int:
        """Memory the version's weights and extras take."""
        tensors = [*self.serving_net.parameters(), *self.serving_net.buffers(), *self.checkpoint.extras.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Blocking; call from the executor."""
        return run_inference(self.serving_net.embed, x, self.device, self.precision.autocast(self.device))

    @property
    def can_project(self) -> bool:
        """A GAN: real faces reach its latent space by optimisation (/project)."""
        return self.manifest.kind == "gan"

    @functools.cached_property
    def discriminator(self) -> torch.nn.Module | None:
        d = self.checkpoint.discriminator
        return d.to(self.device) if d is not None else None

    @functools.cached_property
    def encoder(self) -> torch.nn.Module | None:
        e = self.checkpoint.encoder
        return e.to(self.device) if e is not None else None

    def start_projection(self, faces: torch.Tensor, cfg: ProjectionConfig) -> Projection:
        """Blocking (it computes the faces' features, and their encodings where the version has an
        encoder: the projection starts there); call from the executor."""
        faces, autocast = faces.to(self.device), self.precision.autocast(self.device)
        start = None
        if self.encoder is not None:
            start = run_inference(self.encoder, faces, self.device, autocast).clone()  # out of inference mode
        return Projection(self.serving_net, faces, cfg, self.discriminator, autocast, start)


class ModelRegistry:
    """The versions in memory: the latest of every model, plus an LRU of explicitly requested
    older ones bounded by count and by bytes. Loading (sha256, read, build, compile) runs on a
    loader thread, never on the inference threads, one load per version however many ask."""

    def __init__(self, settings: Settings, on_batch=lambda name, n: None, on_drop=lambda name, n: None):
        self.settings = settings
        self.store = CheckpointStore(settings.checkpoint_root)
        self.device = resolve_device(settings.device)
        self.workers = InferencePool(settings.inference_workers or default_workers(self.device, settings.compile))
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loader")
        self.latest: dict[str, ServedModel] = {}
        # Not a cachetools LRU: two bounds (count and bytes) and an eviction that retires the version.
        self.older: OrderedDict[tuple[str, int], ServedModel] = OrderedDict()
        self.loading: dict[tuple[str, int], asyncio.Future] = {}
        self.refused: set[tuple[str, int]] = set()  # versions that failed to load
        self.on_batch, self.on_drop = on_batch, on_drop
        self.retiring: set[asyncio.Task] = set()
        self.trim_heap = HeapTrimmer()  # one heap for all models
        self.lock = asyncio.Lock()
        self.precision = choose_precision(settings.precision, self.device)
        self.autocast = self.precision.autocast(self.device)
        log.info("computing in %s on %s: %s", self.precision.name, self.device, self.precision.reason)
        log.info("%d inference thread(s) on %d core(s)", self.workers.workers, self.workers.threads)

    def default_model(self) -> str:
        """The model a request without `model=` gets: the GAN if served, else the VAE, the AE, the first by name."""
        return next((n for n in ("gan", "vae", "ae") if n in self.latest), next(iter(sorted(self.latest)), "gan"))

    def names(self) -> list[str]:
        names = self.settings.models if self.settings.models is not None else self.store.models()
        return [n for n in names if MODEL_NAME_RE.match(n)]

    async def load(self, name: str, version: int) -> ServedModel:
        """Load a version once, however many requests ask for it at the same time. Any failure
        refuses the version (one log line) and raises CheckpointError."""
        key = (name, version)
        if key not in self.loading:
            self.loading[key] = asyncio.ensure_future(self._load(name, version))
            self.loading[key].add_done_callback(lambda _: self.loading.pop(key, None))
        return await asyncio.shield(self.loading[key])

    async def _load(self, name: str, version: int) -> ServedModel:
        loop = asyncio.get_running_loop()
        try:
            ckpt = await loop.run_in_executor(self.loader, self.read, name, version)
        except Exception as e:  # a bad checksum, an unreadable file, a malformed config: refuse it, serve the rest
            self.refused.add((name, version))
            log.error("refusing %s v%d: %s", name, version, e)
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{type(e).__name__}: {e}") from e
        s = self.settings
        forward = ckpt.model.decode
        if s.compile:
            # Off the inference threads: the models being served keep answering while this one compiles.
            forward = await loop.run_in_executor(self.loader, compile_decoder, ckpt.model, self.device, self.autocast,
                                                 f"{name} v{version}")
        decode = functools.partial(decode_images, forward, device=self.device, autocast=self.autocast)
        batcher = DecodeBatcher(decode, self.workers.executor, s.max_batch, s.max_wait_ms / 1000, s.max_queue_s,
                                on_batch=lambda n: self.on_batch(name, n), on_drop=lambda n: self.on_drop(name, n), after_pass=self.trim_heap,
                                parallel=self.workers.workers, forward_pass=self.workers.forward_pass)
        return ServedModel(name, ckpt.manifest.version, ckpt, batcher, self.device, self.precision)

    def read(self, name: str, version: int) -> Checkpoint:
        """A version verified and loaded from the store, its network made ready to serve. Blocking."""
        ckpt = self.store.load(name, version, self.device)
        ckpt.model = serving_copy(ckpt.model, self.precision.dtype)  # in place: the checked discriminator stays
        return ckpt

    async def refresh(self) -> None:
        """Serve the newest loadable version of every model. A version that fails to load is
        refused (once, with a log line); the one already serving stays, and the other models go on."""
        async with self.lock:
            for name in self.names():
                served = await self.newest_loadable(name)
                if served is None:
                    continue
                current, self.latest[name] = self.latest.get(name), served
                if current:
                    log.info("now serving %s v%d (was v%d)", name, served.version, current.version)
                    self.retire(current)
                else:
                    log.info("serving %s v%d", name, served.version)

    async def newest_loadable(self, name: str) -> ServedModel | None:
        """The newest version of `name` above the one serving that loads, newest first; None if none."""
        try:
            versions = self.store.versions(name)
        except (CheckpointError, OSError):
            return None
        current = self.latest.get(name)
        for version in reversed(versions):
            if current and version <= current.version:
                return None
            if (name, version) in self.refused:
                continue
            try:
                return await self.load(name, version)
            except CheckpointError:
                continue
        return None

    async def poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            try:
                await self.refresh()
            except Exception:  # keep polling whatever one pass hit
                log.exception("checkpoint poll failed")

    async def get(self, name: str, version: int | None) -> ServedModel:
        if name not in self.latest:
            raise ApiError(404, f"unknown model {name!r}", f"models served: {', '.join(sorted(self.latest)) or 'none'}")
        latest = self.latest[name]
        if version is None or version == latest.version:
            return latest
        key = (name, version)
        if key in self.older:
            self.older.move_to_end(key)
            return self.older[key]
        if key in self.refused:
            raise ApiError(404, f"model {name!r} version {version} failed to load and is not served")
        if version not in self.store.versions(name):
            available = [v for v in self.store.versions(name) if (name, v) not in self.refused]
            raise ApiError(404, f"model {name!r} has no version {version}", f"available versions: {available}")
        try:
            served = await self.load(name, version)
        except CheckpointError:
            raise ApiError(404, f"model {name!r} version {version} failed to load and is not served") from None
        if key not in self.older:  # two requests may have awaited the same load
            self.older[key] = served
            self.evict()
        return self.older.get(key, served)

    def evict(self) -> None:
        """Drop the least recently used older versions past the count or byte bound."""
        s = self.settings
        while self.older and (len(self.older) > s.max_old_versions or self.older_bytes() > s.max_old_versions_mb * 2**20):
            _, evicted = self.older.popitem(last=False)
            self.retire(evicted)

    def older_bytes(self) -> int:
        return sum(served.nbytes for served in self.older.values())

    def retire(self, served: ServedModel) -> None:
        """Retire in the background: requests holding `served` finish on it first."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(served.retire(self.settings.retire_grace_s))
        self.retiring.add(task)

        def retired(task):
            self.retiring.discard(task)
            # A moment later nothing refers to the version: its weights and compiled graphs are garbage.
            loop.call_later(1.0, lambda: loop.run_in_executor(None, release_memory))

        task.add_done_callback(retired)

    async def close(self) -> None:
        for served in [*self.latest.values(), *self.older.values()]:
            await served.retire(grace=1.0)
        for task in list(self.retiring):
            task.cancel()
        self.workers.shutdown()
        self.loader.shutdown(wait=False, cancel_futures=True)
