"""Leaderboard tab: published and locally computed results, filters, numeric sorting, plots and sources.

Built from ``gr.Dataframe`` plus filter widgets and plotly, not ``gradio-leaderboard``: its last release
(0.0.14) requires gradio<6 and its front end does not render on Gradio 6.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import gradio as gr
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from ui.common import describe_error, new_output_dir

log = logging.getLogger(__name__)

SCHEMA = [
    "model", "family", "benchmark", "dataset", "task", "metric", "probe", "value", "kind", "source",
    "source_link", "source_row", "parameters", "random_weights", "date", "notes",
]
FILTERS = ["benchmark", "dataset", "task", "metric", "probe", "family", "kind"]
DEFAULT_COLUMNS = ["model", "family", "benchmark", "dataset", "task", "metric", "probe", "value", "kind", "source"]
NUMERIC = {"value", "parameters", "source_row"}

HOW_TO_ADD = """
**How to add results.** *Published numbers*: add rows to `leaderboard_data/published_results.csv` with the
exact table/figure they come from in `source` (and a URL in `source_link`), values on a 0-1 scale; never
round or invent a number. *Local numbers*: run the benchmark runner (`python -m rl_core evaluate ...`),
which appends to `leaderboard_data/local_results.csv` with the model, data, probe and date it used.
The schema is `leaderboard_data/schema.json`. Press **Reload data** (or restart the app) to see them.
"""


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame({col: pd.Series(dtype="float64" if col in NUMERIC else "object") for col in SCHEMA})


def load_data(data_dir: str | Path | None = None) -> tuple[pd.DataFrame, str]:
    """All leaderboard rows (rl_core.leaderboard.load_leaderboard) and a message ('' when all went well)."""
    from rl_core.leaderboard import load_leaderboard

    try:
        df = load_leaderboard(data_dir)
    except Exception as exc:  # noqa: BLE001 - shown to the user, the app keeps running
        return empty_frame(), "Could not load the leaderboard data: " + describe_error(exc)
    missing = [c for c in SCHEMA if c not in df.columns]
    if missing:
        return empty_frame(), f"The leaderboard data lacks the columns {', '.join(missing)}."
    df = df.copy()
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df.reset_index(drop=True), ""


def choices(df: pd.DataFrame, column: str) -> list[str]:
    return sorted({str(v) for v in df[column].dropna().unique() if str(v)})


def filter_rows(
    df: pd.DataFrame,
    benchmark: list[str] | None = None,
    dataset: list[str] | None = None,
    task: list[str] | None = None,
    metric: list[str] | None = None,
    probe: list[str] | None = None,
    family: list[str] | None = None,
    kind: list[str] | None = None,
    search: str = "",
) -> pd.DataFrame:
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
        text = df[["model", "family", "dataset", "task", "benchmark", "source", "notes"]].astype(str).agg(" ".join, axis=1)
        mask &= text.str.lower().str.contains(needle, regex=False)
    return df[mask]


def table_view(rows: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """The displayed table: chosen columns, best value first; numbers stay numeric so sorting is numeric."""
    columns = [c for c in (columns or DEFAULT_COLUMNS) if c in SCHEMA] or DEFAULT_COLUMNS
    view = rows.sort_values("value", ascending=False, kind="stable")[columns].copy()
    if "value" in view:
        view["value"] = view["value"].round(4)
    if "parameters" in view:
        view["parameters"] = (view["parameters"] / 1e6).round(2)
        view = view.rename(columns={"parameters": "parameters (M)"})
    return view.reset_index(drop=True)


def plot_metric(rows: pd.DataFrame, metric: str | None) -> str | None:
    """The metric to plot: the one asked for if present, else the most frequent in the rows."""
    if rows.empty:
        return None
    present = rows["metric"].astype(str)
    if metric and metric in set(present):
        return metric
    return present.value_counts().index[0]


def per_model(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean value per model over the selected rows of one metric (with the number of rows averaged)."""
    sub = rows[rows["metric"].astype(str) == metric]
    if sub.empty:
        return pd.DataFrame(columns=["model", "family", "value", "n", "parameters", "kind"])
    grouped = sub.groupby("model", sort=False).agg(
        family=("family", "first"), value=("value", "mean"), n=("value", "size"),
        parameters=("parameters", "first"), kind=("kind", lambda k: "/".join(sorted(set(map(str, k))))),
    )
    return grouped.reset_index().sort_values("value", ascending=False)


