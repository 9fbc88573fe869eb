"""The web console: `/` is its page, `/console/...` its CSS, JavaScript modules and vendored files.

Static files shipped in the package (service/api/console/), served by the API itself so that a user needs
no other server. The page talks only to the public API. Not in the OpenAPI document: it is not an API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles

ROOT = Path(__file__).resolve().parent.parent / "console"

# Explicit types: the system's mime table differs between machines (.js as application/javascript,
# text/plain or nothing), and module scripts are refused unless served as JavaScript.
TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
         ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon", ".txt": "text/plain; charset=utf-8"}
# Revalidate every time (an ETag answer is a cheap 304): an upgraded server never runs a stale page.
CACHE = "no-cache"
# The page loads nothing from elsewhere; a strict policy keeps it that way.
CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
       "connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'self'")


class _ConsoleFiles(StaticFiles):
    """StaticFiles (ETag, 304, HEAD, no directory listing as html=False) with our types and headers."""

    def file_response(self, full_path, stat_result, scope, status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        media = TYPES.get(Path(full_path).suffix.lower())
        if media:
            response.headers["content-type"] = media
        response.headers["cache-control"] = CACHE
        response.headers["x-content-type-options"] = "nosniff"
        return response


_files = _ConsoleFiles(directory=ROOT, check_dir=False)
router = APIRouter(include_in_schema=False)


@router.get("/")
@router.head("/")
async def index() -> FileResponse:
    return FileResponse(ROOT / "index.html", media_type=TYPES[".html"],
                        headers={"Cache-Control": CACHE, "Content-Security-Policy": CSP,
                                 "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


@router.get("/console/{path:path}")
@router.head("/console/{path:path}")
async def console_file(request: Request, path: str) -> Response:
    parts = path.replace("\\", "/").split("/")
    if not path or ".." in parts or path.endswith("/") or Path(path).suffix.lower() not in TYPES:
        raise HTTPException(404, f"no console file {path!r}")  # folders and unknown kinds are never served
    # StaticFiles keeps the path inside ROOT (no `..`, no links out) and answers 404 and 304 itself.
    return await _files.get_response(path, request.scope)
