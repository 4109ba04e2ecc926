"""A model by its hub id: found in the local cache offline, downloaded when allowed, a clear way out when not.

No hub can be reached here, so the "download" tests point huggingface_hub at a local HTTP server that
records what it is asked and answers 404: that proves offline mode is lifted for the download (a
request arrives) and restored afterwards, and that the error tells the user what to do.
"""

from __future__ import annotations

import http.server
import shutil
import threading

import pytest
from huggingface_hub import constants

from mvp.model import hub
from mvp.model.loader import ModelLoadError, ModelSpec, load_model, resolve_model_path


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _put_in_cache(cache, repo_id: str, folder) -> str:
    """The hub cache layout huggingface_hub itself writes: models--org--name/{refs/main, snapshots/<hash>}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)
    return str(repo / "snapshots" / commit)


def test_a_cached_hub_id_loads_offline(empty_cache, tiny_model_dir, monkeypatch):
    snapshot = _put_in_cache(empty_cache, "clinic/tiny-counsellor", tiny_model_dir)
    monkeypatch.setenv(hub.DOWNLOAD_ENV, "0")  # no download needed, so none is allowed
    path, is_demo = resolve_model_path("clinic/tiny-counsellor")
    assert path == snapshot and not is_demo
    loaded = load_model(ModelSpec(model="clinic/tiny-counsellor", device="cpu", quantization="none"))
    assert loaded.model_path == snapshot
    assert loaded.spec.model == "clinic/tiny-counsellor"  # what the store records stays the hub id


def test_offline_by_choice_refuses_with_a_way_out(empty_cache, monkeypatch):
    monkeypatch.setenv(hub.DOWNLOAD_ENV, "0")
    with pytest.raises(ModelLoadError) as err:
        resolve_model_path("clinic/not-here")
    message = str(err.value)
    assert "HF_HUB_OFFLINE" in message and "hf download clinic/not-here" in message and "--model demo" in message


class _RecordingHub(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.seen.append(self.path)
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "Repository not found"}')

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def local_hub():
    _RecordingHub.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _RecordingHub.seen
    server.shutdown()


def test_download_lifts_offline_mode_for_that_call_only(empty_cache, local_hub):
    endpoint, seen = local_hub
    with pytest.raises(hub.HubUnavailable) as err:
        hub.local_snapshot("clinic/not-here", allow_download=True, endpoint=endpoint)
    assert any("clinic/not-here" in path for path in seen), seen  # the download was really attempted
    assert constants.HF_HUB_OFFLINE is True  # and offline mode is back on afterwards
    message = str(err.value)
    assert message.startswith("无法下载模型 clinic/not-here") and "hf download" in message
    assert "Traceback" not in message


def test_the_users_own_offline_setting_is_remembered(monkeypatch):
    monkeypatch.delenv(hub.DOWNLOAD_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.remember_user_choice()
    assert not hub.downloads_allowed()
    monkeypatch.delenv(hub.DOWNLOAD_ENV)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub.remember_user_choice()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # what the app sets next, for everything else
    assert hub.downloads_allowed()


def test_a_malformed_id_is_a_clear_error(empty_cache):
    with pytest.raises(ModelLoadError, match="不是有效的模型 id"):
        resolve_model_path("bad id with spaces")
