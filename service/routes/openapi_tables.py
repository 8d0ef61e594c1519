"""What the image routes answer, for the OpenAPI schema: the PNG responses and the headers that come with them."""

from service.errors import error_responses


def header(description: str, type_: str = "string") -> dict:
    return {"description": description, "schema": {"type": type_}}


IDENTITY_HEADERS = {
    "X-Model": header("name of the model that answered"),
    "X-Model-Version": header("its version", "integer"),
    "X-Precision": header("precision the images were computed in (fp32 or bf16): the bytes differ between them"),
}
CACHE_HEADERS = {
    "ETag": header("identity of these bytes: model, version, precision and every parameter (absent when a time "
                   "limit stopped a projection: those bytes are not the parameters' answer)"),
    "Cache-Control": header("immutable when the request named a version; revalidate when it asked for the latest; "
                            "no-store when a time limit stopped a projection"),
    "X-Seed": header("the seed the latents came from, when they came from one", "integer"),
}
PROJECTION_HEADERS = {  # a GAN answers uploads by projecting them
    "X-Projection-PSNR": header("a GAN's projections only: each face's PSNR against its projection, dB, comma-separated"),
    "X-Projection-Steps": header("a GAN's projections only: optimisation steps run (fewer than asked when the time "
                                 "limit stopped it)", "integer"),
    "X-Projection-Seconds": header("a GAN's projections only: seconds the projection took", "number"),
}


def png(headers: dict) -> dict:
    return {200: {"content": {"image/png": {}}, "description": "a PNG grid", "headers": headers}}


NOT_MODIFIED = {304: {"description": "not modified: If-None-Match names this response's ETag",
                      "headers": IDENTITY_HEADERS | CACHE_HEADERS}}
GET_PNG = png(IDENTITY_HEADERS | CACHE_HEADERS) | NOT_MODIFIED | error_responses(404, 422, 503)  # every GET image route
GET_PNG_409 = GET_PNG | error_responses(409)  # ... that a model may be unable to answer
GET_PROJECTED_PNG = png(IDENTITY_HEADERS | CACHE_HEADERS | PROJECTION_HEADERS) | NOT_MODIFIED | error_responses(404, 409, 422, 503)
UPLOAD_PNG = png(IDENTITY_HEADERS | PROJECTION_HEADERS) | error_responses(404, 409, 413, 415, 422, 503)
