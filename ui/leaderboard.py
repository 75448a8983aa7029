"""Leaderboard tab: one comparable table per benchmark, metric, probe and study (models x datasets, mean, mean
rank, size), plots, compact sources, the raw rows as a second view, and a results-CSV upload.

Built from ``gr.Dataframe`` (pinned model column, search) plus plotly, not ``gradio-leaderboard``: its last
release (0.0.14) requires gradio<6 and its front end does not render on Gradio 6. The tables and ranks are
computed by :mod:`rl_core.leaderboard_tables`; this module only lays them out.
"""

from __future__ import annotations

import hashlib
import html
import logging
import tempfile
import threading
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from rl_core import leaderboard as lb
from rl_core import leaderboard_tables as lt
from rl_core.atomic import write_text_atomic
from rl_core.errors import RLCoreError
from rl_core.leaderboard import LOADED_COLUMNS, SubmissionError, load_leaderboard, submit_results
from ui.common import describe_error
from ui.leaderboard_figures import bar_figure, empty_figure, family_colors, heatmap_figure, scatter_figure

log = logging.getLogger(__name__)

FILTERS = ["benchmark", "dataset", "task", "metric", "probe", "family", "kind"]
# the number comes early so that it is in view at 1440 px; the long texts come last
RAW_COLUMNS = ["model", "dataset", "metric", "value", "probe", "benchmark", "kind", "family", "name_in_source",
               "source_row", "study"]
NUMERIC = {"value", "parameters", "source_row", "embedding_dim", "seed", "wall_time_s"}
#: downloads are written on demand, named by their content, and reused (at most this many kept)
DOWNLOAD_DIR = Path(tempfile.gettempdir()) / "rl_leaderboard_downloads"
MAX_DOWNLOADS = 50
BEST_STYLE = "font-weight: 700; background-color: #d1fae5"
ZOO_LINK_STYLE = "color: #047857; text-decoration: underline; cursor: pointer"
#: Gradio 6's table sorts from the ⋮ menu of a header only; this makes a click on a header's name sort by that
#: column too (best first: descending, or ascending for ranks; a second click reverses), using the table's own
#: numeric sort. A click on a zoo entry opens the Model zoo tab searched for it.
HEADER_CLICK_SORTS = """
() => {
  if (window.__lbHeaderSort) return;
  window.__lbHeaderSort = true;
  document.addEventListener('click', (event) => {
    const cell = event.target.closest('#lb-t-table [role=gridcell]');
    if (cell) {  // a zoo entry opens the Model zoo tab filtered to that model
      const th = document.querySelector(`#lb-t-table th[data-heading="${cell.getAttribute('data-col')}"]`);
      const key = cell.innerText.trim();
      if (!th || th.getAttribute('title') !== 'Zoo entry' || !key) return;
      const tab = [...document.querySelectorAll('button[role=tab]')].find((b) => b.textContent.trim() === 'Model zoo');
      if (tab) tab.click();
      let waited = 0;
      const fill = () => {
        const box = document.querySelector('#zoo-search textarea, #zoo-search input');
        if (box) { box.value = key; box.dispatchEvent(new Event('input', {bubbles: true})); }
        else if (waited++ < 40) setTimeout(fill, 50);
      };
      fill();
      return;
    }
    const content = event.target.closest('.lb-sortable th .header-content');
    if (!content) return;
    const th = content.closest('th');
    const menu = th.querySelector('button.cell-menu-button');
    if (!menu) return;
    const rankLike = /rank/i.test(th.getAttribute('title') || '');
    const first = rankLike ? 'ascending' : 'descending';
    const other = rankLike ? 'descending' : 'ascending';
    const next = th.dataset.lbSort === first ? other : first;
    th.dataset.lbSort = next;
    event.stopPropagation();  // the header's own click handler would only select it (and close the menu)
    menu.click();
    let tries = 0;
    const pick = () => {
      const item = [...document.querySelectorAll('[role=menu] [role=menuitem]')]
        .find((el) => el.textContent.trim().toLowerCase() === 'sort ' + next);
      if (item) item.click();
      else if (tries++ < 20) setTimeout(pick, 25);
    };
    setTimeout(pick, 0);
  }, true);
}
"""

