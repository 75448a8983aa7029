"""Analyse folders of recordings into a project: plan (resume), run an engine, commit files in batches."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from rl_core.errors import ConfigError, RLCoreError
from rl_core.project.store import FileOutcome, FileTask, ProjectStore, RunSettings, scan_recordings

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]


@dataclass
class AnalysisSummary:
    run_id: str
    project: str
    found: int = 0
    skipped_done: int = 0
    skipped_failed: int = 0
    hidden: int = 0
    not_audio: int = 0
    done: int = 0
    failed: int = 0
    audio_hours: float = 0.0
    seconds: float = 0.0
    interrupted: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 all done, 1 some files failed (now or in an earlier run, still unresolved), 130 interrupted (Ctrl-C)."""
        return 130 if self.interrupted else (1 if self.failed or self.skipped_failed else 0)

    def message(self) -> str:
        rate = self.audio_hours / self.seconds * 3600 if self.seconds > 0 else 0.0
        parts = [f"{self.done} file(s) analysed ({self.audio_hours:.2f} h of audio in {self.seconds:.0f} s, "
                 f"{rate:.0f}x real time)"]
        if self.skipped_done:
            parts.append(f"{self.skipped_done} already done (skipped)")
        if self.failed:
            parts.append(f"{self.failed} failed (see the failures table; --retry-failed tries them again)")
        if self.skipped_failed:
            parts.append(f"{self.skipped_failed} failed before (skipped; --retry-failed tries them again)")
        if self.hidden or self.not_audio:
            parts.append(f"{self.hidden} hidden and {self.not_audio} non-audio file(s) skipped")
        text = "; ".join(parts) + f". Run {self.run_id} in {self.project}."
        if self.interrupted:
            text = "Interrupted: finished files are kept; run the same command again to resume. " + text
        return text

    def as_dict(self) -> dict:
        values = asdict(self)
        values["exit_code"] = self.exit_code
        return values


@dataclass
class _Progress:
    files_total: int
    bytes_total: int
    started: float = field(default_factory=time.perf_counter)
    files_done: int = 0
    failed: int = 0
    bytes_done: int = 0
    audio_s: float = 0.0

    def update(self, outcome: FileOutcome) -> None:
        self.files_done += 1
        self.bytes_done += outcome.task.size
        self.audio_s += outcome.duration_s
        self.failed += 0 if outcome.ok else 1

    def eta_s(self) -> float | None:
        elapsed = time.perf_counter() - self.started
        if self.bytes_done <= 0:
            return None
        return elapsed * (self.bytes_total - self.bytes_done) / self.bytes_done

    def fraction(self) -> float:
        return self.bytes_done / self.bytes_total if self.bytes_total else 1.0

    def message(self) -> str:
        elapsed = max(1e-9, time.perf_counter() - self.started)
        eta = self.eta_s()
        eta_text = "ETA --" if eta is None else f"ETA {_duration(eta)}"
        text = (f"{self.files_done}/{self.files_total} files, {self.audio_s / 3600:.2f} h audio, "
                f"{self.audio_s / elapsed / 3600:.4f} audio-h/s ({self.audio_s / elapsed:.1f}x real time), {eta_text}")
        return text + (f", {self.failed} failed" if self.failed else "")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def plan(store: ProjectStore, run_id: str, tasks: Sequence[FileTask], retry_failed: bool) -> tuple[list[FileTask], int, int]:
    """(files to analyse, skipped as done, skipped as failed): a file is done when path, size and mtime match."""
    done, failed = store.done_keys(run_id), store.failed_keys(run_id)
    todo, skipped_done, skipped_failed = [], 0, 0
    for task in tasks:
        key = (task.size, task.mtime_ns)
        if done.get(task.file_id) == key:
            skipped_done += 1
        elif failed.get(task.file_id) == key and not retry_failed:
            skipped_failed += 1
        else:
            todo.append(task)
    return todo, skipped_done, skipped_failed


def make_engine(engine: str = "local", workers: int | None = None, address: str | None = None):
    from rl_core.project.engines import InlineEngine, LocalEngine, RayEngine

    if engine == "local":
        return LocalEngine(workers)
    if engine == "inline":
        return InlineEngine()
    if engine == "ray":
        return RayEngine(address, workers)
    raise ConfigError(f"unknown engine '{engine}': use local (worker processes) or ray")


