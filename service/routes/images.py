"""Image endpoints: every one returns a PNG grid."""

import asyncio
from typing import Annotated, AsyncIterator, Awaitable, Callable, Literal

import torch
from fastapi import APIRouter, Depends, File, Query, Request, Response, UploadFile
from pydantic import WithJsonSchema

from models_core.checkpoint import MODEL_NAME_RE, PRIORS
from models_core.images import originals_over_reconstructions, square_nrow, to_uint8
from models_core import views
from models_core.latent import check_indices, interpolation_path
from models_core.projection import DEFAULT_STEPS_FROM_ENCODER
from service.admission import decodes
from service.dependencies import BundledFacesDep, FaceLatentsDep, PngCacheDep, RegistryDep
from service.errors import ApiError
from service.face_latents import DEFAULT_ANSWER_S, FaceLatents
from service.registry import ServedModel
from service.responses import IMMUTABLE, REVALIDATE, etag_for, grid_png, identity_headers, not_modified, png_response
from service.routes.openapi_tables import GET_PNG, GET_PNG_409, GET_PROJECTED_PNG, UPLOAD_PNG

router = APIRouter(tags=["images"])


Seed = Annotated[int, Query(ge=0, le=2**63 - 1, description="seed of the latents; same seed, same faces", examples=[0])]
Nrow = Annotated[int | None, Query(ge=1, le=64, description="images per row (default: a square-ish grid)", examples=[8])]
Span = Annotated[float, Query(gt=0, le=10, description="sweep from -span to +span standard deviations", examples=[3.0])]
GridSteps = Annotated[int, Query(ge=2, le=16, description="grid side: steps × steps images", examples=[10])]


async def served_model(
    request: Request, registry: RegistryDep,
    model: Annotated[str | None, Query(pattern=MODEL_NAME_RE.pattern, max_length=64,
                                       description="model name: ae, vae, gan or any published name (default: gan if served)",
                                       examples=["gan"])] = None,
    version: Annotated[int | None, Query(ge=1, le=10**9, description="model version (default: latest)", examples=[1])] = None,
) -> AsyncIterator[ServedModel]:
    name = model or registry.default_model()
    served = await registry.get(name, version)
    request.state.model = name  # only now: a metric label never comes from an unknown name
    request.state.pinned = version is not None
    with served.in_use():  # a version swapped out meanwhile keeps serving this request
        yield served


ServedDep = Annotated[ServedModel, Depends(served_model)]
MAX_SAMPLE = 256  # faces one /sample may ask for
# An uploaded face: the schema says it is not empty, as the server enforces (an empty file is a 422).
FaceFile = Annotated[UploadFile, WithJsonSchema({"type": "string", "contentMediaType": "application/octet-stream",
                                                 "minLength": 1})]
CentreSeed = Annotated[int, Query(ge=0, le=2**63 - 1, description="with centre=sample: the seed of the sample at "
                       "the centre", examples=[0])]
Centre = Literal["sample", "mean", "zero"]
CENTRE_DOC = ("sample (default): a sample of the model, the latent of `seed`: a typical latent, which decodes to a "
              "face; mean: the mean of the distribution the model samples from (the fitted latent Gaussian for "
              "AE/VAE, z = 0 for N(0, I)), which decodes to a blurry average face, or grey for a GAN; zero: z = 0. "
              "In 100 dimensions almost all of a Gaussian's mass lies far from its mean, so the mean is not typical.")


def prior_latents(served: ServedModel, n: int, seed: int, temperature: float = 1.0, prior: str = "auto") -> torch.Tensor:
    try:
        return views.prior_latents(served.checkpoint, n, seed, temperature, prior)
    except ValueError as e:
        raise ApiError(409, f"prior={prior} is not available for {served.name}", str(e)) from None


def upload_response(served: ServedModel, data: bytes, made: dict[str, str]) -> Response:
    """A PNG made from uploads: never cached, named by model, version and precision, plus what made it."""
    return png_response(data, identity_headers(served.name, served.version, served.precision.name, None)
                        | made | {"Cache-Control": "no-store"})


