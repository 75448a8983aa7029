"""The leaderboard's plots (plotly): mean or mean rank per model, score against size, models x datasets; one
colour per model family across all of them."""

from __future__ import annotations

import plotly.express as px
import plotly.graph_objects as go

from rl_core import leaderboard_tables as lt


def family_colors(families: list[str]) -> dict[str, str]:
    """One colour per family, fixed for the whole app (every plot uses this map)."""
    palette = px.colors.qualitative.Dark24 + px.colors.qualitative.Light24
    return {family: palette[i % len(palette)] for i, family in enumerate(sorted(set(families)))}


def empty_figure(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(xaxis_visible=False, yaxis_visible=False, height=320, template="plotly_white")
    return fig


def bar_figure(table: lt.BenchmarkTable, colors: dict[str, str], what: str = "Mean") -> go.Figure:
    """The table's mean (or mean rank) per model; the axis says which, and the metric."""
    data = table.scores[table.scores[what].notna()]
    if data.empty:
        return empty_figure(f"No model has a {what.lower()} here")
    ascending = what == "Mean rank"
    data = data.sort_values(what, ascending=not ascending)  # best at the top of a horizontal bar chart
    label = f"mean {table.metric} over datasets" if what == "Mean" else f"mean rank by {table.metric} (1 = best)"
    fig = px.bar(data, x=what, y="Model", color="Family", orientation="h", color_discrete_map=colors,
                 hover_data=[c for c in data.columns if c.startswith("Datasets")], template="plotly_white",
                 title=f"{table.benchmark}: {label} ({table.probe} probe)")
    fig.update_yaxes(categoryorder="array", categoryarray=list(data["Model"]))
    fig.update_layout(height=max(320, 22 * len(data) + 120), xaxis_title=label, yaxis_title="",
                      legend_title="family", margin=dict(l=10, r=10, t=50, b=40))
    return fig


def scatter_figure(table: lt.BenchmarkTable, colors: dict[str, str]) -> go.Figure:
    """Mean score against parameter count (log scale), one colour per family."""
    data = table.scores[table.scores["Mean"].notna()]
    known = data[data["Params (M)"].notna() & (data["Params (M)"] > 0)]
    if known.empty:
        return empty_figure("No parameter count is known for these models")
    fig = px.scatter(known, x="Params (M)", y="Mean", color="Family", hover_name="Model", log_x=True,
                     color_discrete_map=colors, template="plotly_white",
                     title=f"mean {table.metric} against size ({len(data) - len(known)} models without a known "
                           "size left out)")
    fig.update_traces(marker=dict(size=11, line=dict(width=1, color="white")))
    fig.update_layout(height=420, xaxis_title="parameters, millions (log scale)",
                      yaxis_title=f"mean {table.metric}", legend_title="family", margin=dict(l=10, r=10, t=50, b=40))
    return fig


def heatmap_figure(table: lt.BenchmarkTable) -> go.Figure:
    """Models (best rank on top) x datasets, coloured by the metric's value."""
    grid = table.scores.set_index("Model")[table.datasets]
    fig = px.imshow(grid, text_auto=".2f", aspect="auto", color_continuous_scale="Viridis",
                    labels=dict(x="dataset", y="", color=table.metric), template="plotly_white",
                    title=f"{table.benchmark}: {table.metric} per dataset ({table.probe} probe)")
    fig.update_layout(height=max(320, 24 * len(grid) + 140), margin=dict(l=10, r=10, t=50, b=40))
    return fig
