"""Checkpoint schemes on local files: path, file://, http(s) via a local server, hf:// via a pre-filled cache."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rl_core.checkpoints import checkpoint_local_path, load_state_dict, resolve_checkpoint
from rl_core.errors import (
    CheckpointError,
    CheckpointNotAvailableError,
    ChecksumMismatchError,
    MissingDependencyError,
    NotACheckpointError,
    UnsafeCheckpointError,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def weights(tmp_path) -> Path:
    path = tmp_path / "served" / "model.safetensors"
    path.parent.mkdir()
    save_file({"layer.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, str(path))
    return path


@pytest.fixture
def http_server(weights):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(weights.parent))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RL_CORE_CACHE", str(tmp_path / "cache"))


def test_local_path_and_file_url(weights):
    assert resolve_checkpoint(str(weights)) == weights
    assert resolve_checkpoint(f"file://{weights}") == weights
    assert load_state_dict(weights)["layer.weight"][1, 2].item() == 5.0
    with pytest.raises(CheckpointNotAvailableError, match="not found"):
        resolve_checkpoint(str(weights) + ".missing")


def test_http_download_cached_atomic_with_sha(weights, http_server, tmp_path):
    url = f"{http_server}/model.safetensors"
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert checkpoint_local_path(url) is None
    local = resolve_checkpoint(url, sha256=sha)
    assert local.read_bytes() == weights.read_bytes()
    assert str(local).startswith(str(tmp_path / "cache"))
    assert not [p for p in local.parent.iterdir() if p.name.startswith(".part-")]  # no temp file left
    assert checkpoint_local_path(url) == local
    weights.unlink()  # served file gone: the cached copy is used, no second download
    assert resolve_checkpoint(url) == local


def test_http_checksum_mismatch_keeps_nothing(weights, http_server):
    url = f"{http_server}/model.safetensors"
    with pytest.raises(ChecksumMismatchError, match="expected sha256 0000"):
        resolve_checkpoint(url, sha256="0" * 64)
    assert checkpoint_local_path(url) is None


def test_http_offline_error_names_model_url_and_cache_path(tmp_path):
    url = "http://127.0.0.1:9/esp/model.safetensors"  # discard port: connection refused
    with pytest.raises(CheckpointNotAvailableError) as info:
        resolve_checkpoint(url, model_name="esp_aves2_eat_all")
    message = str(info.value)
    assert "esp_aves2_eat_all" in message and url in message
    assert str(tmp_path / "cache") in message and "place it at" in message


def test_gs_without_gcsfs_names_package():
    try:
        import gcsfs  # noqa: F401
        pytest.skip("gcsfs is installed here; the missing-package message cannot be shown")
    except ImportError:
        pass
    with pytest.raises(MissingDependencyError, match="pip install gcsfs"):
        resolve_checkpoint("gs://bucket/model.pt")


def test_unknown_scheme():
    with pytest.raises(CheckpointError, match="unsupported checkpoint scheme"):
        resolve_checkpoint("ftp://example/model.pt")


def _fill_hf_cache(cache: Path, repo_id: str, filename: str, data: bytes) -> None:
    """Lay out a Hugging Face hub cache entry the way huggingface_hub writes it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    snap = repo_dir / "snapshots" / commit / filename
    snap.parent.mkdir(parents=True)
    os.symlink(os.path.relpath(blob, snap.parent), snap)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)


def _run_with_hf_env(code: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=120)


def test_hf_scheme_from_prefilled_cache(weights, tmp_path):
    cache = tmp_path / "hf"
    _fill_hf_cache(cache, "EarthSpeciesProject/esp-test", "esp-test.safetensors", weights.read_bytes())
    result = _run_with_hf_env(
        """
        from rl_core.checkpoints import resolve_checkpoint, load_state_dict, checkpoint_local_path
        url = "hf://EarthSpeciesProject/esp-test/esp-test.safetensors"
        assert checkpoint_local_path(url) is not None
        print(load_state_dict(resolve_checkpoint(url))["layer.weight"].sum().item())
        """,
        cache,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "15.0"


def test_hf_offline_missing_file_error(tmp_path):
    cache = tmp_path / "hf-empty"
    result = _run_with_hf_env(
        """
        from rl_core.errors import CheckpointNotAvailableError
        from rl_core.checkpoints import resolve_checkpoint
        try:
            resolve_checkpoint("hf://EarthSpeciesProject/esp-aves2-eat-all/esp-aves2-eat-all.safetensors", model_name="esp_aves2_eat_all")
        except CheckpointNotAvailableError as err:
            print(err)
        """,
        cache,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "esp_aves2_eat_all" in out and "huggingface.co/EarthSpeciesProject/esp-aves2-eat-all" in out
    assert "HF_HUB_OFFLINE is set" in out  # refused before any download attempt
    assert str(cache / "models--EarthSpeciesProject--esp-aves2-eat-all") in out and "place it at" in out


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {_RunsCode.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    _RunsCode.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "payload": _RunsCode()}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_state_dict(path)
    assert not _RunsCode.marker.exists()


def test_weights_only_torch_file_and_wrappers(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": {"a": torch.ones(2)}}, path)
    assert torch.equal(load_state_dict(path)["a"], torch.ones(2))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors at all")
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_state_dict(junk)


@pytest.mark.parametrize("kind", ["passwd", "text_pt", "shell_script", "plain_pickle", "broken_zip"])
def test_garbage_is_not_a_checkpoint(tmp_path, kind):
    """Issue 16 #7: /etc/passwd gave IndexError, a text .pt KeyError, a script 'an unsafe pickle'."""
    import pickle

    path = tmp_path / {"passwd": "passwd", "text_pt": "weights.pt", "shell_script": "run.sh",
                       "plain_pickle": "list.pt", "broken_zip": "cut.pt"}[kind]
    if kind == "passwd":
        path.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
    elif kind == "text_pt":
        path.write_text("hello, these are not weights\n")
    elif kind == "shell_script":
        path.write_text("#!/bin/sh\nrm -rf /tmp/nothing\n")
    elif kind == "plain_pickle":
        path.write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    else:
        torch.save({"a": torch.ones(3)}, path)
        path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(NotACheckpointError, match=rf"^{path.name} is not a checkpoint \("):
        load_state_dict(path)