class PngReplies:
    """Cached, ETagged PNG answers to this request."""

    def __init__(self, request: Request, cache: PngCacheDep):
        self.request, self.cache = request, cache

    async def cached(self, served: ServedModel, params: dict, seed: int | None,
                     make: Callable[[], Awaitable[tuple[bytes, dict[str, str], bool]]]) -> Response:
        """`make()` gives the PNG, headers describing how it was made, and whether it is the answer to
        keep for these parameters."""
        request = self.request
        etag = etag_for(request.url.path, served.name, served.version, served.precision.name, params)
        headers = identity_headers(served.name, served.version, served.precision.name, seed) | {
            "ETag": etag, "Cache-Control": IMMUTABLE if request.state.pinned else REVALIDATE}
        if not_modified(request, etag):
            return Response(status_code=304, headers=headers)
        hit = self.cache.get(etag)
        if hit is None:
            data, made, keep = await make()
            if keep:
                self.cache.put(etag, data, made)
            else:  # stopped by a time limit: not the parameters' answer, so nothing may cache it under their ETag
                headers = {k: v for k, v in headers.items() if k != "ETag"} | {"Cache-Control": "no-store"}
        else:
            data, made = hit
        return png_response(data, headers | made)

    async def render(self, served: ServedModel, params: dict, seed: int | None, nrow: int,
                     latents: Callable[[], torch.Tensor]) -> Response:
        """decode(latents()) laid out nrow per row."""
        async def make():
            images = await served.decode(latents())
            return await asyncio.to_thread(grid_png, images, nrow), {}, True

        return await self.cached(served, params, seed, make)


Png = Annotated[PngReplies, Depends()]


@router.get("/sample", responses=GET_PNG_409, response_class=Response)
@decodes
async def sample(
    png: Png, served: ServedDep, seed: Seed = 0, nrow: Nrow = None,
    n: Annotated[int, Query(ge=1, le=MAX_SAMPLE, description="number of faces", examples=[64])] = 64,
    temperature: Annotated[float, Query(gt=0, le=5, description="scale of the latents (lower: safer, plainer faces)", examples=[1.0])] = 1.0,
    prior: Annotated[Literal[PRIORS], Query(
        description="standard: N(0, I); fitted: the Gaussian of held-out faces' latents (AE/VAE); "
                    "auto: fitted for AE/VAE, standard for the GAN", examples=["auto"])] = "auto",
) -> Response:
    """Random faces drawn from the model's prior."""
    z = prior_latents(served, n, seed, temperature, prior)  # cheap; checks `prior` before any caching
    params = dict(n=n, nrow=nrow, seed=seed, temperature=temperature, prior=prior)
    return await png.render(served, params, seed, nrow or square_nrow(n), lambda: z)


@router.get("/interpolate", responses=GET_PNG, response_class=Response)
@decodes
async def interpolate(
    png: Png, served: ServedDep, seed_a: Seed = 0,
    seed_b: Annotated[int, Query(ge=0, le=2**63 - 1, description="seed of the end points", examples=[1])] = 1,
    steps: Annotated[int, Query(ge=2, le=32, description="images along each path, ends included", examples=[8])] = 8,
    method: Annotated[Literal["slerp", "lerp"], Query(description="great-circle (slerp) or straight (lerp) path")] = "slerp",
    rows: Annotated[int, Query(ge=1, le=16, description="paths, one per row", examples=[1])] = 1,
) -> Response:
    """Paths between latents drawn from seed_a and seed_b, one path per row."""
    params = dict(seed_a=seed_a, seed_b=seed_b, steps=steps, method=method, rows=rows)

    return await png.render(served, params, seed_a, steps,
                        lambda: views.interpolation_latents(served.checkpoint, seed_a, seed_b, steps, method, rows))


