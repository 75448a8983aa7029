"""Background analyses owned by a long-running process (the web app): they outlive the page that started them.

One job per project folder; the page polls :meth:`AnalysisJobs.status` and finds a running job again after
the browser tab was closed and reopened.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from rl_core.errors import RLCoreError
from rl_core.project.analyse import analyse_project
from rl_core.project.store import RunSettings

log = logging.getLogger(__name__)


@dataclass
class JobState:
    project: str
    state: str = "running"  # running, stopping, done, interrupted, failed
    fraction: float = 0.0
    message: str = "starting the workers…"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    summary: dict | None = None
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ("running", "stopping")


class AnalysisJobs:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, tuple[threading.Thread, threading.Event, JobState]] = {}

    @staticmethod
    def _key(project: str | Path) -> str:
        return str(Path(project).expanduser().absolute())

    def start(self, project: str | Path, dirs: Sequence[str | Path], settings: RunSettings, *,
              workers: int | None = None, engine: str = "local", retry_failed: bool = False,
              confine: bool = False) -> JobState:
        key = self._key(project)
        with self._lock:
            current = self._jobs.get(key)
            if current is not None and current[2].active:
                raise RLCoreError(f"an analysis of {Path(key).name} is already running; wait for it or stop it")
            state, stop = JobState(key), threading.Event()

            def progress(fraction: float, message: str) -> None:
                state.fraction, state.message = fraction, message

            def work() -> None:
                try:
                    summary = analyse_project(dirs, key, settings, workers=workers, engine=engine,
                                              retry_failed=retry_failed, progress=progress, stop=stop,
                                              confine=confine)
                    state.summary = summary.as_dict()
                    state.message = summary.message()
                    state.state = "interrupted" if summary.interrupted else "done"
                    state.fraction = 1.0 if not summary.interrupted else state.fraction
                except RLCoreError as err:
                    state.state, state.error, state.message = "failed", str(err), str(err)
                except Exception as err:  # noqa: BLE001 - reported on the page; the server goes on
                    log.exception("analysis of %s failed", key)
                    state.state, state.error = "failed", f"unexpected {type(err).__name__}: {err}"
                    state.message = state.error
                finally:
                    state.finished = time.time()

            thread = threading.Thread(target=work, name=f"analyse-{Path(key).name}", daemon=True)
            self._jobs[key] = (thread, stop, state)
            thread.start()
            return state

    def status(self, project: str | Path) -> JobState | None:
        entry = self._jobs.get(self._key(project))
        return entry[2] if entry else None

    def stop(self, project: str | Path) -> JobState | None:
        entry = self._jobs.get(self._key(project))
        if entry is None or not entry[2].active:
            return entry[2] if entry else None
        entry[1].set()
        entry[2].state = "stopping"
        entry[2].message = "stopping after the files in progress…"
        return entry[2]

    def wait(self, project: str | Path, timeout: float | None = None) -> JobState | None:
        entry = self._jobs.get(self._key(project))
        if entry:
            entry[0].join(timeout)
        return entry[2] if entry else None

    def is_running(self, project: str | Path) -> bool:
        state = self.status(project)
        return bool(state and state.active)


JOBS = AnalysisJobs()
