"""Archive projects: a folder of real recordings analysed into a DuckDB + Parquet store, resumed, exported."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from archive_fixture import BROKEN_FILES, GOOD_FILES, make_archive
from rl_core.detection_filters import DetectionFilter
from rl_core.errors import ConfigError
from rl_core.project import ProjectStore, RunSettings, analyse_project, scan_recordings
from rl_core.project.exports import KALEIDOSCOPE_HEADER, export_project, raw_threshold

REPO = Path(__file__).resolve().parent.parent
BIRDNET = RunSettings("birdnet_v2_4")


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return make_archive(tmp_path_factory.mktemp("archive") / "season2024")


@pytest.fixture(scope="module")
def analysed(archive, tmp_path_factory):
    project = tmp_path_factory.mktemp("project") / "p"
    summary = analyse_project([archive], project, BIRDNET, engine="inline")
    return project, summary


def store_contents(project: Path) -> dict[str, pd.DataFrame]:
    """Every table (without wall-clock columns) and the embeddings, sorted: equal stores give equal frames."""
    import duckdb

    con = duckdb.connect(str(project / "project.duckdb"), read_only=True)
    out = {}
    for table, order in [("files", "file_id"), ("file_runs", "run_id, file_id"),
                         ("windows", "run_id, file_id, window_index"),
                         ("scores", "run_id, file_id, window_index, class_index"),
                         ("classes", "run_id, class_index"), ("failures", "run_id, file_id")]:
        frame = con.execute(f"select * from {table} order by {order}").df()
        out[table] = frame.drop(columns=[c for c in ("finished_at", "failed_at", "part") if c in frame.columns])
    out["embeddings"] = con.execute(
        f"select file_id, window_index, embedding from read_parquet('{project}/embeddings/*/*.parquet') "
        "order by file_id, window_index").df()
    con.close()
    return out


def assert_same_store(a: Path, b: Path) -> None:
    left, right = store_contents(a), store_contents(b)
    for name in left:
        if name == "embeddings":
            assert left[name][["file_id", "window_index"]].equals(right[name][["file_id", "window_index"]])
            np.testing.assert_array_equal(np.stack(left[name].embedding.to_numpy()), np.stack(right[name].embedding.to_numpy()))
        else:
            pd.testing.assert_frame_equal(left[name], right[name], check_exact=True, obj=name)


def test_scan_finds_recordings_and_counts_skipped(archive):
    tasks, counts = scan_recordings([archive])
    assert len(tasks) == GOOD_FILES + BROKEN_FILES == counts["audio"]
    assert counts == {"audio": 26, "hidden": 3, "not_audio": 1, "outside": 0}  # .hidden.wav, ._mac.wav, .cache/ ; notes.txt
    assert {t.folder for t in tasks} == {"season2024/siteA", "season2024/siteB", "season2024/broken"}
    assert [t.path for t in tasks] == sorted(t.path for t in tasks)
    with pytest.raises(ConfigError, match="no such folder"):
        scan_recordings([archive / "missing"])


def test_analysis_store_holds_windows_scores_embeddings_and_failures(analysed):
    project, summary = analysed
    assert (summary.done, summary.failed, summary.exit_code) == (GOOD_FILES, BROKEN_FILES, 1)
    assert (summary.hidden, summary.not_audio) == (3, 1)
    with ProjectStore(project, read_only=True) as store:
        run = store.default_run()
        assert store.summary(run)["files_done"] == GOOD_FILES
        failures = store.failures(run).set_index(store.failures(run).path.map(lambda p: Path(p).name))
        assert failures.loc["empty.wav", "error_type"] == "EmptyAudioError"
        assert failures.loc["truncated.wav", "error_type"] == "TruncatedAudioError"
        assert failures.loc["not_audio.flac", "error_type"] == "AudioDecodeError"
        assert "declares 2.5 s" in failures.loc["truncated.wav", "reason"]
        files = store.files(run).set_index("rel_path")
        assert files.loc["siteB/20240516_080000.flac", ["sample_rate", "channels"]].tolist() == [44100, 2]
        assert files.loc["siteB/20240516_090000.mp3", "sample_rate"] == 32000
        assert str(files.loc["siteA/20240515_063000.wav", "recorded_at"]) == "2024-05-15 06:30:00"
        top = DetectionFilter(min_conf=0.1).apply(store.window_scores(run, 0.1))
        best = top.sort_values("score").groupby("file").last()
        great_tits = [f for f in best.index if f.endswith(".wav") and "petrel" not in f]
        assert len(great_tits) == 20 and (best.loc[great_tits, "scientific_name"] == "Parus major").mean() >= 0.9
        petrels = ["siteB/20240516_080000.flac", "siteB/20240516_090000.mp3", "siteB/petrel_48k.wav"]
        assert (best.loc[petrels, "scientific_name"] == "Hydrobates pelagicus").all()
        meta, matrix = store.embeddings(run)
        assert matrix.shape == (int(files.n_windows.sum()), 1024)
        assert np.isfinite(matrix).all() and matrix.std() > 0.01
        scores = store.con.execute("select min(score), count(*) from scores").fetchone()
        assert scores[0] >= BIRDNET.score_floor and scores[1] > 10 * len(meta)  # about 30 classes per window above 0.001


def test_project_opens_with_plain_duckdb_and_pandas(analysed):
    import duckdb

    project, _ = analysed
    code = (
        "import duckdb, pandas, sys\n"
        f"con = duckdb.connect({str(project / 'project.duckdb')!r}, read_only=True)\n"
        "top = con.execute(\"select scientific_name, count(*) n from detections where score >= 0.5 group by 1 order by 2 desc\").df()\n"
        f"emb = pandas.read_parquet({str(project / 'embeddings')!r})\n"
        "print(top.scientific_name[0], len(emb), len(emb.embedding[0]), emb.embedding[0].dtype)\n"
        "assert 'rl_core' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True).stdout.split()
    assert out[0:2] == ["Parus", "major"] and out[3:] == ["1024", "float16"]
    assert duckdb.connect(str(project / "project.duckdb"), read_only=True).execute(
        "select count(*) from files").fetchone()[0] == GOOD_FILES + BROKEN_FILES


def test_resume_changed_files_retry_failed_and_new_runs(tmp_path):
    archive = tmp_path / "site"
    make_archive(tmp_path / "full")
    shutil.copytree(tmp_path / "full" / "siteA", archive)
    shutil.copytree(tmp_path / "full" / "broken", archive / "broken")
    project = tmp_path / "project"
    first = analyse_project([archive], project, BIRDNET, engine="inline")
    assert (first.done, first.failed) == (10, 3)
    again = analyse_project([archive], project, BIRDNET, engine="inline")
    assert (again.done, again.failed, again.skipped_done, again.skipped_failed, again.exit_code) == (0, 0, 10, 3, 1)
    # a file whose modification time changed is analysed again; the others are not
    song = archive / "20240515_063003.wav"
    os.utime(song, ns=(time.time_ns(), time.time_ns()))
    touched = analyse_project([archive], project, BIRDNET, engine="inline")
    assert (touched.done, touched.skipped_done) == (1, 9)
    # a failed file that was replaced (new size/mtime) is analysed again; unchanged failures only on request
    shutil.copyfile(song, archive / "broken" / "truncated.wav")
    repaired = analyse_project([archive], project, BIRDNET, engine="inline")
    assert (repaired.done, repaired.failed, repaired.skipped_failed) == (1, 0, 2)
    retried = analyse_project([archive], project, BIRDNET, engine="inline", retry_failed=True)
    assert (retried.done, retried.failed, retried.skipped_done) == (0, 2, 11)
    with ProjectStore(project, read_only=True) as store:
        run = store.default_run()
        assert store.summary(run)["files_done"] == 11
        assert sorted(Path(p).name for p in store.failures(run).path) == ["empty.wav", "not_audio.flac"]
        assert store.failures(run).attempts.tolist() == [2, 2]
        assert store.con.execute("select count(*) from windows where run_id = ?", [run]).fetchone()[0] == \
            store.con.execute("select sum(n_windows) from file_runs where run_id = ?", [run]).fetchone()[0]
    # another hop is another run: rows are not mixed
    hop = analyse_project([archive], project, RunSettings("birdnet_v2_4", hop_s=1.5, embeddings=False), engine="inline")
    assert hop.run_id != first.run_id and hop.done == 11
    with ProjectStore(project, read_only=True) as store:
        runs = store.runs().set_index("run_id")
        assert runs.loc[hop.run_id, "hop_s"] == 1.5 and runs.loc[first.run_id, "files_done"] == 11
        starts = dict(store.con.execute("select run_id, list(distinct start_s order by start_s) from windows group by 1").fetchall())
        # windows every 1.5 s in the hop run, every 3 s in the first (the short songs may hold one window only)
        assert all(s % 1.5 == 0 for s in starts[hop.run_id]) and all(s % 3.0 == 0 for s in starts[first.run_id])
        windows = dict(store.con.execute("select run_id, count(*) from windows group by 1").fetchall())
        assert windows[hop.run_id] >= windows[first.run_id]
        assert store.embeddings(hop.run_id)[1].shape[0] == 0


def test_errors_are_clear(tmp_path, archive):
    with pytest.raises(Exception, match="no_such_model"):
        analyse_project([archive], tmp_path / "p", RunSettings("no_such_model"), engine="inline")
    with pytest.raises(ConfigError, match="--hop must be a positive"):
        RunSettings("birdnet_v2_4", hop_s=0)
    with pytest.raises(ConfigError, match="is not a project"):
        ProjectStore(tmp_path / "nothing", read_only=True)


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_exports_are_complete_filtered_and_byte_identical(analysed, tmp_path):
    project, _ = analysed
    oxford = DetectionFilter(lat=51.75, lon=-1.26, week=15, language="de", merge_consecutive=None)
    first = export_project(project, tmp_path / "a", flt=oxford)
    export_project(project, tmp_path / "b", flt=oxford)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert set(first) == {"csv", "raven", "audacity", "kaleidoscope", "parquet", "summaries"}
    csv = pd.read_csv(tmp_path / "a" / "detections.csv")
    assert {"file", "start_s", "end_s", "rank", "scientific_name", "common_name", "score", "model", "min_conf",
            "sensitivity", "lat", "lon", "week", "language", "merge_consecutive"} <= set(csv.columns)
    assert (csv.score >= 0.25).all() and (csv.language == "de").all() and (csv.lat == 51.75).all()
    assert "Kohlmeise" in set(csv.common_name)
    # one Raven table per analysed file (also those without detections) and one combined table
    raven = sorted(p.name for p in first["raven"])
    assert len(raven) == GOOD_FILES + 1 and "combined.selection.table.txt" in raven
    combined = pd.read_csv(tmp_path / "a" / "raven" / "combined.selection.table.txt", sep="\t")
    assert {"Begin File", "Begin Path", "File Offset (s)", "Species Code"} <= set(combined.columns)
    assert len(combined) == len(csv) and (combined["Begin Time (s)"].diff().dropna() >= -1e-9).all()
    assert "gretit1" in set(combined["Species Code"])
    per_file = pd.read_csv(tmp_path / "a" / "raven" / "season2024" / "siteA" / "20240515_063000.selection.table.txt", sep="\t")
    assert per_file["Scientific Name"].tolist()[0] == "Parus major" and per_file["Begin Time (s)"].tolist()[0] == 0.0
    # inland Oxford in April does not expect storm petrels: their files keep an empty table (header only)
    petrel = (tmp_path / "a" / "raven" / "season2024" / "siteB" / "petrel_48k.selection.table.txt").read_text()
    assert petrel.count("\n") == 1 and petrel.startswith("Selection\t")
    assert (tmp_path / "a" / "kaleidoscope.csv").read_text().startswith(KALEIDOSCOPE_HEADER)
    audacity = (tmp_path / "a" / "audacity" / "season2024" / "siteA" / "20240515_063000.labels.txt").read_text()
    assert audacity.startswith("0.000\t") and "Parus major, Kohlmeise" in audacity
    parquet = pd.read_parquet(tmp_path / "a" / "detections.parquet")
    assert len(parquet) == len(csv) and parquet.score.dtype == np.float64
    day = pd.read_csv(tmp_path / "a" / "summaries" / "per_species_day.csv")
    tits = day[day.scientific_name == "Parus major"].set_index("date")
    assert tits.loc["2024-05-15", "files"] == 10 and tits.loc["2024-05-16", "files"] >= 9
    folders = pd.read_csv(tmp_path / "a" / "summaries" / "per_folder.csv")
    assert set(folders.folder) == {"season2024/siteA", "season2024/siteB"}
    hours = pd.read_csv(tmp_path / "a" / "summaries" / "per_species_hour.csv")
    assert set(hours.hour.astype(str)) == {"6", "7"}  # the 8 and 9 o'clock files are storm petrels, filtered out


def test_export_selection_and_location_filter_removes(analysed, tmp_path):
    project, _ = analysed
    ithaca = DetectionFilter(lat=42.44, lon=-76.50, week=19)
    written = export_project(project, tmp_path / "x", formats=["csv"], flt=ithaca, folders=["season2024/siteA"])
    csv = pd.read_csv(written["csv"][0])
    assert "Parus major" not in set(csv.scientific_name) and set(csv.folder) <= {"season2024/siteA"}
    with ProjectStore(project, read_only=True) as store:
        removed = ithaca.removed_by_location(store.window_scores(store.default_run(), 0.25))
    assert "Parus major" in set(removed.scientific_name)


def test_raw_threshold_inverts_sensitivity():
    assert raw_threshold(DetectionFilter(min_conf=0.25)) == pytest.approx(0.25)
    flt = DetectionFilter(min_conf=0.25, sensitivity=1.5)
    assert flt.adjust_scores(np.array([raw_threshold(flt)]))[0] == pytest.approx(0.25)


# --- the CLI, interrupted and killed ----------------------------------------------------------------------
class _Cli:
    """`python -m rl_core ARGS` in a subprocess; its stderr is collected by a thread so it can be watched."""

    def __init__(self, *args: str, python_code: str | None = None) -> None:
        import threading

        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        command = [sys.executable, "-c", python_code, *args] if python_code else [sys.executable, "-m", "rl_core", *args]
        # a session of its own: nothing the analysis or its engine signals to its process group reaches pytest
        self.proc = subprocess.Popen(command, cwd=REPO, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for chunk in iter(lambda: os.read(self.proc.stderr.fileno(), 4096), b""):
            self.chunks.append(chunk)

    @property
    def err(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")

    def wait(self, timeout: float = 600) -> tuple[int, str]:
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return self.proc.returncode, self.err

    def wait_for_files(self, count: int, timeout: float = 300) -> None:
        """Watch the progress bar until ``count`` files are finished (they are committed before the bar moves)."""
        import re

        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            done = [int(m) for m in re.findall(r"\| (\d+)/\d+ files", self.err)]
            if done and max(done) >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"the analysis did not reach {count} files:\n{self.err[-2000:]}")


@pytest.mark.slow
def test_cli_ctrl_c_then_sigkill_then_resume_equals_uninterrupted_run(archive, tmp_path):
    args = ["analyse", str(archive), "--workers", "1", "--commit-every", "1"]
    code, err = _Cli(*args, "--project", str(tmp_path / "reference")).wait()
    assert code == 1, err  # three broken files
    assert f"{GOOD_FILES} file(s) analysed" in err and f"{BROKEN_FILES} failed" in err

    project = tmp_path / "interrupted"
    first = _Cli(*args, "--project", str(project))
    first.wait_for_files(5)
    first.proc.send_signal(signal.SIGINT)
    code, err = first.wait(120)
    assert code == 130, err
    assert "Interrupted: finished files are kept" in err
    with ProjectStore(project, read_only=True) as store:
        kept = store.summary(store.default_run())["files_done"] + store.summary(store.default_run())["files_failed"]
    assert 5 <= kept < GOOD_FILES + BROKEN_FILES

    second = _Cli(*args, "--project", str(project))
    second.wait_for_files(6)
    import psutil

    workers = psutil.Process(second.proc.pid).children()
    assert workers, "the analysis runs in worker processes"
    second.proc.kill()  # SIGKILL: no clean-up at all
    second.wait(60)
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, "worker processes outlived their killed driver"
    with ProjectStore(project) as store:  # opening for writing removes parts of uncommitted work
        done = store.summary(store.default_run())["files_done"]
    assert kept < done + BROKEN_FILES

    code, err = _Cli(*args, "--project", str(project)).wait()
    assert code == 1 and "already done (skipped)" in err, err
    assert_same_store(tmp_path / "reference", project)

    code, err = _Cli("export", str(project), "--out", str(tmp_path / "out"), "--format", "raven", "csv",
                     "--locale", "fr", "--min-conf", "0.5").wait(300)
    assert code == 0, err
    assert "Mésange charbonnière" in (tmp_path / "out" / "detections.csv").read_text(encoding="utf-8")
    code, err = _Cli("export", str(project), "--out", str(tmp_path / "o2"), "--sensitivity", "3").wait(120)
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: sensitivity must be in [0.5, 1.5]")


def test_ctrl_c_during_a_commit_interrupts_after_it(archive, tmp_path, monkeypatch):
    """DuckDB turns a SIGINT that arrives during a query into its own error ("Query interrupted"): a Ctrl-C that
    landed in a commit ended the run as a failure (exit 2) with the batch rolled back, instead of exit 130."""
    import signal

    import threading

    commit = ProjectStore.commit
    hits = []

    def commit_hit_by_ctrl_c(self, run_id, outcomes):
        if not hits:  # the first commit: a user's Ctrl-C arrives while DuckDB is running a query (~1 s)
            hits.append(threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)))
            hits[0].start()
            self.con.execute("select sum(i) from range(1500000000) t(i)").fetchone()
        return commit(self, run_id, outcomes)

    monkeypatch.setattr(ProjectStore, "commit", commit_hit_by_ctrl_c)
    summary = analyse_project([archive / "siteA"], tmp_path / "p", BIRDNET, engine="inline", commit_every_files=1)
    assert summary.interrupted and summary.exit_code == 130
    with ProjectStore(tmp_path / "p", read_only=True) as store:  # the batch in flight was committed, not lost
        assert store.summary(store.default_run())["files_done"] == summary.done >= 1


def test_birdnet_workers_run_without_torch_and_store_what_the_app_stores(archive, analysed, tmp_path):
    """A BirdNET worker process analyses with rl_core.birdnet_litert and never imports torch (half its memory;
    bench/RESULTS.md): its store equals the inline engine's, which runs the app's torch BirdNET model."""
    project = tmp_path / "local"
    summary = analyse_project([archive], project, BIRDNET, engine="local", workers=1)
    assert (summary.done, summary.failed) == (GOOD_FILES, BROKEN_FILES)
    assert_same_store(analysed[0], project)
    recording = archive / "siteB" / "20240516_080000.flac"
    probe = (
        "import json, sys\n"
        "from rl_core.project.engines import _worker_model, analyse_file, init_worker\n"
        "from rl_core.project.store import FileTask, RunSettings, file_id_of\n"
        "init_worker()\n"
        f"path = {str(recording)!r}\n"
        "outcome = analyse_file(FileTask(file_id_of(path), path, '/', path, '', 1, 1), RunSettings('birdnet_v2_4'))\n"
        "print(json.dumps([outcome.ok, len(outcome.starts) if outcome.ok else outcome.reason, 'torch' in sys.modules,\n"
        "                  type(_worker_model(RunSettings('birdnet_v2_4'))).__name__]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    ok, windows, torch_loaded, model = json.loads(out.stdout.strip().splitlines()[-1])
    assert ok and windows > 0 and model == "BirdNETLiteRT"
    assert not torch_loaded, "a BirdNET worker imported torch"


@pytest.mark.slow
def test_ray_engine_store_equals_local_engine(archive, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -r requirements-ray.txt")
    local = analyse_project([archive], tmp_path / "local", BIRDNET, engine="local", workers=2)
    assert (local.done, local.failed) == (GOOD_FILES, BROKEN_FILES)
    started = time.perf_counter()
    # Ray runs in the CLI's own process (as users start it): a local instance on 127.0.0.1
    args = ["analyse", str(archive), "--project", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2", "--quiet"]
    code, err = _Cli(*args).wait(600)
    assert code == 1 and f"{GOOD_FILES} file(s) analysed" in err and f"{BROKEN_FILES} failed" in err, err
    assert_same_store(tmp_path / "local", tmp_path / "ray")
    code, err = _Cli(*args).wait(600)  # resumed: nothing left to do but the known failures
    assert code == 1 and "0 file(s) analysed" in err, err
    assert time.perf_counter() - started < 600


#: two projects analysed by one driver on one Ray instance, whose workers (and their loaded model) serve both runs
TWO_RAY_RUNS = """
import sys
from rl_core.project import ProjectStore, RunSettings, analyse_project
from rl_core.project.engines import RayEngine
engine = RayEngine(workers=2)
for project in sys.argv[2:]:
    analyse_project([sys.argv[1]], project, RunSettings("birdnet_v2_4"), engine=engine)
    with ProjectStore(project, read_only=True) as store:
        names = store.con.execute("select count(*) from classes").fetchone()[0]
    sys.stderr.write(f"classes: {names}\\n")
engine.shutdown()
"""


@pytest.mark.slow
def test_ray_workers_send_the_class_names_to_every_run(archive, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -r requirements-ray.txt")
    site = archive / "siteA"
    code, err = _Cli(str(site), str(tmp_path / "first"), str(tmp_path / "second"), python_code=TWO_RAY_RUNS).wait(600)
    assert code == 0, err
    assert [line for line in err.splitlines() if line.startswith("classes:")] == ["classes: 6522"] * 2, err
