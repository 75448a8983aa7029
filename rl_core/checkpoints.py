"""Resolve checkpoint locations to local files and read weights safely.

Schemes: local paths, ``file://``, ``http(s)://`` (downloaded once into rl_core's cache, written to a
temporary name then renamed, optional sha256 check), ``hf://org/repo/path`` (huggingface_hub and its cache;
``HF_HUB_OFFLINE`` honoured) and ``gs://`` (needs gcsfs). Weights are read with safetensors or
``torch.load(weights_only=True)``; pickles that would run code are refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import torch

from rl_core.errors import (
    CheckpointError,
    CheckpointNotAvailableError,
    ChecksumMismatchError,
    MissingDependencyError,
    NotACheckpointError,
    UnsafeCheckpointError,
)

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 30.0
#: how long a reachability probe may take, and how long its answer is trusted
PROBE_TIMEOUT_S = 1.5
PROBE_TTL_S = 300.0


def cache_dir() -> Path:
    """Where downloaded (non-Hugging-Face) checkpoints live: $RL_CORE_CACHE or ~/.cache/rl_core."""
    root = os.environ.get("RL_CORE_CACHE") or Path.home() / ".cache" / "rl_core"
    return Path(root) / "checkpoints"


def _url_cache_path(url: str) -> Path:
    parsed = urllib.parse.urlparse(url)
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    filename = Path(parsed.path).name or "checkpoint"
    return cache_dir() / digest / filename


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _split_hf(url: str) -> tuple[str, str]:
    rest = url[len("hf://"):]
    parts = rest.split("/")
    if len(parts) < 3 or not all(parts):
        raise CheckpointError(f"hf:// paths look like hf://org/repo/path/to/file, got '{url}'")
    return "/".join(parts[:2]), "/".join(parts[2:])


def is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://", "gs://", "hf://"))


def public_source(url: str) -> str:
    """Where a remote file comes from, fit to show anyone: no query string (signed URLs carry their key there),
    no user name or password. ``hf://org/repo/file`` -> ``huggingface.co/org/repo (file)``."""
    if url.startswith("hf://"):
        repo_id, filename = _split_hf(url)
        return f"huggingface.co/{repo_id} ({filename})"
    parsed = urllib.parse.urlparse(url)
    return f"{parsed.scheme}://{parsed.hostname or ''}{f':{parsed.port}' if parsed.port else ''}{parsed.path}"


