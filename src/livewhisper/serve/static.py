"""The page, the caption view and their files, and the server's plain HTTP answers."""

from __future__ import annotations

import importlib.resources

from starlette.responses import Response

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

    def has(self, path: str) -> bool:
        """Whether *path* (relative to where the app is mounted) is one of the files."""
        return (_PAGES.get(path) or path.removeprefix("/")) in self.assets

    def answer(self, path: str) -> Response:
        """The file at *path* (relative to where the app is mounted), or 404."""
        name = _PAGES.get(path) or path.removeprefix("/")
        asset = self.assets.get(name)
        if asset is None:
            return http_response(404, b"Not found.\n")
        content_type, body = asset
        return http_response(200, body, content_type)


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
    status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
) -> Response:
    """A complete answer: its length, no caching, no sniffing, no referrer, and the
    connection closed after it (as the page's few files need no keep-alive)."""
    headers = {
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Connection": "close",
    }
    return Response(body, status, headers, media_type=content_type)