@router.get("/pca-grid", responses=GET_PNG_409, response_class=Response)
@decodes
async def pca_grid(
    png: Png, served: ServedDep, span: Span = 3.0, steps: GridSteps = 10,
    pc_x: Annotated[int, Query(ge=0, description="principal direction across the columns: below the model's "
                               "pca_components (in /models); the same as pc_y moves one direction along the diagonals", examples=[0])] = 0,
    pc_y: Annotated[int, Query(ge=0, description="principal direction down the rows: below the model's "
                               "pca_components (in /models)", examples=[1])] = 1,
    seed: CentreSeed = 0,
    centre: Annotated[Literal["sample", "mean"], Query(description=CENTRE_DOC)] = "sample",
) -> Response:
    """Sweep two principal directions of the latent space (GANSpace directions for the GAN) around a centre."""
    basis = require_basis(served)
    within(basis.n_components, "stored components", served, pc_x=pc_x, pc_y=pc_y)
    params = dict(pc_x=pc_x, pc_y=pc_y, span=span, steps=steps, seed=seed, centre=centre)

    return await png.render(served, params, seed if centre == "sample" else None, steps,
                        lambda: views.pca_grid_latents(served.checkpoint, basis, pc_x, pc_y, span, steps, centre, seed))


COORD = r"-?(?:10(?:\.0+)?|[0-9](?:\.[0-9]+)?)"  # a number within [-10, 10]


@router.get("/pca-point", responses=GET_PNG_409, response_class=Response)
@decodes
async def pca_point(
    png: Png, served: ServedDep,
    coords: Annotated[str, Query(max_length=400, pattern=rf"^\s*{COORD}(\s*,\s*{COORD})*\s*$",
                                 description="comma-separated coordinates along the first principal directions, in "
                                 "standard deviations from the centre; at most pca_components (in /models) values, "
                                 "each within [-10, 10]", examples=["1.5,-0.5"])] = "0",
    seed: CentreSeed = 0,
    centre: Annotated[Literal["sample", "mean"], Query(description=CENTRE_DOC)] = "sample",
) -> Response:
    """One face at the given coordinates along the first principal directions (the web page's sliders)."""
    basis = require_basis(served)
    values = [float(c) for c in coords.split(",")]  # the pattern admits only numbers within [-10, 10]
    if len(values) > basis.n_components:
        raise ApiError(409, f"{len(values)} coords, but {served.name} v{served.version} has {basis.n_components} "
                       "principal directions", f"send at most {basis.n_components} values")
    params = dict(coords=",".join(repr(v) for v in values), seed=seed, centre=centre)

    return await png.render(served, params, seed if centre == "sample" else None, 1,
                        lambda: views.pca_point_latent(served.checkpoint, basis, values, centre, seed))


@router.get("/latent-grid", responses=GET_PNG_409, response_class=Response)
@decodes
async def latent_grid(
    png: Png, served: ServedDep,
    span: Annotated[float, Query(gt=0, le=10, description="sweep each dimension from -span to +span around the centre: "
                                 "in standard deviations of that dimension (units=std) or in latent units (units=absolute)",
                                 examples=[3.0])] = 3.0,
    steps: GridSteps = 10,
    dim_x: Annotated[int, Query(ge=0, description="latent dimension across the columns: below the model's latent_dim "
                                "(in /models)", examples=[0])] = 0,
    dim_y: Annotated[int, Query(ge=0, description="latent dimension down the rows: below the model's latent_dim "
                                "(in /models); the same as dim_x moves one dimension along the diagonals", examples=[1])] = 1,
    seed: CentreSeed = 0,
    centre: Annotated[Centre, Query(description=CENTRE_DOC)] = "sample",
    units: Annotated[Literal["std", "absolute"], Query(description="std (default): span counts standard deviations of "
                     "each dimension (from the fitted latent Gaussian for AE/VAE, 1 under N(0, I)), so span=3 is ±3σ "
                     "for every model; absolute: raw latent units")] = "std",
) -> Response:
    """Sweep two raw latent dimensions around a centre, the others held there (the seed study's grid).

    centre=zero&units=absolute is the study's original grid: around z = 0, in raw units."""
    within(served.latent_dim, "latent", served, dim_x=dim_x, dim_y=dim_y)
    params = dict(dim_x=dim_x, dim_y=dim_y, span=span, steps=steps, seed=seed, centre=centre, units=units)

    return await png.render(served, params, seed if centre == "sample" else None, steps,
                        lambda: views.latent_grid_latents(served.checkpoint, dim_x, dim_y, span, steps, centre, seed, units))