INTRO = (
    "Each table compares models on one benchmark with **one metric and one probe from one study** (a "
    "publication, rl_core's own benchmark runner, or an uploaded file): only numbers measured the same way share "
    "a table. **Mean** is over the datasets a model has (how many of how many beside it); **Mean rank** averages "
    "the model's rank on each dataset, so no dataset dominates by its scale. The best value of each column is "
    "shaded. Click a column header to sort by it (numbers sort as numbers)."
)
HOW_TO_ADD = """
**How results get here.** *Published numbers*: rows of `shared/leaderboard_sources/published_results.csv`, turned
into `leaderboard_data/published_results.csv` by `python -m leaderboard_data.build_published`. *Local numbers*:
`python -m rl_core benchmark` (or `evaluate --config ...`) appends to `leaderboard_data/local_results.csv` with
provenance; they appear with the next change of table. *Your numbers*: upload a results CSV below; required columns
`model, benchmark, dataset, metric, probe, value, source`, optional any other column of
`leaderboard_data/schema.json`; values on a 0-1 scale. Every row is checked; a file with a bad row is refused
whole, with one message per bad row. Accepted files are stored as new files and marked *submitted*.
"""


# --------------------------------------------------------------------------- pure helpers (tested directly)
def empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if c in NUMERIC else "object") for c in LOADED_COLUMNS})


def load_data(data_dir: str | Path | None = None) -> tuple[pd.DataFrame, str]:
    """All leaderboard rows and a message ('' when all went well)."""
    try:
        return load_leaderboard(data_dir).reset_index(drop=True), ""
    except Exception as exc:  # noqa: BLE001 - shown to the user, the app keeps running
        return empty_frame(), "Could not load the leaderboard data: " + describe_error(exc)


def choices(df: pd.DataFrame, column: str) -> list[str]:
    return sorted({str(v) for v in df[column].dropna().unique() if str(v)})


def filter_rows(df: pd.DataFrame, benchmark=None, dataset=None, task=None, metric=None, probe=None, family=None,
                kind=None, search: str = "") -> pd.DataFrame:
    """Rows matching every non-empty filter (an empty selection means 'all') and the free-text search."""
    mask = pd.Series(True, index=df.index)
    selected = dict(benchmark=benchmark, dataset=dataset, task=task, metric=metric, probe=probe, family=family,
                    kind=kind)
    for column, values in selected.items():
        if values:
            values = [values] if isinstance(values, str) else list(values)
            mask &= df[column].astype(str).isin(values)
    needle = (search or "").strip().lower()
    if needle:
        cols = ["model", "name_in_source", "family", "dataset", "task", "benchmark", "source", "notes"]
        text = df[cols].astype(str).agg(" ".join, axis=1)
        mask &= text.str.lower().str.contains(needle, regex=False)
    return df[mask]


def raw_view(rows: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """The raw table: chosen columns, best value first; numbers stay numeric so sorting is numeric."""
    chosen = [c for c in (columns or RAW_COLUMNS) if c in LOADED_COLUMNS] or RAW_COLUMNS
    columns = [c for c in RAW_COLUMNS if c in chosen] + [c for c in chosen if c not in RAW_COLUMNS]
    view = rows.sort_values("value", ascending=False, kind="stable")[columns].copy()
    if "value" in view:
        view["value"] = view["value"].round(4)
    if "parameters" in view:
        view["parameters"] = (view["parameters"] / 1e6).round(2)
        view = view.rename(columns={"parameters": "parameters (M)"})
    return view.reset_index(drop=True)


def column_types(view: pd.DataFrame) -> list[str]:
    """Per-column datatypes for gr.Dataframe, so the browser sorts numbers as numbers."""
    return ["number" if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype) else "str"
            for dtype in view.dtypes]


