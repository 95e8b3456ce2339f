"""Interactive API documentation that works offline: Swagger UI at ``/docs`` and ReDoc at ``/redoc``, with
every script, style sheet and icon served by the API itself (from the ``fastapi-offline`` package's
copies), never from a CDN. FastAPI's own pages load them from jsDelivr and stay blank without internet."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"


def install(app: FastAPI) -> None:
    """Mount the assets and the two pages; build the app with ``docs_url=None, redoc_url=None``."""
    app.mount(ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )

    @router.get("/redoc")
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API reference",
            redoc_js_url=REDOC_JS,
            redoc_favicon_url="/favicon.ico",
            with_google_fonts=False,
        )

    @router.get(REDOC_JS)
    def redoc_js() -> Response:
        """ReDoc's bundle with its one remote asset (the "powered by" logo from cdn.redoc.ly) served here."""
        return Response(_redoc_bundle(), media_type="text/javascript", headers=CACHED)

    @router.get(REDOC_LOGO)
    def redoc_logo() -> Response:
        return Response(LOGO_SVG, media_type="image/svg+xml", headers=CACHED)

    @router.get("/favicon.ico")
    def favicon() -> Response:
        """Every page's icon (browsers ask for it whatever the page says): a PNG, which they all take."""
        return Response(_favicon(), media_type="image/png", headers=CACHED)

    app.include_router(router)


REDOC_JS = "/docs-local/redoc.standalone.js"
REDOC_LOGO = "/docs-local/logo-mini.svg"
_REMOTE_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
CACHED = {"Cache-Control": "public, max-age=86400"}
LOGO_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
    'fill="#1d2330"/><path d="M4 8h8M8 4v8" stroke="#fff" stroke-width="2"/></svg>'
)


@lru_cache(maxsize=1)
def _redoc_bundle() -> bytes:
    text = (files("fastapi_offline") / "static" / "redoc.standalone.js").read_text(encoding="utf-8")
    return text.replace(_REMOTE_LOGO, REDOC_LOGO).encode("utf-8")


@lru_cache(maxsize=1)
def _favicon() -> bytes:
    return (files("fastapi_offline") / "static" / "favicon.png").read_bytes()