def hub_offline() -> bool:
    """HF_HUB_OFFLINE is set (huggingface_hub's own rule for true values)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


_probe_lock = threading.Lock()
_probe_answers: dict[tuple[str, int], tuple[float, bool]] = {}


def _endpoint(url: str) -> tuple[str, int] | None:
    if url.startswith("hf://"):
        endpoint = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
        return endpoint.hostname or "huggingface.co", endpoint.port or 443
    if url.startswith("gs://"):
        return "storage.googleapis.com", 443
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("http", "https") and parsed.hostname:
        return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    return None


def _connects(host: str, port: int) -> bool:
    """A TCP connection within PROBE_TIMEOUT_S, name lookup included (run in a thread: getaddrinfo has no timeout)."""
    answer: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
                answer.append(True)
        except OSError:
            answer.append(False)

    worker = threading.Thread(target=probe, daemon=True, name=f"probe-{host}")
    worker.start()
    worker.join(PROBE_TIMEOUT_S)
    return bool(answer and answer[0])


def source_reachable(url: str) -> bool:
    """Whether the server of a remote checkpoint answers now (False for hf:// under HF_HUB_OFFLINE).

    A TCP connection probe of at most PROBE_TIMEOUT_S; its answer is kept PROBE_TTL_S per server. Local paths
    are always "reachable"."""
    if url.startswith("hf://") and hub_offline():
        return False
    endpoint = _endpoint(url)
    if endpoint is None:
        return True
    now = time.monotonic()
    with _probe_lock:
        known = _probe_answers.get(endpoint)
    if known is not None and now - known[0] < PROBE_TTL_S:
        return known[1]
    reachable = _connects(*endpoint)
    with _probe_lock:
        _probe_answers[endpoint] = (now, reachable)
    return reachable


def unreachable_reason(url: str) -> str:
    host = (_endpoint(url) or ("?", 0))[0]
    return "HF_HUB_OFFLINE is set" if url.startswith("hf://") and hub_offline() else f"{host} cannot be reached"


def _not_available(url: str, model_name: str | None, looked_in: Path | str, reason: str,
                   kind: str = "checkpoint") -> CheckpointNotAvailableError:
    who = f"model '{model_name}'" if model_name else "this model"
    return CheckpointNotAvailableError(
        f"{kind} for {who} is not on this machine and could not be downloaded from {public_source(url)} ({reason}). "
        f"Looked in: {looked_in}. To use it offline, download the file on a machine with internet access and "
        f"place it at {looked_in}, or pass checkpoint_path='/path/to/file'."
    )


def _hf_cache_folder(url: str) -> Path:
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE) / f"models--{_split_hf(url)[0].replace('/', '--')}"


def checkpoint_local_path(url: str) -> Path | None:
    """The local file for ``url`` if it is already on this machine, without downloading anything."""
    if url.startswith("file://"):
        path = Path(urllib.parse.urlparse(url).path)
        return path if path.is_file() else None
    if url.startswith(("http://", "https://", "gs://")):
        path = _url_cache_path(url)
        return path if path.is_file() else None
    if url.startswith("hf://"):
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = _split_hf(url)
        found = try_to_load_from_cache(repo_id=repo_id, filename=filename)
        return Path(found) if isinstance(found, str) else None
    path = Path(url).expanduser()
    return path if path.is_file() else None


def _download_http(url: str, target: Path, model_name: str | None, sha256: str | None, kind: str) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".part-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                    shutil.copyfileobj(response, out, length=1 << 20)
            except (urllib.error.URLError, OSError, ValueError) as err:
                reason = getattr(err, "reason", None) or err
                raise _not_available(url, model_name, target, f"download failed: {reason}", kind) from None
        if sha256 and (actual := sha256_of(tmp_name)) != sha256.lower():
            raise ChecksumMismatchError(
                f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}; the file was not kept"
            )
        os.replace(tmp_name, target)  # atomic: a half-written file never carries the final name
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    log.info("downloaded %s to %s", url, target)
    return target


def _download_gcs(url: str, target: Path, model_name: str | None, sha256: str | None, kind: str) -> Path:
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"reading {url} needs the 'gcsfs' package: pip install gcsfs (then authenticate with gcloud)"
        ) from None
    import fsspec

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".part-", dir=target.parent)
    os.close(fd)
    try:
        try:
            fsspec.filesystem("gs").get(url, tmp_name)
        except Exception as err:  # gcsfs raises many types for auth/network errors
            raise _not_available(url, model_name, target, f"download failed: {err}", kind) from None
        if sha256 and (actual := sha256_of(tmp_name)) != sha256.lower():
            raise ChecksumMismatchError(f"checksum mismatch for {url}: expected {sha256}, got {actual}")
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def resolve_checkpoint(
    url: str | os.PathLike, model_name: str | None = None, sha256: str | None = None, kind: str = "checkpoint"
) -> Path:
    """Return a local file for ``url``, downloading it into the cache when needed.

    ``kind`` names the file in error messages ("checkpoint", "class mapping").
    """
    url = str(url)
    if url.startswith("file://"):
        path = Path(urllib.parse.urlparse(url).path)
        if not path.is_file():
            raise CheckpointNotAvailableError(f"{kind} file not found: {path} (from {url})")
        return path
    if url.startswith(("hf://", "http://", "https://")) and checkpoint_local_path(url) is None \
            and not source_reachable(url):
        # fail at once: a download attempt would only wait for timeouts and retries (gs:// first needs gcsfs)
        looked_in = _hf_cache_folder(url) if url.startswith("hf://") else _url_cache_path(url)
        raise _not_available(url, model_name, looked_in, unreachable_reason(url), kind)
    if url.startswith(("http://", "https://")):
        target = _url_cache_path(url)
        if target.is_file():
            return target
        return _download_http(url, target, model_name, sha256, kind)
    if url.startswith("gs://"):
        target = _url_cache_path(url)
        if target.is_file():
            return target
        return _download_gcs(url, target, model_name, sha256, kind)
    if url.startswith("hf://"):
        from huggingface_hub import hf_hub_download

        repo_id, filename = _split_hf(url)
        try:
            # A short etag timeout: offline, the lookup should fail in seconds, not after long retries.
            return Path(hf_hub_download(repo_id=repo_id, filename=filename, etag_timeout=5))
        except Exception as err:  # offline, 404, gated repo ...: all mean "not available here"
            reason = f"{type(err).__name__}: {str(err).splitlines()[0]}"
            raise _not_available(url, model_name, _hf_cache_folder(url), reason, kind) from None
    if "://" in url:
        raise CheckpointError(f"unsupported checkpoint scheme in '{url}': use a local path, file://, https://, hf:// or gs://")
    path = Path(url).expanduser()
    if not path.is_file():
        raise CheckpointNotAvailableError(f"{kind} file not found: {path}")
    return path


#: first bytes of the files torch.save writes: a zip archive (since torch 1.6) or a pickle (protocol 2+)
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def _not_a_checkpoint(path: Path, what: str) -> NotACheckpointError:
    return NotACheckpointError(
        f"{path.name} is not a checkpoint ({what}); give a .safetensors file or a file written by "
        f"torch.save(model.state_dict())"
    )


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights from a .safetensors file or a weights-only torch file (never arbitrary pickles).

    Anything else (a text file, a script, a truncated archive) raises :class:`NotACheckpointError`.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as err:
            raise NotACheckpointError(f"{path.name} is not a valid safetensors file: {err}") from None
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        raise CheckpointError(f"{path.name} cannot be read: {err.strerror or err}") from None
    # torch.load would hand any bytes to the unpickler, which fails with IndexError, KeyError or an
    # "unsafe pickle" message on a plain text file: check the format first.
    if not head.startswith(_TORCH_MAGIC):
        raise _not_a_checkpoint(path, "neither a torch.save archive nor a safetensors file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is a paragraph; the line naming the refused object or opcode is the useful part
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), lines[0] if lines else "")[:200]
        if "GLOBAL" not in detail:
            raise _not_a_checkpoint(path, f"unreadable pickle: {detail}") from None
        raise UnsafeCheckpointError(
            f"refused to load {path.name}: it contains Python objects that would run code when unpickled "
            f"({detail}). Save plain tensors instead (safetensors or torch.save(model.state_dict()))."
        ) from None
    except Exception as err:  # noqa: BLE001 - torch's reader fails on garbage with any type (IndexError, KeyError ...)
        first_line = str(err).splitlines()[0][:200] if str(err) else ""
        raise _not_a_checkpoint(path, f"{type(err).__name__}: {first_line}") from None
    for wrapper_key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper_key), dict):
            obj = obj[wrapper_key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise _not_a_checkpoint(path, "it does not hold a state_dict, a mapping of names to tensors")
    return obj
