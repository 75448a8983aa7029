"""Where the per-file work runs: worker processes on this machine, or Ray tasks on a cluster.

Both engines run the same :func:`analyse_file` (one model per worker process, loaded on its first file and
kept) and hand :class:`FileOutcome` objects back to the driver, which alone writes the store.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Iterable, Iterator

import numpy as np

from rl_core.errors import ConfigError, MissingDependencyError, RLCoreError
from rl_core.project.store import FileOutcome, FileTask, RunSettings

log = logging.getLogger(__name__)

_worker: dict = {"model": None, "key": None, "labels_run": None, "threads_set": False}


class ModelLoadError(RLCoreError):
    """The model could not be loaded in a worker: the whole run stops (no file could succeed)."""


def physical_cores() -> int:
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except ImportError:
        return max(1, os.cpu_count() or 1)


def _single_threaded() -> None:
    """One compute thread per worker: workers, not threads, use the cores (BirdNET's LiteRT reads torch's count)."""
    if _worker["threads_set"]:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)
    _worker["threads_set"] = True


def _exit_with_parent() -> None:
    """A worker ends when its driver dies, even by SIGKILL (no orphan keeps a core and a model)."""
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: Linux sends SIGTERM when the parent exits
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
        return
    except (OSError, AttributeError):
        pass

    def watch() -> None:  # other systems: poll the parent id
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    import threading

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def init_worker() -> None:
    """Process-pool initializer: Ctrl-C goes to the driver only, which then stops the pool cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    _single_threaded()


def _worker_model(settings: RunSettings):
    key = (settings.model, settings.precision)
    if _worker["key"] != key:
        from rl_core.cache import get_model

        _worker["model"] = get_model(settings.model, device="cpu",
                                     precision=None if settings.precision == "float32" else settings.precision)
        _worker["key"] = key
        _worker["labels_run"] = None
    return _worker["model"]


def _model_pass(model, path: str, settings: RunSettings):
    """The project's one call into the single recording path: (result, the file's header)."""
    from rl_core.audio import audio_info
    from rl_core.inference import analyse_recording

    info = audio_info(path)
    result = analyse_recording(model, path, hop_s=settings.hop_s, want_scores=True,
                               want_embeddings=settings.embeddings, info=info)
    return result, info


def analyse_file(task: FileTask, settings: RunSettings, run_token: str = "") -> FileOutcome:
    """Run the model over one recording; any error of the file becomes a failed outcome with its reason.

    The class names travel with a worker's first outcome of each engine run (``run_token``): workers outlive runs
    (Ray's, the inline engine's process), and every run's driver needs the names once."""
    _single_threaded()
    started = time.perf_counter()
    try:
        model = _worker_model(settings)
    except Exception as err:  # noqa: BLE001 - reported to the driver, which stops the run
        return FileOutcome(task, False, error_type="ModelLoadError", reason=f"cannot load model '{settings.model}': {err}")
    try:
        result, info = _model_pass(model, task.path, settings)
    except RLCoreError as err:
        return FileOutcome(task, False, error_type=type(err).__name__, reason=str(err), seconds=time.perf_counter() - started)
    except MemoryError:
        return FileOutcome(task, False, error_type="MemoryError", reason="out of memory while analysing this file")
    except Exception as err:  # noqa: BLE001 - a decoder's own exception types; the run goes on
        log.debug("unexpected error on %s", task.path, exc_info=True)
        return FileOutcome(task, False, error_type=type(err).__name__, reason=f"{type(err).__name__}: {err}",
                           seconds=time.perf_counter() - started)
    outcome = FileOutcome(
        task, True, duration_s=float(result.duration_s), sample_rate=int(result.sample_rate),
        window_s=float(model.audio_config.target_length_seconds),
        starts=result.starts.astype(np.float64), ends=result.ends.astype(np.float64),
        seconds=time.perf_counter() - started, channels=int(info.channels),
    )
    if result.scores is not None:
        window, klass = np.nonzero(result.scores >= settings.score_floor)
        outcome.score_window = window.astype(np.int32)
        outcome.score_class = klass.astype(np.int16)
        outcome.score_value = result.scores[window, klass].astype(np.float32)
        if _worker["labels_run"] != run_token or not run_token:
            outcome.labels = tuple(result.labels)
            outcome.common_names = tuple(result.common_names) if result.common_names else None
            _worker["labels_run"] = run_token
    if result.embeddings is not None:
        outcome.embeddings = result.embeddings.astype(np.float16)
    return outcome


def _crashed(task: FileTask) -> FileOutcome:
    return FileOutcome(task, False, error_type="WorkerCrashed",
                       reason="the worker process died while analysing this file (a decoder crash or out of memory)")


