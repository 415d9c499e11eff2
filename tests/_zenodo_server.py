"""A Zenodo-shaped HTTP server on 127.0.0.1 serving PANN-layout checkpoints the tests build (no network).

Files are served at Zenodo's path, ``/records/3987831/files/<URL-encoded name>?download=1``, with
``Content-Length``, and ``Range: bytes=N-`` requests are answered ``206 Partial Content`` with a
``Content-Range``, as Zenodo does. Faults on demand: :attr:`FakeZenodo.cut` closes the connection
after some bytes of the next responses; :attr:`FakeZenodo.fail` answers the next requests with an
HTTP error (None: serve that one); :attr:`FakeZenodo.throttle` slows the body down (so that two clients overlap). Every
request is logged as ``(filename, Range header, status, body bytes sent)``.

:func:`pin_release` injects the expected checksum of a test's own file into the registry entries
that use it (the registry's published md5 is Zenodo's; a test file has its own).
"""

import contextlib
import dataclasses
import hashlib
import http.server
import os
import re
import threading
import time
import urllib.parse
from pathlib import Path

__all__ = ["FakeZenodo", "client_env", "md5_of", "pin_release", "serve_zenodo"]

_PATH = re.compile(r"/records/3987831/files/([^/?]+)")
# EfficientAT's GitHub release (VIPANN_EFFICIENTAT_ENDPOINT): no query string.
_GITHUB_PATH = re.compile(r"/fschmid56/EfficientAT/releases/download/v0\.0\.1/([^/?]+)")


def md5_of(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pin_release(registry, filename, md5, size):
    """Registry entries (a ``{name: PretrainedCfg}`` dict) whose source is ``filename``, with this md5 and size.

    Returns:
        ``{name: new entry}``; the caller puts them into the registry (``monkeypatch.setitem``).
    """
    out = {}
    for name, cfg in registry.items():
        if cfg.source is not None and cfg.source.filename == filename:
            source = dataclasses.replace(cfg.source, md5=md5, size=size, sha256=None)
            out[name] = dataclasses.replace(cfg, source=source)
    assert out, f"no registry entry uses {filename}"
    return out


class FakeZenodo:
    def __init__(self):
        self.files = {}
        self.log = []
        self.cut = {}  # filename -> list of byte counts: the next responses stop after that many bytes
        self.fail = {}  # filename -> list of HTTP statuses (None: serve) for the next requests
        self.throttle = 0.0  # seconds to sleep per 64 KiB sent
        self.lock = threading.Lock()
        self.endpoint = None

    def add(self, path, filename=None):
        self.files[filename or Path(path).name] = Path(path)

    def requests(self, filename=None):
        return [r for r in self.log if filename is None or r[0] == filename]


def _handler(zenodo):
    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 30

        def log_message(self, *args):
            pass

        def _status(self, filename, status, range_header):
            with zenodo.lock:
                zenodo.log.append((filename, range_header, status, 0))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            match = _PATH.fullmatch(url.path)
            github = _GITHUB_PATH.fullmatch(url.path)
            filename = urllib.parse.unquote((match or github).group(1)) if match or github else None
            range_header = self.headers.get("Range")
            if filename not in zenodo.files or url.query != ("" if github else "download=1"):
                return self._status(filename, 404, range_header)
            with zenodo.lock:
                failures = zenodo.fail.get(filename) or []
                status = failures.pop(0) if failures else None
                cuts = zenodo.cut.get(filename) or [] if status is None else []
                cut = cuts.pop(0) if cuts else None
            if status is not None:
                return self._status(filename, status, range_header)
            path = zenodo.files[filename]
            size = path.stat().st_size
            start = 0
            if range_header:
                start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
                if start >= size:
                    return self._status(filename, 416, range_header)
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size - start))
            self.end_headers()
            sent = 0
            limit = size - start if cut is None else min(cut, size - start)
            with open(path, "rb") as f:
                f.seek(start)
                while sent < limit:
                    chunk = f.read(min(1 << 16, limit - sent))
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    if zenodo.throttle:
                        time.sleep(zenodo.throttle)
            with zenodo.lock:
                zenodo.log.append((filename, range_header, 206 if range_header else 200, sent))
            if cut is not None:
                # Drop the connection mid-body, as a flaky network does.
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)

    return Handler


@contextlib.contextmanager
def serve_zenodo():
    """Run a :class:`FakeZenodo` on an ephemeral port of 127.0.0.1; ``zenodo.endpoint`` is its base URL.

    ``zenodo.stop()`` shuts it down early (later requests are refused).
    """
    zenodo = FakeZenodo()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(zenodo))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    zenodo.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    stopped = []

    def stop():
        if not stopped:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            stopped.append(True)

    zenodo.stop = stop
    try:
        yield zenodo
    finally:
        stop()


def client_env(zenodo, cache):
    """Environment for a subprocess that downloads from ``zenodo`` into ``cache`` (no proxies, no Hub)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith(("HF_", "VIPANN_"))}
    env.update(
        VIPANN_PANNS_ENDPOINT=zenodo.endpoint,
        VIPANN_CACHE_DIR=str(cache),
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    return env
