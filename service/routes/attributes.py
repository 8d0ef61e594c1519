"""Steering faces by meaning: the attribute directions a version carries, and edits along them."""

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Query, Response

from models_core import views
from models_core.attributes import AttributeDirections, edit_offsets
from service.admission import decodes
from service.errors import ApiError, error_responses
from service.registry import ServedModel
from service.responses import grid_png
from service.dependencies import FaceLatentsDep
from service.routes.images import FaceFile, Png, ProjectionSteps, ServedDep, Seed, upload_response
from service.routes.openapi_tables import GET_PNG_409, UPLOAD_PNG

router = APIRouter(tags=["attributes"])

DEFAULT_SPAN = 3.0
NAME = r"[A-Za-z0-9_]{1,64}"
Attribute = Annotated[str, Query(max_length=64, pattern=rf"^{NAME}$", description="attribute to edit, one of those "
                                 "GET /attributes lists for the model (CelebA's names: Smiling, Male, Blond_Hair, ...)",
                                 examples=["Smiling"])]
Hold = Annotated[str, Query(max_length=1000, pattern=rf"^({NAME}(,{NAME})*)?$", description="comma-separated attributes to "
                            "keep as they are while editing (InterFaceGAN's conditional manipulation: the edit moves "
                            "orthogonally to their directions), e.g. Male", examples=["Male"])]
EditSteps = Annotated[int, Query(ge=2, le=16, description="faces per row, from -span to +span; with an odd count the "
                                 "middle one is the unedited face", examples=[5])]
EditSpan = Annotated[float, Query(gt=0, le=10, description="how far each row goes either way, in standard deviations "
                                  "of the latents along the attribute's direction", examples=[DEFAULT_SPAN])]


def directions_of(served: ServedModel) -> AttributeDirections:
    directions = served.checkpoint.attributes
    if not len(directions):
        raise ApiError(409, f"{served.name} v{served.version} has no attribute directions",
                       f"fit them with: python -m trainer directions --model {served.name} --data DIR")
    return directions


def check_edit(served: ServedModel, attribute: str, hold: str) -> list[str]:
    """The held attributes (sorted, without repeats or the edited one), once each is known to the version."""
    directions = directions_of(served)
    held = sorted({h for h in hold.split(",") if h} - {attribute})  # one spelling per edit, one cache entry
    for name in [attribute, *held]:
        if name not in directions:
            raise ApiError(404, f"unknown attribute {name!r} for {served.name} v{served.version}",
                           f"known: {', '.join(directions.names)}")
    try:
        directions.conditioned(attribute, held)
    except ValueError as e:
        raise ApiError(422, f"cannot edit {attribute} holding {', '.join(held)}", str(e)) from None
    return held


@router.get("/attributes", responses=error_responses(404, 422, 503))
async def attributes(served: ServedDep) -> dict:
    """The attributes a version can edit: each with its boundary's cross-validated balanced accuracy and
    how many examples it was fitted on (labelled faces; for a GAN, its samples labelled by a classifier)."""
    directions = served.checkpoint.attributes
    fitted = served.manifest.metrics.get("attributes", {})
    return {
        "model": served.name, "version": served.version, "default_span": DEFAULT_SPAN,
        "fitted_on": fitted.get("fitted_on"),
        "attributes": [{"name": a.name, "accuracy": round(a.accuracy, 4), "n": a.n} for a in directions.by_name.values()],
    }


@router.get("/edit", responses=GET_PNG_409, response_class=Response)
@decodes
async def edit(
    png: Png, served: ServedDep, attribute: Attribute, seed: Seed = 0,
    n: Annotated[int, Query(ge=1, le=64, description="faces, one per row: those of /sample?seed=SEED&n=N, in its order",
                            examples=[8])] = 8,
    steps: EditSteps = 5, span: EditSpan = DEFAULT_SPAN, hold: Hold = "",
) -> Response:
    """Faces of /sample made more or less of an attribute: one row per face, from -span to +span."""
    held = check_edit(served, attribute, hold)
    params = dict(attribute=attribute, seed=seed, n=n, steps=steps, span=span, hold=",".join(held))
    return await png.render(served, params, seed, steps,
                        lambda: views.edit_latents(served.checkpoint, attribute, seed, n, steps, span, held))


@router.post("/edit", responses=UPLOAD_PNG, response_class=Response)
@decodes
async def edit_uploads(
    faces_in: FaceLatentsDep, served: ServedDep, attribute: Attribute,
    files: Annotated[list[FaceFile], File(min_length=1, max_length=64, description="face images (PNG, JPEG, WebP; "
                                            "for a GAN at most FACEGEN_MAX_PROJECTION_FACES, 8): each is centre-cropped "
                                            "and resized to 64×64, then encoded (AE/VAE) or projected (GAN)")],
    steps: EditSteps = 5, span: EditSpan = DEFAULT_SPAN, hold: Hold = "", projection_steps: ProjectionSteps = None,
) -> Response:
    """Your faces made more or less of an attribute: one row per face, from -span to +span, through the
    encoder of an AE/VAE or the projection of a GAN (whose quality the X-Projection headers give)."""
    held = check_edit(served, attribute, hold)
    faces_in.require(served, len(files))
    faces = await faces_in.read(files, served.serving_net.cfg.img_size)
    z, made = await faces_in.latents(served, faces, projection_steps)
    zs = served.checkpoint.attributes.edit(z.float().cpu(), attribute, edit_offsets(span, steps), held)
    images = await served.decode(zs.reshape(-1, zs.shape[-1]))
    data = await asyncio.to_thread(grid_png, images, steps)
    return upload_response(served, data, made)
