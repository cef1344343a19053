"""``medimg serve``: the review page and the JSON API beside it (FastAPI, Jinja2, no CDN).

Pages (a session cookie from the login form; every form carries a CSRF token):
``/login``, ``/`` (upload and worklist), ``/review/{id}`` (one prediction, its heat map
toggle, confirm and correct). API (a bearer token from ``medimg users add``): ``POST /predict``,
``GET /predictions/{id}``, ``GET /predictions/{id}/heatmap``, ``POST /feedback``,
``GET /worklist``, ``GET /health``, ``GET /model``; OpenAPI at ``/docs`` and ``/openapi.json``.

Writes always need a reviewer; reads do too unless ``serve.anonymous_reads``. Every error is a
JSON (API) or HTML (page) answer with one line, never a traceback. Request bodies are bounded
while they stream in (:mod:`medimg.review.limits`) and read in memory, and no client string
(file name, field, path) names a file: images are kept and found by content hash only.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from medimg.config import Config
from medimg.errors import ConfigError, DataError, MedimgError
from medimg.preflight import ServiceUnavailable
from medimg.review.api_models import (
    ErrorOut,
    FeedbackIn,
    FeedbackOut,
    HealthOut,
    MetricOut,
    ModelOut,
    PredictionOut,
    WorkItemOut,
    WorklistOut,
)
from medimg.review.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Session,
    Sessions,
    Users,
    same_token,
    session_secret,
    users_path,
)
from medimg.review.forms import BadForm, read_form
from medimg.review.limits import BodyLimit, BodyTooLarge, send_json
from medimg.review.live_model import LiveModel
from medimg.review.service import NotFound, ReviewService
from medimg.review.uploads import RefusedImage
from medimg.settings import Settings
from medimg.workspace import Workspace

log = logging.getLogger("medimg.review")
HERE = Path(__file__).parent
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": why}
    for code, why in (
        (400, "The body is not the form or JSON this endpoint takes."),
        (401, "No valid reviewer: send `Authorization: Bearer <token>`."),
        (404, "No such prediction."),
        (413, "The upload is larger than serve.max_upload_mb, or has too many pixels."),
        (422, "The image or the feedback cannot be used; the detail says why."),
        (503, "No champion model yet, or the registry cannot be reached."),
    )
}
PREDICTION_ID = r"^[0-9a-f]{12,64}$"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; style-src 'self'; "
        "script-src 'self'; frame-ancestors 'none'; form-action 'self'; "
        "base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class Unauthorized(MedimgError):
    """No reviewer, or one the user list does not know (HTTP 401)."""


class Forbidden(MedimgError):
    """A form post without its CSRF token, or from another origin (HTTP 403)."""


def create_app(
    ws: Workspace, config: Config, settings: Settings | None = None, model: LiveModel | None = None
) -> FastAPI:
    """The review app for workspace ``ws``: the champion of its registry, or ``model``."""
    settings = settings or Settings()
    model = model or LiveModel(ws, config, settings)
    service = ReviewService(ws, config, settings, model)
    secret = settings.session_secret.get_secret_value() if settings.session_secret else None
    sessions = Sessions(session_secret(ws, secret), config.serve.session_hours)
    users_file = users_path(ws, settings.users_file)
    templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescapes .html
    anonymous_reads = config.serve.anonymous_reads

    app = FastAPI(
        docs_url=None,
        redoc_url=None,
        title="medimg review",
        version="1",
        responses=ERRORS,
        description="Predictions of the champion model for clinicians to confirm or "
        "correct; each answer is feedback for the next retraining.",
    )
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    # Swagger UI 5 from the installed fastapi-offline package, not from a CDN
    app.mount("/docs-assets", StaticFiles(directory=_swagger_assets()), name="docs-assets")

    # --- identity -------------------------------------------------------------------------

    users_seen: tuple[tuple[int, int, int] | None, Users] | None = None

    def users() -> Users:
        # read again whenever the file changes, so `medimg users add` needs no restart
        nonlocal users_seen
        stamp, seen = _stamp(users_file), users_seen
        if seen is None or seen[0] != stamp:
            seen = users_seen = (stamp, Users.load(users_file))
        return seen[1]

    def bearer(request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        reviewer = users().by_token(token.strip())
        if reviewer is None:
            raise Unauthorized(
                "the bearer token is not a reviewer's; get one with `medimg users add ID`"
            )
        return reviewer

    def session_of(request: Request) -> Session | None:
        session = sessions.read(request.cookies.get(SESSION_COOKIE))
        digest = users().digests.get(session.reviewer) if session is not None else None
        if session is None or digest is None or not digest.startswith(session.token):
            return None  # removed from the user list, or given a new token, since logging in
        return session

    def reader(request: Request) -> str | None:
        who = bearer(request)
        if who is None:
            session = session_of(request)
            who = session.reviewer if session else None
        if who is None and not anonymous_reads:
            raise Unauthorized(
                "log in (a bearer token for the API, the login page for the "
                "browser); serve.anonymous_reads is off"
            )
        return who

    def writer(request: Request) -> str:
        who = bearer(request)
        if who is None:
            raise Unauthorized(
                "writes need a reviewer: send `Authorization: Bearer <token>` "
                "(`medimg users add ID` makes one)"
            )
        return who

    # (as defaults: annotations are strings here, and FastAPI resolves them in module globals)
    as_reader, as_writer = Depends(reader), Depends(writer)

    # --- errors: one line, never a traceback ----------------------------------------------

    def error(request: Request, status: int, message: str) -> Response:
        if _wants_html(request):
            return templates.TemplateResponse(
                request,
                "error.html",
                {"message": message, "status": status},
                status_code=status,
                headers=SECURITY_HEADERS,
            )
        return JSONResponse({"detail": message}, status_code=status, headers=SECURITY_HEADERS)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> Response:
        return error(
            request,
            413,
            f"the upload is larger than serve.max_upload_mb "
            f"({config.serve.max_upload_mb:g} MiB); send a smaller file",
        )

    @app.exception_handler(MedimgError)
    async def _medimg(request: Request, exc: MedimgError) -> Response:
        status = 422
        if isinstance(exc, Unauthorized):
            status = 401
        elif isinstance(exc, Forbidden):
            status = 403
        elif isinstance(exc, NotFound):
            status = 404
        elif isinstance(exc, BadForm):
            status = 400
        elif isinstance(exc, ServiceUnavailable | ConfigError):
            status = 503  # the server's own state (no champion, a broken users file)
        elif isinstance(exc, RefusedImage) and exc.code == "too_many_pixels":
            status = 413
        response = error(request, status, " ".join(str(exc).split()))
        if status == 401 and not _wants_html(request):
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(request, 422, f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return error(request, exc.status_code, str(exc.detail))

    app.add_middleware(BodyLimit, max_bytes=config.serve.max_upload_bytes)
    app.add_middleware(SecurityHeaders)

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> Response:
        """The API's OpenAPI documentation (Swagger UI), served by the app itself."""
        response = templates.TemplateResponse(request, "docs.html", {})
        # Swagger UI draws its icons as data: images and sets inline styles
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        return response

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    # --- JSON API -----------------------------------------------------------------------------

    @app.get("/health", response_model=HealthOut, tags=["service"])
    def health() -> HealthOut:
        """Whether the app answers, and the model version it serves (none yet: degraded)."""
        try:
            return HealthOut(status="ok", model_version=model.current().version)
        except ServiceUnavailable:  # anyone may ask: the registry's address is not told
            return HealthOut(
                status="degraded",
                model_version=None,
                detail="no model is served yet; see /model when logged in",
            )

    @app.get("/model", response_model=ModelOut, tags=["service"])
    def model_info(_: str | None = as_reader) -> ModelOut:
        """The model answering now: version, alias, decision rule, and its test metrics with
        their bootstrap intervals."""
        served = model.current()
        return ModelOut(
            name=served.name,
            version=served.version,
            alias=served.alias,
            uri=served.uri,
            class_names=served.class_names,
            decision_rule=served.decision_rule,
            threshold=served.threshold,
            test_metrics={k: MetricOut(**v) for k, v in served.test_metrics.items()},
        )

    @app.post(
        "/predict",
        response_model=PredictionOut,
        tags=["review"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["image"],
                            "properties": {
                                "image": {
                                    "type": "string",
                                    "format": "binary",
                                    "description": "A PNG, JPEG, BMP, TIFF or DICOM file; "
                                    "its content decides, not its name.",
                                }
                            },
                        }
                    }
                },
            }
        },
    )
    async def predict(request: Request, _: str = as_writer) -> PredictionOut:
        """Predict one image and put it on the worklist. A DICOM is de-identified as ingest
        does it; only its pixels are kept."""
        form = await read_form(request)
        data = form.files.get("image")
        if data is None:
            raise BadForm("send the image as a multipart part named 'image'")
        answer = await run_in_threadpool(service.predict_upload, data)
        return PredictionOut.of(answer.prediction)

    @app.get("/predictions/{prediction_id}", response_model=PredictionOut, tags=["review"])
    def prediction(
        prediction_id: Annotated[str, _path_id()], _: str | None = as_reader
    ) -> PredictionOut:
        return PredictionOut.of(service.prediction(prediction_id))

    @app.get(
        "/predictions/{prediction_id}/heatmap",
        tags=["review"],
        responses={
            200: {
                "content": {"image/png": {}},
                "description": "Where the model looked (Grad-CAM), over the "
                "film as the model saw it, with a colour bar.",
            }
        },
    )
    def heatmap(prediction_id: Annotated[str, _path_id()], _: str | None = as_reader) -> Response:
        return Response(service.heatmap_png(prediction_id), media_type="image/png")

    @app.get(
        "/predictions/{prediction_id}/image",
        tags=["review"],
        responses={
            200: {
                "content": {"image/png": {}, "image/jpeg": {}},
                "description": "The image reviewed, pixels only.",
            }
        },
    )
    def image(prediction_id: Annotated[str, _path_id()], _: str | None = as_reader) -> Response:
        data, media = service.image_file(prediction_id)
        return Response(data, media_type=media)

    @app.post(
        "/feedback",
        response_model=FeedbackOut,
        tags=["review"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": FeedbackIn.model_json_schema()}},
            }
        },
    )
    async def feedback(request: Request, reviewer: str = as_writer) -> FeedbackOut:
        """Confirm (the predicted label) or correct (another label) a prediction, as the
        reviewer the token names."""
        # the body is read after the reviewer is known, through the streaming limit
        try:
            body = FeedbackIn.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            message = f"{where or 'body'}: {first.get('msg', 'invalid')}"
            if first.get("type") == "json_invalid":
                raise BadForm(f"the body is not JSON ({message})") from None
            raise DataError(message) from None
        entry = await run_in_threadpool(
            service.record_answer, body.prediction_id, body.label, reviewer, body.note
        )
        return FeedbackOut.of(entry)

    @app.get("/worklist", response_model=WorklistOut, tags=["review"])
    def worklist(
        _: str | None = as_reader,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        all: Annotated[bool, Query(description="Include reviewed predictions.")] = False,
    ) -> WorklistOut:
        """Predictions for review, most uncertain first, each with who has reviewed it."""
        items = service.worklist(include_reviewed=all, limit=limit)
        return WorklistOut(items=[WorkItemOut.of_item(i) for i in items])

    # --- pages --------------------------------------------------------------------------------

    def page(
        request: Request,
        name: str,
        context: dict[str, Any],
        session: Session | None,
        status: int = 200,
    ) -> Response:
        return templates.TemplateResponse(
            request,
            name,
            {**context, "session": session},
            status_code=status,
            headers=SECURITY_HEADERS,
        )

    def page_reader(request: Request) -> Session | None:
        session = session_of(request)
        if session is None and not anonymous_reads:
            raise _LoginFirst
        return session

    async def page_writer(request: Request) -> tuple[Session, dict[str, str], dict[str, bytes]]:
        origin = request.headers.get("origin")
        if origin and origin != "null" and origin.rstrip("/") != _own_origin(request):
            raise Forbidden("the form was posted from another site")
        session = session_of(request)
        if session is None:
            raise Unauthorized("log in to record anything")
        form = await read_form(request)
        if not same_token(session.csrf, form.fields.get("csrf")):
            raise Forbidden(
                "the form's CSRF token is missing or stale; reload the page and try again"
            )
        return session, form.fields, form.files

    @app.exception_handler(_LoginFirstError)
    async def _to_login(request: Request, exc: Exception) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.get("/login", include_in_schema=False)
    def login_page(request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        response = page(request, "login.html", {"csrf": token, "error": None}, None)
        _set_cookie(response, LOGIN_COOKIE, token, request, max_age=3600)
        return response

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await read_form(request)
        if not same_token(request.cookies.get(LOGIN_COOKIE), form.fields.get("csrf")):
            raise Forbidden("the login form's CSRF token is missing or stale; reload the page")
        reviewer = users().reviewer_for(
            form.fields.get("reviewer", "").strip(), form.fields.get("token", "").strip()
        )
        if reviewer is None:
            token = secrets.token_urlsafe(24)
            response = page(
                request,
                "login.html",
                {"csrf": token, "error": "unknown reviewer or wrong token"},
                None,
                status=401,
            )
            _set_cookie(response, LOGIN_COOKIE, token, request, max_age=3600)
            return response
        cookie, _ = sessions.issue(reviewer, users().digests[reviewer])
        response = RedirectResponse("/", status_code=303)
        _set_cookie(
            response,
            SESSION_COOKIE,
            cookie,
            request,
            max_age=int(config.serve.session_hours * 3600),
        )
        response.delete_cookie(LOGIN_COOKIE)
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        await page_writer(request)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/", include_in_schema=False)
    def home(request: Request, all: bool = False) -> Response:
        session = page_reader(request)
        items = service.worklist(include_reviewed=True)
        waiting = sum(not i.reviewed for i in items)
        shown = (
            items
            if all
            else [i for i in items if not i.reviewed] + [i for i in items if i.reviewed][:20]
        )
        return page(
            request,
            "home.html",
            {"items": shown, "waiting": waiting, "model": _model_or_none(model), "error": None},
            session,
        )

    @app.post("/review", include_in_schema=False)
    async def upload(request: Request) -> Response:
        _, _, files = await page_writer(request)
        data = files.get("image")
        if not data:
            raise BadForm("choose an image file to upload")
        answer = await run_in_threadpool(service.predict_upload, data)
        return RedirectResponse(f"/review/{answer.prediction.prediction_id}", status_code=303)

    @app.get("/review/{prediction_id}", include_in_schema=False)
    def review(
        request: Request, prediction_id: Annotated[str, _path_id()], recorded: str | None = None
    ) -> Response:
        session = page_reader(request)
        p = service.prediction(prediction_id)
        items = service.worklist(include_reviewed=True)
        reviewed = next((i for i in items if i.prediction.prediction_id == prediction_id), None)
        return page(
            request,
            "review.html",
            {
                "p": p,
                "probabilities": list(zip(p.class_names, p.probabilities, strict=True)),
                "reviewers": reviewed.reviewers if reviewed else (),
                "next_id": service.next_after(prediction_id, items),
                "recorded": recorded if recorded in ("agreed", "applied", "pending") else None,
                "model": _model_or_none(model),
            },
            session,
        )

    @app.post("/review/{prediction_id}/feedback", include_in_schema=False)
    async def answer(request: Request, prediction_id: Annotated[str, _path_id()]) -> Response:
        session, fields, _ = await page_writer(request)
        entry = await run_in_threadpool(
            service.record_answer,
            prediction_id,
            fields.get("label", ""),
            session.reviewer,
            fields.get("note"),
        )
        return RedirectResponse(f"/review/{prediction_id}?recorded={entry.status}", status_code=303)

    return app


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells one version of a file from the next: its inode (a rewrite by rename makes a
    new one), modification time and size; None when there is no file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _swagger_assets() -> str:
    import fastapi_offline

    return str(Path(fastapi_offline.__file__).parent / "static")


class _LoginFirstError(Exception):
    """A page read without a session while anonymous reads are off: go to the login page."""


_LoginFirst = _LoginFirstError()


def _path_id() -> Any:
    from fastapi import Path as PathParam

    return PathParam(pattern=PREDICTION_ID, description="A prediction id (hex).")


def _wants_html(request: Request) -> bool:
    path = request.url.path
    return path == "/" or path.startswith(("/review", "/login", "/logout"))


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"


def _set_cookie(response: Response, name: str, value: str, request: Request, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def _model_or_none(model: LiveModel) -> Any:
    try:
        return model.current()
    except ServiceUnavailable:
        return None


class SecurityHeaders:
    """ASGI middleware, the outermost of the app's own: :data:`SECURITY_HEADERS` on every
    response that does not set its own, and any exception the handlers did not answer turned
    into a JSON 500 here, logged by its type alone (its message may quote input). Starlette's
    own last handler would re-raise it, and the server would log the whole traceback.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *(
                        (k.lower().encode(), v.encode())
                        for k, v in SECURITY_HEADERS.items()
                        if k.lower().encode() not in present
                    ),
                ]
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        started = False
        try:
            await self.app(scope, receive, with_headers)
        except Exception as exc:
            log.error(
                "unexpected %s on %s %s", type(exc).__name__, scope.get("method"), scope.get("path")
            )
            if started:
                return
            await send_json(
                with_headers, 500, "internal error; the server log names the exception type"
            )