def styled(table: lt.BenchmarkTable):
    """The scores with the best value of each column shaded (the numbers stay numbers)."""
    best = table.best()
    scores = table.scores

    def mark(column: pd.Series) -> list[str]:
        if column.name == "Zoo entry":
            return [ZOO_LINK_STYLE if key else "" for key in column]
        if column.name not in best:
            return [""] * len(column)
        ranked = scores["Mean rank"].notna()
        return [BEST_STYLE if ok and abs(v - best[column.name]) < 1e-12 else ""
                for v, ok in zip(column.fillna(float("nan")), ranked)]

    formats = {c: "{:.3f}" for c in [*table.datasets, "Mean"]}
    formats.update({"Mean rank": "{:.2f}", "Params (M)": "{:.1f}", "Emb. dim": "{:.0f}"})
    return scores.style.apply(mark, axis=0).format(formats, na_rep="")


def column_widths(table: lt.BenchmarkTable) -> list[str]:
    widths = {"Model": 220, "Mean rank": 100, "Mean": 80, "Params (M)": 112, "Emb. dim": 96,
              "Family": 124, "Runs here": 104, "Zoo entry": 250}
    return [f"{widths.get(c, max(84, 9 * len(c) + 40) if c in table.datasets else 150)}px"
            for c in table.scores.columns]


def table_caption(table: lt.BenchmarkTable) -> str:
    n_models = len(table.scores)
    ranked = int(table.scores["Mean rank"].notna().sum())
    lines = [f"### {table.title}",
             f"{n_models} models x {len(table.datasets)} datasets · metric **{table.metric}** · "
             f"probe **{table.probe}** · {ranked} ranked"]
    if ranked < n_models:
        lines.append("Models with random weights are baselines: shown, never ranked.")
    if table.averaged_cells:
        how = "seeds of one run" if set(table.rows["kind"]) == {"local"} else "seeds or repeated uploads"
        lines.append(f"{table.averaged_cells} cells are the mean of several numbers ({how}).")
    kinds = sorted(set(table.rows["kind"]))
    lines.append("Results: " + ", ".join(kinds) + ".")
    return "  \n".join(lines)


def sources_markdown(rows: pd.DataFrame, limit: int = 30) -> str:
    """One line per source: citation, what it contributed, link; the tables and notes expand on demand."""
    if rows.empty:
        return "No rows match."
    lines = ["#### Sources"]
    studies = rows.groupby("study", sort=True)
    for study, group in list(studies)[:limit]:
        kind = "/".join(sorted(set(group["kind"])))
        links = group["source_link"][group["source_link"] != ""]
        link = f" · [link]({links.value_counts().index[0]})" if len(links) else ""
        where = sorted({s.split("; ", 1)[1] for s in group["source"] if "; " in s})
        details = [f"<li>{html.escape(w)}</li>" for w in where[:40]]
        if len(where) > 40:
            details.append(f"<li>... and {len(where) - 40} more</li>")
        notes = sorted({n for n in group["notes"] if n})
        details += [f"<li>{html.escape(n)}</li>" for n in notes[:20]]
        summary = f"{len(where)} source table{'s' if len(where) != 1 else ''} and notes" if where else "notes"
        expand = (f" <details><summary>{summary}</summary><ul>{''.join(details)}</ul></details>"
                  if details else "")
        lines.append(f"- **{html.escape(str(study))}** · {kind} · {len(group)} numbers{link}{expand}")
    if studies.ngroups > limit:
        lines.append(f"- ... and {studies.ngroups - limit} more sources")
    return "\n".join(lines)


def provenance_markdown(table: lt.BenchmarkTable) -> str:
    """Where each model's numbers come from: model checksum, commit, hardware and date for local runs."""
    lines = []
    for name, group in table.rows.groupby("row_name", sort=True):
        first = group.iloc[0]
        if first["kind"] == "local":
            sha = sorted({s for s in group["checkpoint_sha256"] if s})
            commit = sorted({c[:12] for c in group["git_commit"] if c})
            seeds = sorted({int(s) for s in group["seed"] if s >= 0})
            lines.append(
                f"- **{name}** · model sha256 {', '.join(f'`{s[:16]}…`' for s in sha) or 'none (random weights)'}"
                f" · commit {', '.join(f'`{c}`' for c in commit) or 'unknown'}"
                f" · {first['hardware'] or 'hardware unknown'}"
                f" · {', '.join(sorted(set(group['date'])))} · rl_core {first['rl_core_version'] or '?'}"
                f" · protocol {first['protocol']} · seeds {seeds}")
        else:
            rows = sorted(int(r) for r in group["source_row"])
            spelled = sorted(set(group["name_in_source"]) - {name})
            as_named = f" (named {', '.join(repr(s) for s in spelled)} in the source)" if spelled else ""
            lines.append(f"- **{name}**{as_named} · {first['kind']} · data rows {rows[0]}-{rows[-1]} of the "
                         f"{'source' if first['kind'] == 'published' else 'uploaded'} CSV · {first['date']}")
    return "\n".join(lines)