def _empty_figure(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(xaxis_visible=False, yaxis_visible=False, height=320, template="plotly_white")
    return fig


def bar_figure(rows: pd.DataFrame, metric: str | None = None) -> go.Figure:
    metric = plot_metric(rows, metric)
    if metric is None:
        return _empty_figure("No rows match the filters")
    data = per_model(rows, metric).head(40)
    averaged = " (mean over the selected rows)" if (data["n"] > 1).any() else ""
    fig = px.bar(
        data.iloc[::-1], x="value", y="model", color="family", orientation="h", hover_data=["n", "kind"],
        title=f"{metric} per model{averaged}", template="plotly_white",
    )
    fig.update_yaxes(categoryorder="total ascending")  # best model on top, whatever its family
    fig.update_layout(height=max(320, 22 * len(data) + 120), xaxis_title=metric, yaxis_title="",
                      legend_title="family", margin=dict(l=10, r=10, t=50, b=40))
    return fig


def scatter_figure(rows: pd.DataFrame, metric: str | None = None) -> go.Figure:
    metric = plot_metric(rows, metric)
    if metric is None:
        return _empty_figure("No rows match the filters")
    data = per_model(rows, metric)
    known = data[data["parameters"].notna() & (data["parameters"] > 0)]
    if known.empty:
        return _empty_figure(f"No parameter counts are known for the models with {metric}")
    fig = px.scatter(
        known, x="parameters", y="value", color="family", hover_name="model", hover_data=["n", "kind"],
        log_x=True, title=f"{metric} against parameter count ({len(data) - len(known)} models without a count "
        "left out)", template="plotly_white",
    )
    fig.update_traces(marker=dict(size=11, line=dict(width=1, color="white")))
    fig.update_layout(height=420, xaxis_title="parameters (log scale)", yaxis_title=metric,
                      margin=dict(l=10, r=10, t=50, b=40))
    return fig


def sources_markdown(rows: pd.DataFrame) -> str:
    """'How these numbers were made': one line per source of the selected rows."""
    if rows.empty:
        return "No rows match the filters."
    lines = ["#### How these numbers were made"]
    for (source, link, kind), group in rows.groupby(["source", "source_link", "kind"], sort=True, dropna=False):
        link = link if isinstance(link, str) and link else ""
        title = f"[{source}]({link})" if link else str(source)
        if kind == "local":
            how = ("computed on this project's machines by rl_core's benchmark runner; " +
                   "; ".join(sorted({str(n) for n in group["notes"] if isinstance(n, str) and n}))[:400])
        else:
            src_rows = sorted({int(r) for r in group["source_row"] if not (isinstance(r, float) and math.isnan(r))})
            where = f" (rows {src_rows[0]}-{src_rows[-1]} of the published-results CSV)" if src_rows else ""
            how = f"copied from the publication as reported{where}, on a 0-1 scale"
        lines.append(f"- **{kind}** · {title} — {len(group)} numbers: {how.rstrip('; ')}")
    return "\n".join(lines)


def export_csv(rows: pd.DataFrame) -> str:
    path = new_output_dir("leaderboard") / "leaderboard.csv"
    rows.to_csv(path, index=False)
    return str(path)


class Leaderboard:
    """Holds the loaded rows (read-only, shared by all sessions) and answers the tab's events."""

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.data_dir = data_dir
        self.df, self.message = load_data(data_dir)

    def update_event(self, *args):
        """``update`` for the page: the table goes out with per-column datatypes (numeric sorting)."""
        table, *rest = self.update(*args)
        return (gr.Dataframe(value=table, datatype=column_types(table)), *rest)

    def reload(self) -> None:
        self.df, self.message = load_data(self.data_dir)

    def update(self, benchmark, dataset, task, metric, probe, family, kind, search, columns, plot_metric_name):
        rows = filter_rows(self.df, benchmark, dataset, task, metric, probe, family, kind, search)
        count = f"**{len(rows)}** of {len(self.df)} results · {rows['model'].nunique()} models"
        return (
            table_view(rows, columns),
            count,
            bar_figure(rows, plot_metric_name),
            scatter_figure(rows, plot_metric_name),
            sources_markdown(rows),
            export_csv(rows),
        )


def column_types(view: pd.DataFrame) -> list[str]:
    """Per-column datatypes for gr.Dataframe, so the browser sorts numbers as numbers."""
    return ["number" if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype) else "str"
            for dtype in view.dtypes]


