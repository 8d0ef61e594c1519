"""Client errors as JSON: {"error": what was wrong, "detail": what is allowed}. Never a 500 for bad input."""

import json

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send


class Problem(BaseModel):
    parameter: str = Field(description="the query parameter or upload field at fault")
    problem: str


class ErrorBody(BaseModel):
    """Every error this API answers has this body."""

    error: str = Field(description="what was wrong")
    detail: str | None = Field(None, description="what is allowed, or what to do next")
    problems: list[Problem] | None = Field(None, description="with 422 for invalid parameters: each one at fault")


ERRORS = {
    404: "no such model, or no such version of it (or that version failed verification and is not served)",
    409: "valid, but the model asked for cannot do it: it has no encoder, no stored PCA basis, no fitted prior, or "
         "fewer latent dimensions or principal components than asked for (/models says what each model has)",
    413: "the request body is over this route's limit (routes without uploads take no body)",
    415: "an upload is not an image this server reads: send PNG, JPEG or WebP",
    422: "invalid parameters, parameters that contradict each other, or an upload that cannot be decoded",
    503: "the model is busy or its version was just retired: retry after Retry-After seconds",
    504: "not answered within the server-side deadline; the request's work was dropped",
}


def error_responses(*statuses: int) -> dict:
    """OpenAPI `responses` entries for these statuses, each with the real error body."""
    return {status: {"model": ErrorBody, "description": ERRORS[status]} for status in statuses}


def query_names(dependant: Dependant) -> set[str]:
    return {p.alias for p in dependant.query_params}.union(*(query_names(d) for d in dependant.dependencies))


def one_value_per_parameter(request: Request) -> None:
    """A query parameter given twice is refused: FastAPI would quietly keep the last one, and every one is scalar."""
    route = request.scope.get("route")
    declared = query_names(route.dependant) if route is not None else set()
    repeated = sorted({k for k in request.query_params if k in declared and len(request.query_params.getlist(k)) > 1})
    if repeated:
        problems = [{"parameter": k, "problem": "given more than once; it takes one value"} for k in repeated]
        raise ApiError(422, f"invalid request: {', '.join(repeated)} given more than once", problems=problems)


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str | None = None, headers: dict[str, str] | None = None,
                 problems: list[dict] | None = None):
        self.status, self.error, self.detail, self.headers, self.problems = status, error, detail, headers, problems


async def send_error(send: Send, status: int, error: str, detail: str | None = None,
                     headers: list[tuple[bytes, bytes]] = ()) -> None:
    """An ErrorBody answer from ASGI middleware, where FastAPI's handlers do not reach."""
    body = json.dumps({"error": error} | ({"detail": detail} if detail else {})).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        body = {"error": exc.error} | ({"detail": exc.detail} if exc.detail else {})
        body |= {"problems": exc.problems} if exc.problems else {}
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"parameter": ".".join(str(p) for p in e["loc"][1:]) or e["loc"][0], "problem": e["msg"]}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{p['parameter']}: {p['problem']}" for p in problems)
        return JSONResponse({"error": f"invalid request: {summary}", "problems": problems}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # The framework's one 400: a body that does not parse as multipart/form-data. For this API that is an
        # upload that cannot be decoded, a 422 with the documented body, like every other bad upload.
        if exc.status_code == 400:
            return JSONResponse({"error": f"invalid request: {exc.detail}",
                                 "detail": "send multipart/form-data with the face images as files"}, status_code=422)
        return await http_exception_handler(request, exc)
