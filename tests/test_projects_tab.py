"""The Projects tab through gradio_client: a server folder analysed in the background, browsed, exported."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from app_runner import RunningApp
from archive_fixture import make_archive
from gradio_client import Client

PROJECT_ENDPOINTS = {"/project_start", "/project_stop", "/project_status", "/project_info", "/project_browse",
                     "/project_export"}
FILTERS_DEFAULT = dict(folders=[], min_conf=0.25, sensitivity=1.0, lat="", lon="", week="", threshold=0.03,
                       species_file=None, language="en", merge=False)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_archive(root / "season2024")
    (root / "escape").symlink_to("/etc")
    return root


@pytest.fixture(scope="module")
def app(data_root, tmp_path_factory):
    with RunningApp("--no-warmup", "--data-root", str(data_root), "--projects-dir",
                    str(tmp_path_factory.mktemp("projects")), "--project-workers", "1",
                    log_path=tmp_path_factory.mktemp("app") / "app.log") as running:
        yield running


def _filters(**changes):
    values = {**FILTERS_DEFAULT, **changes}
    return [values[k] for k in FILTERS_DEFAULT]


def _wait_done(client: Client, name: str, timeout: float = 400) -> str:
    deadline = time.time() + timeout
    html = ""
    while time.time() < deadline:
        html = client.predict(name, api_name="/project_status")
        if 'data-state="done"' in html or 'data-state="failed"' in html:
            return html
        time.sleep(1)
    raise AssertionError(f"the analysis did not finish: {html}")


@pytest.mark.slow
def test_projects_tab_analyses_browses_and_exports(app):
    client = Client(app.url, verbose=False)
    api = client.view_api(return_format="dict", print_info=False)
    assert PROJECT_ENDPOINTS <= set(api["named_endpoints"])
    for bad in ("../", "escape", "/etc", "season2024/../.."):
        with pytest.raises(Exception, match="outside the data root"):
            client.predict("refused", bad, None, "birdnet_v2_4", "", 1, api_name="/project_start")
    message, _ = client.predict("siteA", "season2024/siteA", None, "birdnet_v2_4", "", 1, api_name="/project_start")
    assert "started" in message
    # another browser session (a reopened page) sees the same server-side job
    other = Client(app.url, verbose=False)
    first = other.predict("siteA", api_name="/project_status")
    assert 'data-state="running"' in first or 'data-state="done"' in first
    html = _wait_done(other, "siteA")
    assert 'data-state="done"' in html and "10 file(s) analysed" in html
    message, table, heatmap, hours, removed = client.predict(
        "siteA", *_filters(lat=51.75, lon=-1.26, week=15, language="de", merge=True), api_name="/project_browse")
    rows = pd.DataFrame(table["data"], columns=table["headers"])
    assert "Kohlmeise" in set(rows.common_name) and (rows.score >= 0.25).all()
    assert heatmap["type"] == "plotly" and "2024-05-15" in heatmap["plot"] and "Kohlmeise" in heatmap["plot"]
    assert hours["type"] == "plotly" and "Kohlmeise" in hours["plot"]
    _, table, _, _, removed = client.predict("siteA", *_filters(lat=42.44, lon=-76.50, week=19),
                                             api_name="/project_browse")
    assert "Parus major" not in {r[3] for r in table["data"]}
    assert "Parus major" in {r[0] for r in removed["data"]}
    downloads = client.predict("siteA", ["Raven", "CSV", "Summaries"], *_filters(), api_name="/project_export")
    names = {Path(d).name for d in downloads}
    assert names == {"combined.selection.table.txt", "siteA_raven_tables.zip", "detections.csv", "siteA_summaries.zip"}
    raven = pd.read_csv(next(d for d in downloads if d.endswith("combined.selection.table.txt")), sep="\t")
    assert {"Begin File", "File Offset (s)"} <= set(raven.columns) and "Parus major" in set(raven["Scientific Name"])
    # a second start is a resume: nothing left to do
    client.predict("siteA", "season2024/siteA", None, "birdnet_v2_4", "", 1, api_name="/project_start")
    assert "10 already done" in _wait_done(client, "siteA")


@pytest.mark.slow
def test_projects_tab_without_data_root_explains_how(tmp_path):
    running = RunningApp("--no-warmup", "--projects-dir", str(tmp_path / "projects"), log_path=tmp_path / "app.log")
    try:
        running.wait_ready()
        client = Client(running.url, verbose=False)
        with pytest.raises(Exception, match="start the app with --data-root"):
            client.predict("x", "anything", None, "birdnet_v2_4", "", 1, api_name="/project_start")
        with pytest.raises(Exception, match="upload recordings"):
            client.predict("x", "", None, "birdnet_v2_4", "", 1, api_name="/project_start")
    finally:
        running.stop()


def test_uploads_and_zips_land_in_the_project_with_their_folders(tmp_path, great_tits):
    import zipfile

    from ui import projects
    from ui.common import UserFacingError

    projects.configure(projects_dir=tmp_path / "projects")
    archive = tmp_path / "cards.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(great_tits[0].path, "siteA/20240515_063000.wav")
        z.write(great_tits[1].path, "siteB/20240516_063000.wav")
        z.writestr("siteB/notes.txt", "not audio")
    target = projects._store_uploads(projects.project_dir("cards"), [str(archive), str(great_tits[2].path)])
    found = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert found == sorted(["siteA/20240515_063000.wav", "siteB/20240516_063000.wav", great_tits[2].path.name])
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../escape.wav", b"RIFF")
    with pytest.raises(UserFacingError, match="contains '..'"):
        projects._store_uploads(projects.project_dir("cards"), [str(evil)])
    with pytest.raises(UserFacingError, match="project name"):
        projects.project_dir("../x")
    with pytest.raises(UserFacingError, match="server folders are off"):
        projects.resolve_data_folder("anything")
