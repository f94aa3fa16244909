"""The loopback Hub server: raw HTTP behaviour (from this process, with urllib) and the real huggingface_hub
client against it (in a client process, see conftest)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.hub.hub_server import HubServer, git_blob_sha1, model_index_errors, split_front_matter


def _request(url, method="GET", headers=None, data=None):
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_git_blob_sha1_matches_git():
    # `printf 'hello\n' | git hash-object --stdin`
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def test_resolve_headers_range_and_errors(hub_server: HubServer):
    data = bytes(range(256)) * 4
    oid = hub_server.seed_repo("org/repo", {"weights/w.bin": data})
    url = f"{hub_server.url}/org/repo/resolve/main/weights/w.bin"

    status, headers, body = _request(url, method="HEAD")
    assert status == 200 and body == b""
    assert headers["X-Repo-Commit"] == oid
    assert headers["ETag"] == f'"{git_blob_sha1(data)}"'
    assert int(headers["Content-Length"]) == len(data)

    status, headers, body = _request(url)
    assert status == 200 and body == data

    status, headers, body = _request(url, headers={"Range": "bytes=1000-"})
    assert status == 206 and body == data[1000:]
    assert headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"

    # by commit id as well as by branch
    assert _request(f"{hub_server.url}/org/repo/resolve/{oid}/weights/w.bin")[2] == data

    status, headers, _ = _request(f"{hub_server.url}/org/repo/resolve/main/nope.bin", method="HEAD")
    assert (status, headers["X-Error-Code"], headers["X-Repo-Commit"]) == (404, "EntryNotFound", oid)
    status, headers, _ = _request(f"{hub_server.url}/org/repo/resolve/v9/weights/w.bin")
    assert (status, headers["X-Error-Code"]) == (404, "RevisionNotFound")
    status, headers, _ = _request(f"{hub_server.url}/org/missing/resolve/main/w.bin")
    assert (status, headers["X-Error-Code"]) == (404, "RepoNotFound")
    assert hub_server.unhandled == []


def test_writes_need_the_token_and_unknown_endpoints_are_recorded(hub_server: HubServer):
    body = json.dumps({"name": "x", "organization": "org"}).encode()
    json_type = {"Content-Type": "application/json"}
    status, headers, _ = _request(f"{hub_server.url}/api/repos/create", "POST", json_type, body)
    assert status == 401
    assert not hub_server.store.exists("model", "org/x")
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {hub_server.token}"}
    status, _, answer = _request(f"{hub_server.url}/api/repos/create", "POST", auth, body)
    assert status == 200 and json.loads(answer)["url"] == f"{hub_server.url}/org/x"
    assert _request(f"{hub_server.url}/api/repos/create", "POST", auth, body)[0] == 409

    status, _, _ = _request(f"{hub_server.url}/api/spaces-hardware")
    assert status == 404
    assert hub_server.unhandled == ["GET /api/spaces-hardware"]


def test_commit_payload_with_lfs_entry_is_refused(hub_server: HubServer):
    hub_server.seed_repo("org/repo", {"a.txt": b"a"})
    lines = [
        {"key": "header", "value": {"summary": "lfs", "description": ""}},
        {"key": "lfsFile", "value": {"path": "big.bin", "algo": "sha256", "oid": "0" * 64, "size": 3}},
    ]
    payload = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    headers = {"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {hub_server.token}"}
    status, _, body = _request(f"{hub_server.url}/api/models/org/repo/commit/main", "POST", headers, payload)
    assert status == 400 and b"LFS" in body
    assert sorted(hub_server.store.files("model", "org/repo", hub_server.store.resolve("model", "org/repo", "main"))) \
        == [".gitattributes", "a.txt"]


def test_front_matter_and_model_index_checks():
    metadata, body = split_front_matter("---\nlicense: mit\n---\n# title\n")
    assert metadata == {"license": "mit"} and body == "# title\n"
    assert split_front_matter("# no metadata\n") == (None, "# no metadata\n")
    good = {"model-index": [{"name": "m", "results": [
        {"task": {"type": "depth-estimation"}, "dataset": {"type": "d", "name": "D"},
         "metrics": [{"type": "rmse", "value": 0.3}]}]}]}
    assert model_index_errors(good) == []
    bad = {"model-index": [{"name": "m", "results": [{"task": {}, "dataset": {"type": "d"}, "metrics": []}]}]}
    errors = model_index_errors(bad)
    assert any("task.type" in e for e in errors) and any("dataset.name" in e for e in errors)
    assert any("metrics" in e for e in errors)


def test_huggingface_hub_client_round_trip(hub_client):
    out = hub_client.call("protocol")
    server = hub_client.server
    assert out["whoami"] == "snd-test-user"
    assert out["repo_url_id"] == out["create_again_ok"] == "snd-test/protocol"
    assert out["files"] == [".gitattributes", "README.md", "nested/blob.bin"]
    assert out["info_sha"] == out["first_commit"] and out["card_tags"] == ["snd"]
    assert out["download_equal"] and out["download_in_snapshot_of"] == out["first_commit"]
    assert out["noop_commit"] == out["first_commit"], "an unchanged file must not create a commit"
    assert out["second_commit"] != out["first_commit"]
    assert out["old_revision_bytes_equal"] and out["new_revision_bytes"] == "v2"
    assert out["file_exists"] == [True, False]
    assert out["missing_file"] == "RemoteEntryNotFoundError"
    assert out["missing_repo"] == "RepositoryNotFoundError"
    assert out["after_delete"] == [".gitattributes", "nested/blob.bin"]
    assert out["wrong_token"] == 401
    assert "dev.txt" in out["dev_files"] and not out["main_has_dev_file"]
    assert out["private_with_token"] is True and out["private_without_token"] == "RepositoryNotFoundError"
    # files really live on disk, per revision
    assert server.store.read("model", "snd-test/protocol", "nested/blob.bin") == b"v2"
    assert server.store.read("model", "snd-test/protocol", "README.md", revision=out["first_commit"]).startswith(b"---")
    with pytest.raises(KeyError):
        server.store.read("model", "snd-test/protocol", "README.md")
    assert server.unhandled == []
    assert all(r.path.startswith(("/api/", "/snd-test/")) for r in server.requests)
