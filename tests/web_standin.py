"""A local stand-in for the web, for img2dataset runs in tests: no test may reach the internet.

img2dataset downloads with `urllib.request.urlopen`, which honours `http_proxy`. The stand-in is
that proxy: it answers every `GET http://host/path` with a small image whose format (JPEG, PNG,
WebP, GIF) follows from the URL, or with 404 for about one URL in eight, so a download has
failures and every image type, the same ones in every run. The exported URLs are mostly
`https://`, which a proxy can only tunnel (CONNECT) with a certificate for the host; instead a
`sitecustomize` module, put on img2dataset's PYTHONPATH by `img2dataset_env`, rewrites
`https://` to `http://` inside urlopen, so every download comes here and is never encrypted.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Iterator

from helpers import serving

FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
MISSING_ONE_IN = 8

SITECUSTOMIZE = '''\
"""Test stand-in for the web (tests/web_standin.py): https downloads go, as http, to http_proxy."""
import urllib.request

_urlopen = urllib.request.urlopen


def _plain(url):
    return "http://" + url[len("https://"):] if url.startswith("https://") else url


def urlopen(url, *args, **kwargs):
    if isinstance(url, urllib.request.Request):
        url.full_url = _plain(url.full_url)
    else:
        url = _plain(url)
    return _urlopen(url, *args, **kwargs)


urllib.request.urlopen = urlopen
'''


def _digest(url: str) -> int:
    return int.from_bytes(hashlib.sha256(url.encode()).digest()[:8], "big")


def served_format(url: str) -> str | None:
    """The image format the stand-in serves for `url` (as requested, scheme included), or None for a 404."""
    digest = _digest(url.replace("https://", "http://", 1))
    if digest % MISSING_ONE_IN == 0:
        return None
    return FORMATS[(digest // MISSING_ONE_IN) % len(FORMATS)]


@cache
def _image(pil_format: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (30, 120, 200)).save(buffer, format=pil_format)
    return buffer.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        pil_format = served_format(self.path)
        if pil_format is None:
            self.send_error(404)
            return
        body = _image(pil_format)
        self.send_response(200)
        self.send_header("Content-Type", f"image/{pil_format.lower()}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # img2dataset opens hundreds of connections at once; the default backlog of 5 turns that into
    # SYN retries of seconds, and then into "timed out" downloads on a busy machine.
    request_queue_size = 1024

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up early is no news
            super().handle_error(request, client_address)


@contextmanager
def web_standin() -> Iterator[str]:
    """Run the stand-in on loopback; yields its proxy URL (`http://127.0.0.1:<port>`)."""
    with serving(_Server(("127.0.0.1", 0), _Handler)) as url:
        yield url


def img2dataset_env(proxy: str, folder: Path, environ: dict | None = None) -> dict:
    """The environment that sends img2dataset's downloads (and only them) to the stand-in at `proxy`.

    `folder` receives the `sitecustomize.py`; loopback stays direct (`no_proxy`) so nothing else changes.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ if environ is None else environ)
    env.update(http_proxy=proxy, HTTP_PROXY=proxy, no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost",
               PYTHONPATH=os.pathsep.join(p for p in (str(folder), env.get("PYTHONPATH", "")) if p),
               NO_ALBUMENTATIONS_UPDATE="1")
    return env
