"""On-disk storage of the loopback test Hub (see hub_server.py): repositories with branch heads and one full
file tree per commit, plus the README metadata checks the Hub applies on commit."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_TYPES = ("model", "dataset", "space")
DEFAULT_BRANCH = "main"
_COMMIT_OID = re.compile(r"^[0-9a-f]{40}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, as `git hash-object` computes it (the Hub's ETag for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubError(Exception):
    """An error answered to the client with the Hub's status code and `X-Error-Code` header."""

    def __init__(self, status: int, message: str, error_code: str | None = None, repo_commit: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.repo_commit = repo_commit


@dataclass
class FileEntry:
    path: str
    size: int
    oid: str  # git blob sha1


# --------------------------------------------------------------------------------------------------- storage


class HubStore:
    """Repositories on disk: full file tree per commit, branch heads in `repo.json`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._counter = 0

    # ---- paths and metadata
    def repo_dir(self, repo_type: str, repo_id: str) -> Path:
        namespace, name = split_repo_id(repo_id)
        return self.root / f"{repo_type}s" / namespace / name

    def exists(self, repo_type: str, repo_id: str) -> bool:
        return (self.repo_dir(repo_type, repo_id) / "repo.json").is_file()

    def meta(self, repo_type: str, repo_id: str) -> dict:
        path = self.repo_dir(repo_type, repo_id) / "repo.json"
        if not path.is_file():
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return json.loads(path.read_text())

    def _write_meta(self, repo_type: str, repo_id: str, meta: dict) -> None:
        path = self.repo_dir(repo_type, repo_id) / "repo.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, path)

    def commit_dir(self, repo_type: str, repo_id: str, oid: str) -> Path:
        return self.repo_dir(repo_type, repo_id) / "commits" / oid

    # ---- repositories
    def create_repo(self, repo_type: str, repo_id: str, private: bool = False) -> bool:
        """Create a repository with an initial commit holding `.gitattributes`; False if it existed."""
        with self._lock:
            if self.exists(repo_type, repo_id):
                return False
            self.repo_dir(repo_type, repo_id).mkdir(parents=True, exist_ok=True)
            meta = {"private": bool(private), "created_at": _now(), "branches": {}, "commits": []}
            self._write_meta(repo_type, repo_id, meta)
            self.commit(
                repo_type,
                repo_id,
                DEFAULT_BRANCH,
                additions={".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
                message="initial commit",
            )
            return True

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self._lock:
            if not self.exists(repo_type, repo_id):
                raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
            shutil.rmtree(self.repo_dir(repo_type, repo_id))

    def resolve(self, repo_type: str, repo_id: str, revision: str) -> str:
        """Branch name or commit oid -> commit oid (HubError RevisionNotFound otherwise)."""
        meta = self.meta(repo_type, repo_id)
        if revision in meta["branches"]:
            return meta["branches"][revision]
        if revision.startswith("refs/heads/") and revision[len("refs/heads/") :] in meta["branches"]:
            return meta["branches"][revision[len("refs/heads/") :]]
        if _COMMIT_OID.match(revision) and self.commit_dir(repo_type, repo_id, revision).is_dir():
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def create_branch(self, repo_type: str, repo_id: str, branch: str, starting_point: str | None) -> None:
        with self._lock:
            meta = self.meta(repo_type, repo_id)
            if branch in meta["branches"]:
                raise HubError(409, f"Reference {branch} already exists")
            meta["branches"][branch] = self.resolve(repo_type, repo_id, starting_point or DEFAULT_BRANCH)
            self._write_meta(repo_type, repo_id, meta)

    # ---- files
    def files(self, repo_type: str, repo_id: str, oid: str) -> dict[str, FileEntry]:
        manifest = self.commit_dir(repo_type, repo_id, oid) / "files.json"
        return {path: FileEntry(path, **entry) for path, entry in json.loads(manifest.read_text()).items()}

    def file_path(self, repo_type: str, repo_id: str, oid: str, path: str) -> Path:
        return self.commit_dir(repo_type, repo_id, oid) / "tree" / path

    def read(self, repo_type: str, repo_id: str, path: str, revision: str = DEFAULT_BRANCH) -> bytes:
        """Test helper: a file's bytes at a revision."""
        oid = self.resolve(repo_type, repo_id, revision)
        if path not in self.files(repo_type, repo_id, oid):
            raise KeyError(f"{path} not in {repo_id}@{revision}")
        return self.file_path(repo_type, repo_id, oid, path).read_bytes()

    def commit(
        self,
        repo_type: str,
        repo_id: str,
        branch: str,
        additions: dict[str, bytes] | None = None,
        deletions: list[str] | None = None,
        deleted_folders: list[str] | None = None,
        message: str = "",
        description: str = "",
        parent_commit: str | None = None,
    ) -> str:
        """Create a commit on `branch` from its head; returns the new commit oid."""
        additions = additions or {}
        with self._lock:
            meta = self.meta(repo_type, repo_id)
            parent = meta["branches"].get(branch)
            if parent is None and meta["commits"]:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if parent_commit is not None and (parent is None or not parent.startswith(parent_commit)):
                raise HubError(412, f"Parent commit {parent_commit} is not the head of {branch} ({parent})")
            old = self.files(repo_type, repo_id, parent) if parent else {}
            new = dict(old)
            for path in deletions or []:
                if path not in new:
                    raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
                del new[path]
            for folder in deleted_folders or []:
                prefix = folder.rstrip("/") + "/"
                doomed = [p for p in new if p.startswith(prefix)]
                if not doomed:
                    raise HubError(404, f"Entry not found: {folder}", "EntryNotFound")
                for p in doomed:
                    del new[p]
            for path, data in additions.items():
                check_path(path)
                new[path] = FileEntry(path, len(data), git_blob_sha1(data))

            self._counter += 1
            digest = hashlib.sha1()
            digest.update(f"{parent}\n{message}\n{self._counter}\n{_now()}\n".encode())
            for path in sorted(new):
                digest.update(f"{path}:{new[path].oid}\n".encode())
            oid = digest.hexdigest()

            tree = self.commit_dir(repo_type, repo_id, oid) / "tree"
            tree.mkdir(parents=True)
            for path in new:
                target = tree / path
                target.parent.mkdir(parents=True, exist_ok=True)
                if path in additions:
                    target.write_bytes(additions[path])
                else:  # unchanged: share the parent's copy
                    source = self.file_path(repo_type, repo_id, parent, path)
                    try:
                        os.link(source, target)
                    except OSError:
                        shutil.copyfile(source, target)
            manifest = {p: {"size": e.size, "oid": e.oid} for p, e in sorted(new.items())}
            (tree.parent / "files.json").write_text(json.dumps(manifest, indent=1))
            commit_meta = {"parents": [parent] if parent else [], "message": message, "description": description,
                           "date": _now()}
            (tree.parent / "commit.json").write_text(json.dumps(commit_meta, indent=1))

            meta["branches"][branch] = oid
            meta["commits"].append(oid)
            meta["last_modified"] = commit_meta["date"]
            self._write_meta(repo_type, repo_id, meta)
            return oid


def split_repo_id(repo_id: str) -> tuple[str, str]:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(_NAME.match(p) for p in parts):
        raise HubError(400, f"Invalid repo id {repo_id!r}: expected 'namespace/name'")
    return parts[0], parts[1]


def check_path(path: str) -> None:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..", ".git") for p in parts):
        raise HubError(400, f"Invalid path in repo: {path!r}")


# --------------------------------------------------------------------------------------------------- metadata


def split_front_matter(text: str) -> tuple[dict | None, str]:
    """README front matter (`---\\n yaml \\n---`) -> (metadata dict or None, body)."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, flags=re.DOTALL)
    if match is None:
        return None, text
    data = yaml.safe_load(match.group(1))
    if data is not None and not isinstance(data, dict):
        raise ValueError("metadata must be a YAML mapping")
    return data or {}, text[match.end() :]


def model_index_errors(metadata: dict) -> list[str]:
    """Structural checks the Hub applies to `model-index` (required keys and types)."""
    index = metadata.get("model-index")
    if index is None:
        return []
    errors = []
    if not isinstance(index, list) or not index:
        return ['"model-index" must be a non-empty list']
    for i, model in enumerate(index):
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            errors.append(f'"model-index[{i}].name" must be a string')
            continue
        for j, result in enumerate(model.get("results") or []):
            where = f"model-index[{i}].results[{j}]"
            if not isinstance((result.get("task") or {}).get("type"), str):
                errors.append(f'"{where}.task.type" is required')
            dataset = result.get("dataset") or {}
            for key in ("type", "name"):
                if not isinstance(dataset.get(key), str):
                    errors.append(f'"{where}.dataset.{key}" is required')
            metrics = result.get("metrics")
            if not isinstance(metrics, list) or not metrics:
                errors.append(f'"{where}.metrics" must be a non-empty list')
                continue
            for k, metric in enumerate(metrics):
                if not isinstance(metric.get("type"), str):
                    errors.append(f'"{where}.metrics[{k}].type" is required')
                if not isinstance(metric.get("value"), (int, float, str)) or isinstance(metric.get("value"), bool):
                    errors.append(f'"{where}.metrics[{k}].value" must be a number or a string')
    return errors