def within(limit: int, what: str, served: ServedModel, **indices: int) -> None:
    """409 for an index beyond what this model has (the sweeps' own check, said before any work)."""
    try:
        check_indices(limit, what, **indices)
    except ValueError as e:
        raise ApiError(409, str(e), f"for {served.name} v{served.version}; /models lists what each model has") from None


def require_basis(served: ServedModel):
    if served.basis is None:
        raise ApiError(409, f"{served.name} v{served.version} has no stored PCA basis", "republish it with the trainer")
    return served.basis


ProjectionSteps = Annotated[int | None, Query(ge=0, le=1000, description="GAN only: Adam steps of the projection "
                            "that finds each face's latent. Long by nature: about 9 s a face for 200 steps on 2 CPU "
                            "cores without bf16. Left out: FACEGEN_PROJECTION_STEPS (200) but at most "
                            f"{DEFAULT_ANSWER_S:g} s of projection, so the default answers within 10 s; "
                            f"FACEGEN_ENCODER_PROJECTION_STEPS ({DEFAULT_STEPS_FROM_ENCODER}) for a version with an encoder. Any projection "
                            "stops at FACEGEN_PROJECTION_TIME_S, and X-Projection-Steps says how many steps ran. A version with "
                            "an encoder starts from its encoding E(x); 0 returns E(x) alone (0 is refused without an "
                            "encoder)", examples=[50])]


async def reconstruction_png(faces_in: FaceLatents, served: ServedModel, faces: torch.Tensor, steps: int | None,
                             time_limit_s: float | None = None) -> tuple[bytes, dict[str, str]]:
    recon, headers = await faces_in.reconstruct(served, faces, steps, time_limit_s)
    images, width = originals_over_reconstructions(faces, recon)
    return await asyncio.to_thread(grid_png, images, width), headers


@router.post("/reconstruct", responses=UPLOAD_PNG, response_class=Response)
@decodes
async def reconstruct_upload(
    faces_in: FaceLatentsDep, served: ServedDep,
    files: Annotated[list[FaceFile], File(min_length=1, max_length=64, description="1-64 face images (PNG, JPEG, "
                                            "WebP; at most FACEGEN_MAX_FILES, and FACEGEN_MAX_PROJECTION_FACES (8) for a "
                                            "GAN); each is centre-cropped and resized to 64×64")],
    steps: ProjectionSteps = None,
) -> Response:
    """Your faces (rows of originals) above the model's reconstructions of them: through the encoder
    of an AE/VAE, through projection (see /project) for a GAN."""
    faces_in.require(served, len(files))
    faces = await faces_in.read(files, served.serving_net.cfg.img_size)
    data, headers = await reconstruction_png(faces_in, served, faces, steps)
    return upload_response(served, data, headers)