def download_csv(rows: pd.DataFrame) -> str:
    """Write ``rows`` as CSV named by its content; the same rows reuse the same file (no growth)."""
    text = rows.to_csv(index=False)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = DOWNLOAD_DIR / f"leaderboard-{digest}.csv"
    if not path.is_file():
        DOWNLOAD_DIR.mkdir(parents=True, exist_ok=True)
        for old in sorted(DOWNLOAD_DIR.glob("*.csv"), key=lambda p: p.stat().st_mtime)[:-MAX_DOWNLOADS + 1]:
            old.unlink(missing_ok=True)
        write_text_atomic(text, path)
    return str(path)


# --------------------------------------------------------------------------- the shared state and events
class Leaderboard:
    """Holds the loaded rows (read-only, shared by all sessions) and answers the tab's events."""

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.data_dir = data_dir
        self._lock = threading.Lock()
        self.reload()

    def _files_signature(self) -> tuple:
        folder = lb.data_dir(self.data_dir)
        paths = [folder / lb.PUBLISHED_FILE, folder / lb.LOCAL_FILE, folder / lb.ALIASES_FILE,
                 *sorted((folder / lb.SUBMITTED_DIR).glob("*.csv"))]
        return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths if p.is_file())

    def reload(self) -> None:
        signature = self._files_signature()
        df, message = load_data(self.data_dir)
        with self._lock:
            self.df, self.message, self.signature = df, message, signature
            self.keys = lt.table_keys(df) if not df.empty else pd.DataFrame(columns=[*lt.KEY, "models"])
            self.colors = family_colors(list(df["family"].astype(str)))

    def refresh(self) -> None:
        """Reload when a results file changed (a benchmark run or an upload elsewhere): new rows appear at once."""
        if self._files_signature() != self.signature:
            self.reload()

    # ---- benchmark tables
    def table(self, benchmark: str | None = None, metric: str | None = None, probe: str | None = None,
              study: str | None = None, strict: bool = False) -> tuple[lt.BenchmarkTable, dict, dict]:
        key = lt.choose_key(self.keys, benchmark, metric, probe, study, strict=strict)
        return lt.benchmark_table(self.df, **key), key, lt.options(self.keys, key)

    def tables_event(self, benchmark, metric, probe, study, plot_what="Mean"):
        """Everything the benchmark view shows, for the chosen (or nearest valid) key."""
        self.refresh()
        try:
            table, key, opts = self.table(benchmark, metric, probe, study)
        except RLCoreError as exc:
            empty = empty_figure(describe_error(exc))
            return (*(gr.Dropdown() for _ in lt.KEY), describe_error(exc), None, empty, empty, empty, "", "")
        dropdowns = [gr.Dropdown(choices=opts[level], value=key[level]) for level in lt.KEY]
        return (
            *dropdowns,
            table_caption(table),
            gr.Dataframe(value=styled(table), datatype=column_types(table.scores), column_widths=column_widths(table)),
            bar_figure(table, self.colors, plot_what),
            scatter_figure(table, self.colors),
            heatmap_figure(table),
            sources_markdown(table.rows),
            provenance_markdown(table),
        )

    def api(self, benchmark: str = "BEANS", metric: str = "", probe: str = "", study: str = "") -> dict[str, Any]:
        """The /leaderboard API: one benchmark table as JSON. Empty arguments take the default choice."""
        self.refresh()
        try:
            table, key, opts = self.table(benchmark or None, metric or None, probe or None, study or None,
                                          strict=True)
        except RLCoreError as exc:
            raise gr.Error(describe_error(exc)) from None
        scores = table.scores.astype(object).where(table.scores.notna(), None)
        return {**key, "title": table.title, "datasets": table.datasets, "headers": list(scores.columns),
                "data": scores.values.tolist(), "best": table.best(), "choices": opts}

    # ---- raw rows
    def raw_event(self, benchmark, dataset, task, metric, probe, family, kind, search, columns):
        self.refresh()
        rows = filter_rows(self.df, benchmark, dataset, task, metric, probe, family, kind, search)
        view = raw_view(rows, columns)
        count = f"**{len(rows)}** of {len(self.df)} results · {rows['model'].nunique()} models"
        return gr.Dataframe(value=view, datatype=column_types(view)), count, sources_markdown(rows)

    def filter_choices_event(self) -> tuple[gr.Dropdown, ...]:
        """The raw view's filter choices from the rows loaded now (an upload adds models, datasets, ...)."""
        self.refresh()
        return tuple(gr.Dropdown(choices=choices(self.df, name)) for name in FILTERS)

    def download_event(self, benchmark, dataset, task, metric, probe, family, kind, search) -> gr.DownloadButton:
        rows = filter_rows(self.df, benchmark, dataset, task, metric, probe, family, kind, search)
        return gr.DownloadButton(f"Download {len(rows)} rows (CSV)", value=download_csv(rows), visible=True)

    # ---- uploads
    def submit(self, file: str | None) -> tuple[str, gr.Dropdown, gr.Dropdown, gr.Dropdown, gr.Dropdown]:
        """Validate and store an uploaded results CSV; returns a message and the key of its table."""
        if not file:
            return ("Choose a results CSV first.", *(gr.Dropdown() for _ in lt.KEY))
        name = Path(file).name
        try:
            _, rows = submit_results(Path(file).read_bytes(), name, self.data_dir)
        except SubmissionError as exc:
            problems = str(exc).splitlines()
            text = "**Refused, nothing stored.** " + problems[0] + "\n" + "\n".join(f"- {p}" for p in problems[1:])
            return (text, *(gr.Dropdown() for _ in lt.KEY))
        except (OSError, RLCoreError) as exc:
            return ("**Refused:** " + describe_error(exc), *(gr.Dropdown() for _ in lt.KEY))
        self.reload()
        first = rows.iloc[0]
        key = lt.choose_key(self.keys, first["benchmark"], first["metric"], first["probe"],
                            f"submitted: {first['source']}")
        opts = lt.options(self.keys, key)
        message = (f"**Stored {len(rows)} rows** from {name}, marked *submitted* (see the table "
                   f"{key['benchmark']} · {key['metric']} · {key['probe']}).")
        return (message, *(gr.Dropdown(choices=opts[level], value=key[level]) for level in lt.KEY))


