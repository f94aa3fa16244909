"""A small Hugging Face Hub-compatible HTTP server for tests (stdlib only, loopback only).

It speaks the subset of the Hub API that `huggingface_hub` 1.x/2.x and `transformers` 5.x use to push
and load models, read from their source:

* `POST /api/repos/create`, `DELETE /api/repos/delete`, `GET /api/whoami-v2`, `POST /api/validate-yaml`
* `GET /api/{type}s/{repo_id}[/revision/{rev}]` (model_info / repo_info, `siblings` = files)
* `GET /api/{type}s/{repo_id}/tree/{rev}[/{path}]` (list_repo_files / list_repo_tree)
* `POST /api/{type}s/{repo_id}/paths-info/{rev}`, `GET /api/{type}s/{repo_id}/refs`,
  `POST /api/{type}s/{repo_id}/branch/{branch}`
* `POST /api/{type}s/{repo_id}/preupload/{rev}`: always answers upload mode "regular", so the
  client never goes through LFS or Xet storage and sends every file base64-encoded inline in ...
* `POST /api/{type}s/{repo_id}/commit/{rev}`: the NDJSON commit (header, file, deletedFile, deletedFolder).
* `HEAD`/`GET /[{type}s/]{repo_id}/resolve/{rev}/{path}` with `X-Repo-Commit`, `ETag` (git blob sha1),
  `Content-Length` and `Range` support; missing entries answer 404 with `X-Error-Code` as the Hub does,
  which is what makes `huggingface_hub` raise `EntryNotFoundError` / `RepositoryNotFoundError`.

Storage (hub_storage.py) is on disk: one directory per commit holding that revision's full file tree
(`<root>/<type>s/<namespace>/<name>/commits/<oid>/tree/...`, unchanged files hard-linked from the parent
commit) and `repo.json` with the branch heads. Writes need `Authorization: Bearer <token>`.

Every request is logged (`server.requests`); requests this server does not understand are also recorded
in `server.unhandled`, so a test can assert the client used only endpoints modelled here.
This is a fake of the real Hub, used because tests cannot reach huggingface.co.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

from tests.hub.hub_storage import (  # noqa: F401 - re-exported for tests
    DEFAULT_BRANCH,
    REPO_TYPES,
    FileEntry,
    HubError,
    HubStore,
    check_path,
    git_blob_sha1,
    model_index_errors,
    split_front_matter,
    split_repo_id,
)

# --------------------------------------------------------------------------------------------------- HTTP


@dataclass
class RequestRecord:
    method: str
    path: str
    status: int


@dataclass
class HubServerState:
    store: HubStore
    token: str
    requests: list[RequestRecord] = field(default_factory=list)
    unhandled: list[str] = field(default_factory=list)
    base_url: str = ""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "snd-test-hub/1.0"
    state: HubServerState  # set on the subclass made per server

    def log_message(self, format, *args):  # noqa: A002 - silence stderr access logs
        pass

    # ---- plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head_only: bool = False):
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        if "Content-Length" not in headers:
            headers["Content-Length"] = str(len(body))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not head_only and body:
            self.wfile.write(body)
        self.state.requests.append(RequestRecord(self.command, self.path, status))

    def _json(self, status: int, payload, headers: dict | None = None):
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, error: HubError):
        headers = {"X-Error-Message": error.message}
        if error.error_code:
            headers["X-Error-Code"] = error.error_code
        if error.repo_commit:
            headers["X-Repo-Commit"] = error.repo_commit
        self._send(error.status, json.dumps({"error": error.message}).encode(), headers,
                   head_only=self.command == "HEAD")

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.state.token}"

    def _require_auth(self):
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")

    def _check_read(self, repo_type: str, repo_id: str) -> dict:
        meta = self.state.store.meta(repo_type, repo_id)
        if meta["private"] and not self._authorized():
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return meta

    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def _dispatch(self):
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        raw_parts = split.path.split("/")[1:]
        try:
            for route in (self._route_api, self._route_resolve):
                if route(raw_parts):
                    return
            self.state.unhandled.append(f"{self.command} {self.path}")
            raise HubError(404, f"Not modelled by the test hub: {self.command} {split.path}")
        except HubError as error:
            self._error(error)
        except Exception as error:  # a bug here must surface in the test, not hang the client
            self.state.unhandled.append(f"{self.command} {self.path} -> {type(error).__name__}: {error}")
            self._error(HubError(500, f"test hub error: {type(error).__name__}: {error}"))

    # ---- /api/...
    def _route_api(self, parts: list[str]) -> bool:
        if not parts or parts[0] != "api":
            return False
        parts = [unquote(p) for p in parts[1:]]
        method = self.command
        if parts == ["whoami-v2"] and method == "GET":
            self._require_auth()
            self._json(200, {"type": "user", "name": "snd-test-user", "fullname": "snd test user",
                             "orgs": [], "auth": {"type": "access_token",
                                                  "accessToken": {"displayName": "test", "role": "write"}}})
            return True
        if parts == ["repos", "create"] and method == "POST":
            self._create_repo(json.loads(self._body() or b"{}"))
            return True
        if parts == ["repos", "delete"] and method == "DELETE":
            self._require_auth()
            payload = json.loads(self._body() or b"{}")
            repo_id = f"{payload.get('organization') or 'snd-test-user'}/{payload['name']}"
            self.state.store.delete_repo(payload.get("type") or "model", repo_id)
            self._send(200, b"{}")
            return True
        if parts == ["validate-yaml"] and method == "POST":
            self._validate_yaml(json.loads(self._body() or b"{}"))
            return True
        if len(parts) >= 3 and parts[0] in ("models", "datasets", "spaces"):
            repo_type = parts[0][:-1]
            repo_id = f"{parts[1]}/{parts[2]}"
            rest = parts[3:]
            return self._route_repo(repo_type, repo_id, rest)
        return False

    def _create_repo(self, payload: dict):
        self._require_auth()
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        namespace = payload.get("organization") or "snd-test-user"
        repo_id = f"{namespace}/{payload.get('name')}"
        split_repo_id(repo_id)
        private = payload.get("private", payload.get("visibility") == "private")
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.state.base_url}/{prefix}{repo_id}"
        if not self.state.store.create_repo(repo_type, repo_id, private=bool(private)):
            self._json(409, {"error": "You already created this model repo", "url": url})
            return
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, payload: dict):
        try:
            metadata, _ = split_front_matter(payload.get("content", ""))
        except (yaml.YAMLError, ValueError) as error:
            self._json(400, {"errors": [{"message": f"Invalid YAML in README.md metadata: {error}"}]})
            return
        errors = model_index_errors(metadata or {})
        if errors:
            self._json(400, {"errors": [{"message": e} for e in errors]})
            return
        warnings = [] if metadata else [{"message": "empty or missing yaml metadata in repo card"}]
        self._json(200, {"errors": [], "warnings": warnings})

    def _route_repo(self, repo_type: str, repo_id: str, rest: list[str]) -> bool:
        store = self.state.store
        method = self.command
        if not rest and method == "GET":
            self._repo_info(repo_type, repo_id, DEFAULT_BRANCH)
            return True
        if len(rest) >= 2 and rest[0] == "revision" and method == "GET":
            self._repo_info(repo_type, repo_id, "/".join(rest[1:]))
            return True
        if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
            self._tree(repo_type, repo_id, rest[1], "/".join(rest[2:]))
            return True
        if rest == ["refs"] and method == "GET":
            meta = self._check_read(repo_type, repo_id)
            branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid}
                        for b, oid in sorted(meta["branches"].items())]
            self._json(200, {"branches": branches, "converts": [], "tags": [], "pullRequests": []})
            return True
        if len(rest) >= 2 and rest[0] == "branch" and method == "POST":
            self._require_auth()
            payload = json.loads(self._body() or b"{}")
            store.create_branch(repo_type, repo_id, "/".join(rest[1:]), payload.get("startingPoint"))
            self._send(200, b"{}")
            return True
        if len(rest) >= 2 and rest[0] == "paths-info" and method == "POST":
            self._paths_info(repo_type, repo_id, "/".join(rest[1:]))
            return True
        if len(rest) >= 2 and rest[0] == "preupload" and method == "POST":
            self._preupload(repo_type, repo_id, "/".join(rest[1:]))
            return True
        if len(rest) >= 2 and rest[0] == "commit" and method == "POST":
            self._commit(repo_type, repo_id, "/".join(rest[1:]))
            return True
        return False

    def _repo_info(self, repo_type: str, repo_id: str, revision: str):
        meta = self._check_read(repo_type, repo_id)
        store = self.state.store
        oid = store.resolve(repo_type, repo_id, revision)
        files = store.files(repo_type, repo_id, oid)
        with_blobs = self.query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for entry in files.values():
            sibling = {"rfilename": entry.path}
            if with_blobs:
                sibling.update(size=entry.size, blobId=entry.oid)
            siblings.append(sibling)
        card_data = None
        if "README.md" in files:
            try:
                card_data, _ = split_front_matter(store.file_path(repo_type, repo_id, oid, "README.md").read_text())
            except (yaml.YAMLError, ValueError, UnicodeDecodeError):
                card_data = None
        info = {
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": oid,
            "lastModified": meta.get("last_modified", meta["created_at"]),
            "createdAt": meta["created_at"],
            "private": meta["private"],
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": list((card_data or {}).get("tags") or []),
            "siblings": siblings,
        }
        if repo_type == "model":
            info["modelId"] = repo_id
            if card_data:
                info["cardData"] = card_data
                for key in ("pipeline_tag", "library_name"):
                    if key in card_data:
                        info[key] = card_data[key]
                if "model-index" in card_data:
                    info["model-index"] = card_data["model-index"]
            if "config.json" in files:
                config = json.loads(store.file_path(repo_type, repo_id, oid, "config.json").read_text())
                info["config"] = {k: config[k] for k in ("architectures", "model_type", "auto_map") if k in config}
        elif card_data:
            info["cardData"] = card_data
        self._json(200, info)

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str):
        self._check_read(repo_type, repo_id)
        store = self.state.store
        oid = store.resolve(repo_type, repo_id, revision)
        files = store.files(repo_type, repo_id, oid)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in files):
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", repo_commit=oid)
        entries, folders = [], set()
        for p, entry in sorted(files.items()):
            if not p.startswith(prefix):
                continue
            relative = p[len(prefix) :]
            dirs = relative.split("/")[:-1]
            for depth in range(1, len(dirs) + 1):
                if depth == 1 or recursive:
                    folders.add(prefix + "/".join(dirs[:depth]))
            if recursive or not dirs:
                entries.append({"type": "file", "oid": entry.oid, "size": entry.size, "path": p})
        tree_entries = [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                        for f in sorted(folders)]
        self._json(200, tree_entries + entries)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str):
        self._check_read(repo_type, repo_id)
        body = self._body()
        content_type = self.headers.get("Content-Type", "")
        paths = (json.loads(body).get("paths", []) if "json" in content_type
                 else parse_qs(body.decode()).get("paths", []))
        store = self.state.store
        oid = store.resolve(repo_type, repo_id, revision)
        files = store.files(repo_type, repo_id, oid)
        answer = []
        for p in paths:
            if p in files:
                answer.append({"type": "file", "oid": files[p].oid, "size": files[p].size, "path": p})
            elif any(f.startswith(p.rstrip("/") + "/") for f in files):
                answer.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0,
                               "path": p.rstrip("/")})
        self._json(200, answer)

    def _preupload(self, repo_type: str, repo_id: str, revision: str):
        self._require_auth()
        self._check_read(repo_type, repo_id)
        payload = json.loads(self._body() or b"{}")
        store = self.state.store
        try:
            existing = store.files(repo_type, repo_id, store.resolve(repo_type, repo_id, revision))
        except HubError:
            existing = {}  # committing to a branch that does not exist yet
        answer = []
        for item in payload.get("files", []):
            path = item["path"]
            check_path(path)
            answer.append({
                "path": path,
                # "regular": inline base64 in the commit; this server has no LFS/Xet storage.
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": existing[path].oid if path in existing else None,
            })
        self._json(200, {"files": answer, "commitOid": None})

    def _commit(self, repo_type: str, repo_id: str, revision: str):
        self._require_auth()
        self._check_read(repo_type, repo_id)
        if self.query.get("create_pr", ["0"])[0] in ("1", "true"):
            raise HubError(400, "Pull requests are not modelled by the test hub")
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "Commit payload must start with a header line")
        header = lines[0]["value"]
        additions, deletions, deleted_folders = {}, [], []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"Unsupported encoding {value.get('encoding')!r} for {value.get('path')}")
                additions[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deletions.append(value["path"])
            elif key == "deletedFolder":
                deleted_folders.append(value["path"])
            elif key == "lfsFile":
                raise HubError(400, f"LFS files are not modelled by the test hub ({value.get('path')}); "
                                    "preupload answers 'regular' for every file")
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        if "README.md" in additions:
            try:
                metadata, _ = split_front_matter(additions["README.md"].decode())
            except (yaml.YAMLError, ValueError, UnicodeDecodeError) as error:
                raise HubError(400, f"Invalid README.md metadata: {error}") from error
            errors = model_index_errors(metadata or {})
            if errors:
                raise HubError(400, "Invalid README.md metadata: " + "; ".join(errors))
        oid = self.state.store.commit(
            repo_type, repo_id, revision, additions=additions, deletions=deletions,
            deleted_folders=deleted_folders, message=header.get("summary", ""),
            description=header.get("description", ""), parent_commit=header.get("parentCommit"),
        )
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        self._json(200, {"success": True, "commitOid": oid, "pullRequestUrl": None, "hookOutput": "",
                         "commitUrl": f"{self.state.base_url}/{prefix}{repo_id}/commit/{oid}"})

    # ---- /{repo_id}/resolve/{revision}/{path}
    def _route_resolve(self, raw_parts: list[str]) -> bool:
        if self.command not in ("GET", "HEAD"):
            return False
        repo_type = "model"
        if raw_parts and raw_parts[0] in ("datasets", "spaces"):
            repo_type = raw_parts[0][:-1]
            raw_parts = raw_parts[1:]
        if len(raw_parts) < 5 or raw_parts[2] != "resolve":
            return False
        repo_id = f"{unquote(raw_parts[0])}/{unquote(raw_parts[1])}"
        revision = unquote(raw_parts[3])
        path = "/".join(unquote(p) for p in raw_parts[4:])
        store = self.state.store
        self._check_read(repo_type, repo_id)
        oid = store.resolve(repo_type, repo_id, revision)
        files = store.files(repo_type, repo_id, oid)
        if path not in files:
            raise HubError(404, "Entry not found", "EntryNotFound", repo_commit=oid)
        entry = files[path]
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": oid,
            "ETag": f'"{entry.oid}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.split('/')[-1])}",
        }
        data = store.file_path(repo_type, repo_id, oid, path).read_bytes()
        status = 200
        range_header = self.headers.get("Range")
        if range_header and self.command == "GET":
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
            if match is None:
                raise HubError(416, f"Unsupported Range {range_header!r}")
            start = int(match.group(1)) if match.group(1) else 0
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            if start >= len(data) and len(data) > 0:
                headers["Content-Range"] = f"bytes */{len(data)}"
                raise HubError(416, "Range not satisfiable")
            headers["Content-Range"] = f"bytes {start}-{min(end, len(data) - 1)}/{len(data)}"
            data = data[start : end + 1]
            status = 206
        headers["Content-Length"] = str(len(data))
        self._send(status, data, headers, head_only=self.command == "HEAD")
        return True


class HubServer:
    """`ThreadingHTTPServer` on 127.0.0.1 (free port) serving a `HubStore`; use as a context manager."""

    def __init__(self, root: str | os.PathLike, token: str = "hf_snd_test_token", host: str = "127.0.0.1"):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the test hub only listens on loopback")
        self.store = HubStore(root)
        self.token = token
        self.state = HubServerState(store=self.store, token=token)
        handler = type("BoundHandler", (_Handler,), {"state": self.state})
        self._httpd = ThreadingHTTPServer((host, 0), handler)
        self._httpd.daemon_threads = True
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self.state.base_url = self.url
        self._thread: threading.Thread | None = None

    @property
    def requests(self) -> list[RequestRecord]:
        return self.state.requests

    @property
    def unhandled(self) -> list[str]:
        return self.state.unhandled

    def client_env(self, base_env: dict | None = None) -> dict:
        """Environment for a client process: this endpoint, its token, online, no telemetry, no proxy."""
        env = dict(os.environ if base_env is None else base_env)
        env.update(
            HF_ENDPOINT=self.url,
            HF_TOKEN=self.token,
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_ETAG_TIMEOUT="30",
            HF_HUB_DOWNLOAD_TIMEOUT="60",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        for offline in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            env.pop(offline, None)
        for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            env.pop(proxy, None)
        return env

    def seed_repo(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model",
                  message: str = "seed files") -> str:
        """Create `repo_id` (if needed) and commit `files` directly into storage (test set-up)."""
        self.store.create_repo(repo_type, repo_id)
        return self.store.commit(repo_type, repo_id, DEFAULT_BRANCH, additions=files, message=message)

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="snd-test-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