def build(demo: gr.Blocks, data_dir: str | Path | None = None) -> Leaderboard:
    """The leaderboard tab (call inside ``demo``'s context); the table fills when the page loads."""
    board = Leaderboard(data_dir)
    df = board.df
    if board.message:
        gr.Markdown(f"⚠️ {board.message}", elem_id="leaderboard-message")
    gr.Markdown(
        "Published results (from the papers, each row citing its table) and results computed locally by "
        "rl_core's benchmark runner. Empty filters mean *all*. Click a column header to sort."
    )
    with gr.Row():
        filters = {
            name: gr.Dropdown(choices(df, name), multiselect=True, label=name.capitalize(), elem_id=f"lb-{name}",
                                allow_custom_value=True)
            for name in FILTERS[:4]
        }
    with gr.Row():
        filters.update({
            name: gr.Dropdown(choices(df, name), multiselect=True, label=name.capitalize(), elem_id=f"lb-{name}",
                                allow_custom_value=True)
            for name in FILTERS[4:]
        })
        search = gr.Textbox(label="Search", placeholder="model, dataset, source ...", elem_id="lb-search")
    with gr.Row():
        columns = gr.CheckboxGroup(SCHEMA, value=DEFAULT_COLUMNS, label="Columns", scale=4)
        plot_metric_dd = gr.Dropdown(choices(df, "metric"), value=plot_metric(df, "accuracy"),
                                     label="Metric to plot", scale=1, allow_custom_value=True)
        reload_btn = gr.Button("Reload data", scale=0)
    count = gr.Markdown(elem_id="lb-count")
    table = gr.Dataframe(interactive=False, label="Results", elem_id="lb-table", max_height=480, wrap=True,
                         pinned_columns=1, show_search="none", buttons=["copy", "fullscreen"])
    with gr.Row():
        bar = gr.Plot(label="Metric per model")
        scatter = gr.Plot(label="Score against parameter count")
    download = gr.File(label="Download the selected rows (CSV)", interactive=False, elem_id="lb-download")
    sources = gr.Markdown(elem_id="lb-sources")
    gr.Markdown(HOW_TO_ADD)

    inputs = [*(filters[n] for n in FILTERS), search, columns, plot_metric_dd]
    outputs = [table, count, bar, scatter, sources, download]
    triggers = [f.change for f in filters.values()] + [search.submit, columns.change, plot_metric_dd.change]
    # one queue slot for all table events: answers arrive in the order the filters were changed
    order = dict(concurrency_id="leaderboard", concurrency_limit=1)
    gr.on(triggers, board.update_event, inputs, outputs, api_name="leaderboard", **order)

    def reload(*args):
        board.reload()
        return board.update_event(*args)

    reload_btn.click(reload, inputs, outputs, api_visibility="private", **order)
    demo.load(board.update_event, inputs, outputs, api_visibility="private", **order)
    return board
