"""A Hugging Face Hub-shaped HTTP server on 127.0.0.1 for the tests (no network).

It serves repositories through the ``resolve`` endpoint with the headers ``hf_hub_download`` reads
(``ETag``, ``X-Repo-Commit``, ``Content-Length``, ``X-Error-Code``), and accepts the write API that
``HfApi.create_repo`` and ``HfApi.upload_folder`` use (``/api/repos/create``, ``preupload``,
``commit``; with ``HF_HUB_DISABLE_XET=1``), so a push followed by a download goes through the real
``huggingface_hub`` code both ways. Requests are logged; ``/_mark/<label>`` requests let a client
group the log by step (:meth:`FakeHub.segments`).
"""

import base64
import contextlib
import hashlib
import http.server
import json
import re
import threading
import urllib.parse

__all__ = ["FakeHub", "serve_hub"]


class FakeHub:
    """Repositories ``{repo_id: {"refs": {branch: commit}, "commits": {commit: {filename: bytes}}}}``."""

    def __init__(self):
        self.repos = {}
        self.log = []
        self.lock = threading.Lock()

    def add(self, repo_id, files, branch="main"):
        commit = hashlib.sha1(repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())).encode())
        commit = commit.hexdigest()
        repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}})
        repo["commits"][commit] = dict(files)
        repo["refs"][branch] = commit
        return commit

    def segments(self):
        """Requests grouped by the marker the client sent before them."""
        out, current = {}, None
        for method, path in self.log:
            if path.startswith("/_mark/"):
                current = path[len("/_mark/") :]
                out[current] = []
            elif current is not None:
                out[current].append((method, path))
        return out


def _handler(hub):
    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 10  # a stuck client cannot hold a server thread for long

        def log_message(self, *args):
            pass

        def _send(self, status, headers, body=b""):
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, code, message, commit=None):
            headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
            if commit:
                headers["X-Repo-Commit"] = commit
            self._send(401 if code == "RepoNotFound" else 404, headers, json.dumps({"error": message}).encode())

        def _serve(self):
            path = urllib.parse.urlsplit(self.path).path
            with hub.lock:
                hub.log.append((self.command, path))
            if path.startswith("/_mark/"):
                return self._send(200, {}, b"ok")
            parts = path.lstrip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return self._send(404, {}, b"not a resolve url")
            repo_id = f"{parts[0]}/{parts[1]}"
            revision = urllib.parse.unquote(parts[3])
            filename = urllib.parse.unquote("/".join(parts[4:]))
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self._error("RepoNotFound", "Repository not found")
            commit = repo["refs"].get(revision, revision if revision in repo["commits"] else None)
            if commit is None:
                return self._error("RevisionNotFound", "Invalid rev id")
            files = repo["commits"][commit]
            if filename not in files:
                return self._error("EntryNotFound", "Entry not found", commit)
            body = files[filename]
            headers = {
                "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
                "X-Repo-Commit": commit,
                "Content-Type": "application/octet-stream",
            }
            self._send(200, headers, body)

        def _json(self, status, payload):
            self._send(status, {"Content-Type": "application/json"}, json.dumps(payload).encode())

        def do_POST(self):
            # The write API HfApi.create_repo / upload_folder use (legacy path, HF_HUB_DISABLE_XET=1):
            # every file is uploaded "regular" (base64 inside the commit), so no LFS round trip.
            path = urllib.parse.urlsplit(self.path).path
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with hub.lock:
                hub.log.append(("POST", path))
            if path == "/api/repos/create":
                request = json.loads(body)
                repo_id = f"{request['organization']}/{request['name']}"
                with hub.lock:
                    if repo_id in hub.repos:
                        return self._json(409, {"error": "You already created this model repo"})
                    hub.repos[repo_id] = {"refs": {}, "commits": {}}
                return self._json(200, {"url": f"{hub.endpoint}/{repo_id}"})
            if path == "/api/validate-yaml":
                return self._json(200, {"errors": [], "warnings": []})
            match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
            if match is None or match.group(1) not in hub.repos:
                return self._error("RepoNotFound", "Repository not found")
            repo_id, action, revision = match.group(1), match.group(2), urllib.parse.unquote(match.group(3))
            if action == "preupload":
                files = json.loads(body)["files"]
                modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                return self._json(200, {"files": modes})
            repo = hub.repos[repo_id]
            parent = repo["commits"].get(repo["refs"].get(revision), {})
            files = dict(parent)
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            commit = hub.add(repo_id, files, branch=revision)
            return self._json(200, {"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{commit}", "commitOid": commit})

        def do_GET(self):
            self._serve()

        def do_HEAD(self):
            self._serve()

    return Handler


@contextlib.contextmanager
def serve_hub():
    """Run a :class:`FakeHub` on an ephemeral port of 127.0.0.1; ``hub.endpoint`` is its URL."""
    hub = FakeHub()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