def build(demo: gr.Blocks, data_dir: str | Path | None = None) -> Leaderboard:
    """The leaderboard tab (call inside ``demo``'s context); tables fill when the page loads."""
    board = Leaderboard(data_dir)
    df = board.df
    if board.message:
        gr.Markdown(f"⚠️ {board.message}", elem_id="leaderboard-message")
    order = dict(concurrency_id="leaderboard", concurrency_limit=1)
    with gr.Tabs():
        with gr.Tab("Benchmark tables", id="lb-tables-tab"):
            gr.Markdown(INTRO)
            with gr.Row():
                benchmark = gr.Dropdown(label="Benchmark", elem_id="lb-t-benchmark", scale=2)
                metric = gr.Dropdown(label="Metric", elem_id="lb-t-metric", scale=2)
                probe = gr.Dropdown(label="Probe", elem_id="lb-t-probe", scale=1)
                study = gr.Dropdown(label="Study / source", elem_id="lb-t-study", scale=4)
            caption = gr.Markdown(elem_id="lb-t-caption")
            table = gr.Dataframe(interactive=False, label="Models x datasets", elem_id="lb-t-table",
                                 elem_classes=["lb-sortable"],
                                 max_height=560, wrap=False, pinned_columns=1, show_search="search",
                                 buttons=["copy", "fullscreen"])
            with gr.Accordion("Provenance of these numbers (checksum, commit, hardware, date)", open=False):
                provenance = gr.Markdown(elem_id="lb-t-provenance")
            plot_what = gr.Radio(["Mean", "Mean rank"], value="Mean", label="Bar chart shows")
            with gr.Row():
                bar = gr.Plot(label="Per model", elem_id="lb-t-bar")
                scatter = gr.Plot(label="Score against size", elem_id="lb-t-scatter")
            heatmap = gr.Plot(label="Models x datasets", elem_id="lb-t-heatmap")
            sources = gr.Markdown(elem_id="lb-t-sources")
        with gr.Tab("All results (raw)", id="lb-raw-tab"):
            gr.Markdown("Every number with its source. Empty filters mean *all*.")
            with gr.Row():
                filters = {name: gr.Dropdown(choices(df, name), multiselect=True, label=name.capitalize(),
                                             elem_id=f"lb-{name}", allow_custom_value=True)
                           for name in FILTERS[:4]}
            with gr.Row():
                filters.update({name: gr.Dropdown(choices(df, name), multiselect=True, label=name.capitalize(),
                                                  elem_id=f"lb-{name}", allow_custom_value=True)
                                for name in FILTERS[4:]})
                search = gr.Textbox(label="Search", placeholder="model, dataset, source ...", elem_id="lb-search")
            columns = gr.CheckboxGroup(LOADED_COLUMNS, value=RAW_COLUMNS, label="Columns")
            count = gr.Markdown(elem_id="lb-count")
            raw = gr.Dataframe(interactive=False, label="Results", elem_id="lb-table", max_height=480, wrap=True,
                               elem_classes=["lb-sortable"],
                               pinned_columns=1, show_search="none", buttons=["copy", "fullscreen"])
            with gr.Row():
                download_btn = gr.Button("Prepare CSV of these rows", scale=0, min_width=240,
                                         elem_id="lb-download-btn")
                download = gr.DownloadButton("Download (CSV)", visible=False, elem_id="lb-download", scale=0,
                                             min_width=260)
            raw_sources = gr.Markdown(elem_id="lb-sources")
        with gr.Tab("Add results", id="lb-add-tab"):
            gr.Markdown(HOW_TO_ADD)
            upload = gr.File(label="Results CSV", file_types=[".csv"], type="filepath", elem_id="lb-upload")
            submit_btn = gr.Button("Check and add", variant="primary", elem_id="lb-submit")
            submit_msg = gr.Markdown(elem_id="lb-submit-msg")

    keys = [benchmark, metric, probe, study]
    table_outputs = [*keys, caption, table, bar, scatter, heatmap, sources, provenance]
    gr.on([k.input for k in keys] + [plot_what.change], board.tables_event, [*keys, plot_what], table_outputs,
          api_visibility="private", **order)
    raw_inputs = [*(filters[n] for n in FILTERS), search]
    raw_outputs = [raw, count, raw_sources]
    gr.on([f.change for f in filters.values()] + [search.submit, columns.change], board.raw_event,
          [*raw_inputs, columns], raw_outputs, api_visibility="private", **order)
    download_btn.click(board.download_event, raw_inputs, download, api_visibility="private", **order)
    submit_btn.click(board.submit, upload, [submit_msg, *keys], api_name="leaderboard_submit", **order).then(
        board.tables_event, [*keys, plot_what], table_outputs, api_visibility="private", **order).then(
        board.filter_choices_event, None, [filters[n] for n in FILTERS], api_visibility="private", **order)

    gr.api(board.api, api_name="leaderboard", queue=False)
    demo.load(None, js=HEADER_CLICK_SORTS)
    demo.load(board.tables_event, [*keys, plot_what], table_outputs, api_visibility="private", **order)
    demo.load(board.raw_event, [*raw_inputs, columns], raw_outputs, api_visibility="private", **order)
    demo.load(board.filter_choices_event, None, [filters[n] for n in FILTERS], api_visibility="private", **order)
    return board