@contextlib.contextmanager
def ctrl_c_after_commit():
    """A Ctrl-C during a commit takes effect when the commit has ended: DuckDB turns a SIGINT that arrives during a
    query into an error of its own ("Query interrupted"), which would end the run as a failure instead of an
    interruption, with the batch rolled back. Only the main thread receives signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, None)
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt


def analyse_project(
    dirs: Iterable[str | Path],
    project: str | Path,
    settings: RunSettings,
    *,
    workers: int | None = None,
    engine: str | object = "local",
    address: str | None = None,
    retry_failed: bool = False,
    progress: Progress | None = None,
    show_bar: bool = False,
    stop: threading.Event | None = None,
    commit_every_files: int = 32,
    commit_every_s: float = 5.0,
    confine: bool = False,
) -> AnalysisSummary:
    """Analyse every recording under ``dirs`` into ``project`` (resumable; Ctrl-C or ``stop`` keeps finished files).

    Files already done for these settings (same path, size and mtime) are skipped; files that failed before
    are skipped unless ``retry_failed``. Finished files are committed in batches (at most
    ``commit_every_files`` files or ``commit_every_s`` seconds of work are lost to a hard kill).
    """
    from rl_core.registry import get_model_spec

    get_model_spec(settings.model)  # unknown names fail here, before any worker starts
    started = time.perf_counter()
    dirs = list(dirs)
    if not dirs:
        raise ConfigError("give at least one folder of recordings to analyse")
    if commit_every_files < 1:
        raise ConfigError(f"--commit-every must be >= 1 file, got {commit_every_files}")
    tasks, counts = scan_recordings(dirs, confine=confine)
    store = ProjectStore(project)
    try:
        run_id = store.ensure_run(settings)
        summary = AnalysisSummary(run_id=run_id, project=str(store.folder), found=len(tasks),
                                  hidden=counts["hidden"], not_audio=counts["not_audio"] + counts["outside"])
        todo, summary.skipped_done, summary.skipped_failed = plan(store, run_id, tasks, retry_failed)
        if not todo:
            summary.seconds = time.perf_counter() - started
            if progress:
                progress(1.0, "nothing to do: every file is already analysed")
            return summary
        state = _Progress(len(todo), sum(t.size for t in todo))
        bar = None
        if show_bar:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="file", desc="analysing", dynamic_ncols=True,
                       bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} files{postfix} [{elapsed}]")
        runner = make_engine(engine, workers, address) if isinstance(engine, str) else engine
        pending: list[FileOutcome] = []
        last_commit = time.perf_counter()
        window_recorded = False

        def flush() -> None:
            nonlocal last_commit, window_recorded
            if pending:
                with ctrl_c_after_commit():
                    store.commit(run_id, pending)
                    if not window_recorded:
                        window_s = next((o.window_s for o in pending if o.ok), None)
                        if window_s:
                            store.con.execute("update runs set window_s = ? where run_id = ? and window_s is null",
                                              [window_s, run_id])
                            window_recorded = True
                    pending.clear()
            last_commit = time.perf_counter()

        if progress:
            progress(0.0, f"0/{len(todo)} files ({summary.skipped_done} already done)")
        try:
            for outcome in runner.run(todo, settings):
                if not outcome.ok and outcome.error_type == "ModelLoadError":
                    raise RLCoreError(outcome.reason)
                pending.append(outcome)
                state.update(outcome)
                if outcome.ok:
                    summary.done += 1
                    summary.audio_hours += outcome.duration_s / 3600
                else:
                    summary.failed += 1
                    summary.failures.append((outcome.task.path, outcome.reason))
                    log.warning("%s: %s", outcome.task.rel_path, outcome.reason)
                if len(pending) >= commit_every_files or time.perf_counter() - last_commit >= commit_every_s:
                    flush()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(state.message().split(" files, ", 1)[1], refresh=False)
                if progress:
                    progress(state.fraction(), state.message())
                if stop is not None and stop.is_set():
                    summary.interrupted = True
                    break
            flush()
        except KeyboardInterrupt:
            summary.interrupted = True
            flush()
        finally:
            runner.stop()
            if hasattr(runner, "shutdown"):
                runner.shutdown()
            if bar is not None:
                bar.close()
        summary.seconds = time.perf_counter() - started
        if progress:
            progress(1.0 if not summary.interrupted else state.fraction(), summary.message())
        return summary
    finally:
        store.close()
