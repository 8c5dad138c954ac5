"""The page, the caption view and their files, and the server's plain HTTP answers."""

from __future__ import annotations

import importlib.resources

from websockets.datastructures import Headers
from websockets.http11 import Response

_PAGES = {"/": "index.html", "/index.html": "index.html", "/captions": "captions.html"}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


class Static:
    """Answers GET requests for the page's files; every other path is 404."""

    def __init__(self) -> None:
        self.assets = load_assets()

    def answer(self, path: str) -> Response:
        name = _PAGES.get(path) or path.removeprefix("/")
        asset = self.assets.get(name)
        if asset is None:
            return http_response(404, "Not Found", b"Not found.\n")
        content_type, body = asset
        return http_response(200, "OK", body, content_type)


def load_assets() -> dict[str, tuple[str, bytes]]:
    """The page's files, read once: only these names are ever served."""
    assets: dict[str, tuple[str, bytes]] = {}
    web = importlib.resources.files("livewhisper.serve") / "web"
    for entry in web.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in _TYPES:
            assets[entry.name] = (_TYPES[suffix], entry.read_bytes())
    return assets


def http_response(
    status: int, reason: str, body: bytes, content_type: str = "text/plain; charset=utf-8"
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Connection", "close"),
        ]
    )
    return Response(status, reason, headers, body)