@router.get("/reconstruct", responses=GET_PROJECTED_PNG, response_class=Response)
@decodes
async def reconstruct_bundled(
    png: Png, faces_in: FaceLatentsDep, bundled: BundledFacesDep, served: ServedDep, seed: Seed = 0,
    n: Annotated[int | None, Query(ge=1, le=64, description="how many of the bundled held-out faces (default: 8 "
                                   "through an encoder, 1 by projection; a GAN projects at most "
                                   "FACEGEN_MAX_PROJECTION_FACES, 8)", examples=[1])] = None,
    steps: ProjectionSteps = None,
) -> Response:
    """Held-out faces shipped with the service above the model's reconstructions of them.

    A GAN's reconstructions are projections. From its encoder's start (GAN v5 on) they take a few steps;
    without one they are long by nature (about 9 s a face at 200 steps on 2 CPU cores without bf16), so its
    defaults are one face and, when `steps` is left out, at most DEFAULT_ANSWER_S seconds of projection: the
    X-Projection-Steps header says how many steps ran."""
    budget_s = None if served.has_encoder else faces_in.answer_budget_s(served, steps)
    n = min(n or (8 if served.has_encoder else 1), len(bundled))
    faces_in.require(served, n)
    steps = None if served.has_encoder else faces_in.steps_to_run(served, steps)
    params = dict(seed=seed, n=n, steps=steps) | ({"budget_s": budget_s} if budget_s else {})

    async def make():
        pick = torch.randperm(len(bundled), generator=torch.Generator().manual_seed(seed))[:n]
        data, made = await reconstruction_png(faces_in, served, bundled[pick], steps, budget_s)
        # a projection stopped by the time limit is not the answer for these parameters
        return data, made, made.get("X-Projection-Steps", str(steps)) == str(steps)

    return await png.cached(served, params, seed, make)


@router.post("/project", responses=UPLOAD_PNG, response_class=Response)
@decodes
async def project_upload(
    faces_in: FaceLatentsDep, served: ServedDep,
    files: Annotated[list[FaceFile], File(min_length=1, max_length=64, description="face images (PNG, JPEG, WebP; "
                                            "at most FACEGEN_MAX_PROJECTION_FACES, 8); each is centre-cropped and "
                                            "resized to 64×64")],
    steps: ProjectionSteps = None,
) -> Response:
    """Each face beside G(z*), the GAN's closest face: z* found by Adam on z, minimising the pixel error
    with a term keeping z where N(0, I) puts its mass. A version with an encoder starts from E(x) and
    refines on that; one without starts from several random points and adds a perceptual distance on
    the discriminator's features (where the version ships its discriminator).

    Deterministic for the same faces and parameters, unless stopped by FACEGEN_PROJECTION_TIME_S.
    X-Projection-PSNR gives each face's PSNR in dB, X-Projection-Steps the steps run, X-Projection-Seconds
    the time taken. At most FACEGEN_MAX_PROJECTIONS run at once; more get 503 with Retry-After."""
    if not served.can_project:
        raise ApiError(409, f"model {served.name!r} ({served.manifest.kind}) is not a GAN",
                       "projection is for GANs; an ae or vae reconstructs through its encoder: POST /reconstruct")
    faces_in.require(served, len(files))
    faces = await faces_in.read(files, served.serving_net.cfg.img_size)
    projected = await faces_in.project(served, faces, steps)
    pairs = torch.stack([to_uint8(faces), projected.images], 1).flatten(0, 1)  # face, G(z*), face, G(z*), ...
    data = await asyncio.to_thread(grid_png, pairs, 2)
    return upload_response(served, data, projected.headers())


@router.post("/interpolate", responses=UPLOAD_PNG, response_class=Response)
@decodes
async def interpolate_uploads(
    faces_in: FaceLatentsDep, served: ServedDep,
    a: Annotated[FaceFile, File(description="first face image")],
    b: Annotated[FaceFile, File(description="second face image")],
    steps: Annotated[int, Query(ge=2, le=32, description="images along the path, ends included")] = 8,
    method: Annotated[Literal["slerp", "lerp"], Query(description="great-circle (slerp) or straight (lerp) path")] = "slerp",
    projection_steps: ProjectionSteps = None,
) -> Response:
    """A path between the latents of two uploaded faces: their encodings (AE/VAE) or their projections (GAN)."""
    faces_in.require(served, 2)
    faces = await faces_in.read([a, b], served.serving_net.cfg.img_size)
    z, made = await faces_in.latents(served, faces, projection_steps)
    images = await served.decode(interpolation_path(z[:1], z[1:], steps, method)[0])
    data = await asyncio.to_thread(grid_png, images, steps)
    return upload_response(served, data, made)