class LocalEngine:
    """Worker processes on this machine (spawned, so safe to start from a server thread)."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = physical_cores() if workers is None else int(workers)
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        import multiprocessing

        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker)

    def run(self, tasks: Iterable[FileTask], settings: RunSettings) -> Iterator[FileOutcome]:
        queue, token = list(tasks)[::-1], uuid.uuid4().hex
        crashes: dict[int, int] = {}
        self._pool = self._new_pool()
        running: dict[Future, FileTask] = {}
        try:
            while queue or running:
                while queue and len(running) < 2 * self.workers:
                    task = queue.pop()
                    running[self._pool.submit(analyse_file, task, settings, token)] = task
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                broken = False
                for future in finished:
                    task = running.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool:
                        broken = True
                        crashes[task.file_id] = crashes.get(task.file_id, 0) + 1
                        if crashes[task.file_id] >= 2:
                            yield _crashed(task)
                        else:
                            queue.append(task)
                if broken:
                    for future, task in list(running.items()):
                        crashes[task.file_id] = crashes.get(task.file_id, 0) + 1
                        queue.append(task)
                    running.clear()
                    self._pool.shutdown(wait=False, cancel_futures=True)
                    log.warning("a worker process died; restarting the workers")
                    self._pool = self._new_pool()
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop the workers now (files in flight are dropped; they are analysed again on resume)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=5)

    def worker_pids(self) -> list[int]:
        pool = self._pool
        return [p.pid for p in getattr(pool, "_processes", {}).values()] if pool else []


class InlineEngine:
    """The work in this process, one file after another (used by the web app for small uploads and by tests)."""

    name = "inline"
    workers = 1

    def run(self, tasks: Iterable[FileTask], settings: RunSettings) -> Iterator[FileOutcome]:
        token = uuid.uuid4().hex
        for task in tasks:
            yield analyse_file(task, settings, token)

    def stop(self) -> None:
        pass


def _ray_analyse(task: FileTask, settings: RunSettings, run_token: str) -> FileOutcome:
    return analyse_file(task, settings, run_token)


class RayEngine:
    """Ray tasks (one CPU each) on a local instance or a cluster; results come back to the driver, which commits.

    ``address=None`` starts a private local instance on 127.0.0.1; ``"auto"`` or ``"ray://host:10001"`` joins a
    cluster, whose nodes need rl_core installed and the recordings at the same paths (shared storage).
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise MissingDependencyError("--engine ray needs Ray: pip install -r requirements-ray.txt") from None
        self.ray = ray
        self._started_here = False
        if not ray.is_initialized():
            options: dict = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
            if address is None:
                import rl_core

                repo = os.path.dirname(os.path.dirname(os.path.abspath(rl_core.__file__)))
                pythonpath = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p)
                options.update(num_cpus=workers or physical_cores(), _node_ip_address="127.0.0.1",
                               runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
            else:
                options["address"] = address
            try:
                ray.init(**options)
            except Exception as err:  # noqa: BLE001 - connection errors have many types
                raise ConfigError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {err}") from None
            self._started_here = True
        self.workers = workers or int(ray.cluster_resources().get("CPU", 1))
        self._remote = ray.remote(num_cpus=1, max_retries=1)(_ray_analyse)
        self._pending: list = []

    def run(self, tasks: Iterable[FileTask], settings: RunSettings) -> Iterator[FileOutcome]:
        ray = self.ray
        queue, token = list(tasks)[::-1], uuid.uuid4().hex
        running: dict = {}
        settings_ref = ray.put(settings)
        try:
            while queue or running:
                while queue and len(running) < 2 * self.workers:
                    task = queue.pop()
                    running[self._remote.remote(task, settings_ref, token)] = task
                self._pending = list(running)
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    task = running.pop(ref)
                    self._pending = list(running)  # only unfinished tasks are ever cancelled
                    try:
                        yield ray.get(ref)
                    except ray.exceptions.RayError as err:
                        yield FileOutcome(task, False, error_type="RayTaskError", reason=f"Ray task failed: {err}".splitlines()[0])
        finally:
            self.stop()

    def stop(self) -> None:
        """Cancel the tasks still outstanding (after an interruption; a finished run has none). Cancelling a task
        that has already completed, or force-killing its worker, trips a check in Ray's core worker (2.60) that
        aborts the driver process, so only unfinished tasks are cancelled, without force."""
        for ref in self._pending:
            try:
                self.ray.cancel(ref)
            except Exception:  # noqa: BLE001 - already finished
                pass
        self._pending = []

    def shutdown(self) -> None:
        if self._started_here and self.ray.is_initialized():
            self.ray.shutdown()
