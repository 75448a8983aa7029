"""The "Map of the project's windows" section of the Find & train tab.

Display and wiring only: the points and their projection are :func:`rl_core.project.window_map.window_map`.
The section shares the tab's results table, player, spectrogram and verdict buttons: a lasso or box selection
fills the results table (source "map"), a clicked point is shown and played (and joins the results table if it is
not in it), "Search from selection" searches with the mean of the selected windows' embeddings.

``gr.Plot`` has no click or select events: :data:`MAP_EVENTS_JS` listens to plotly's ``plotly_click`` and
``plotly_selected`` on the plot and writes the points' row numbers into hidden text boxes, whose change events
call the Python handlers.
"""

from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from ui.common import UserFacingError

COLOUR_BY = ["species", "score", "label", "folder", "date", "hour of day"]
#: categories of a categorical colouring with their own colour; the rest share one ("other ...")
MAX_CATEGORIES = 15
#: a window's top species names its colour only from this score on (lower ones are noise)
SPECIES_MIN_SCORE = 0.1
#: past this many points the map is drawn with WebGL (SVG slows down with tens of thousands)
WEBGL_FROM = 5_000
#: selected windows listed in the results table at most (the whole selection is labelled and searched with)
LIST_AT_MOST = 500
MAP_EVENTS_JS = """
() => {
  if (!document.getElementById('sim-map-style')) {
    // a drawn lasso stays on the plot as an outline that would swallow the hover and click of the points inside
    const style = document.createElement('style');
    style.id = 'sim-map-style';
    style.textContent = '#sim-map .selectionlayer path { pointer-events: none !important; }';
    document.head.appendChild(style);
  }
  const send = (id, text) => {
    const box = document.querySelector(`#${id} textarea, #${id} input`);
    if (!box) return;
    box.value = text;
    box.dispatchEvent(new Event('input', {bubbles: true}));
  };
  const attach = (tries) => {
    const plot = document.querySelector('#sim-map .js-plotly-plot');
    // plotly gives a plot new listeners (a new 'on') when it is drawn afresh: attach to each
    if (plot && plot.on && plot.__rlMapOn !== plot.on) {
      plot.__rlMapOn = plot.on;
      plot.on('plotly_click', (data) => {
        const point = data && data.points && data.points[0];
        if (point && point.customdata) send('sim-map-click', `${point.customdata[0]}|${Date.now()}`);
      });
      plot.on('plotly_selected', (data) => {
        if (!data || !data.points) return;
        const rows = data.points.map((p) => p.customdata && p.customdata[0]).filter((r) => r !== undefined);
        send('sim-map-select', `${rows.join(',')}|${Date.now()}`);
      });
    }
    if (tries > 0) setTimeout(() => attach(tries - 1), 200);
  };
  attach(25);
}
"""


def _category(values: pd.Series, other: str) -> pd.Series:
    """The most common values keep their own colour; the rest become ``other``."""
    keep = values.value_counts().index[:MAX_CATEGORIES]
    return values.where(values.isin(keep), other)


def map_figure(points: pd.DataFrame, colour: str, title: str) -> go.Figure:
    """A scatter of the map's points coloured by ``colour``; each point's customdata[0] is its row number."""
    frame = points.assign(row=np.arange(len(points)))
    continuous = None
    if colour == "species":
        named = frame["species"].where((frame["score"] >= SPECIES_MIN_SCORE) & (frame["species"] != ""),
                                       f"no species >= {SPECIES_MIN_SCORE:g}")
        frame["colour"] = _category(named, "other species")
    elif colour == "score":
        frame["colour"], continuous = frame["score"], "Viridis"
    elif colour == "label":
        frame["colour"] = _category(frame["label"], "other labels")
    elif colour == "folder":
        frame["colour"] = _category(frame["folder"], "other folders")
    elif colour == "date":
        frame["colour"] = _category(frame["date"].replace("", "no date"), "other dates")
    elif colour == "hour of day":
        frame["colour"], continuous = frame["hour"], "Twilight"
    else:
        raise UserFacingError(f"unknown colouring '{colour}': use one of {', '.join(COLOUR_BY)}")
    options = dict(color_continuous_scale=continuous) if continuous else dict(
        category_orders={"colour": frame["colour"].value_counts().index.tolist()})
    fig = px.scatter(frame, x="x", y="y", color="colour", custom_data=["row", "file", "start_s", "species", "score",
                                                                        "label"],
                     title=title, template="plotly_white", render_mode="webgl" if len(frame) > WEBGL_FROM else "svg",
                     **options)
    fig.update_traces(marker=dict(size=6 if len(frame) > WEBGL_FROM else 9, opacity=0.8),
                      hovertemplate="<b>%{customdata[1]}</b> %{customdata[2]} s<br>%{customdata[3]} "
                                    "%{customdata[4]:.3f}<br>%{customdata[5]}<extra></extra>")
    fig.update_layout(height=560, xaxis_title="", yaxis_title="", legend_title=colour, coloraxis_colorbar_title=colour,
                      dragmode="lasso", margin=dict(l=10, r=10, t=50, b=10))
    return fig


def draw(name: str, folders, date_from: str, date_to: str, method: str, colour: str, max_points: float):
    """(message, figure, points) of the project's windows (of the chosen folders and dates)."""
    from rl_core.project.window_map import window_map
    from ui.similar import _store

    with _store(name) as store:
        result = window_map(store, folders=folders or None, date_from=(date_from or "").strip() or None,
                            date_to=(date_to or "").strip() or None, max_points=int(max_points or 20_000),
                            method=method or "PCA")
    what = f"{method} of {result.model} window embeddings · {result.description}"
    message = (f"Map: **{result.description}**" + (" (a random sample; raise the limit to draw more)"
                                                    if result.sampled else "")
               + ". Click a point to hear it; draw a lasso (or a box, from the plot's toolbar) to select windows.")
    result.points.attrs["title"] = what  # kept with the points for a new colouring
    return message, map_figure(result.points, colour, what), result.points


def recolour(points: pd.DataFrame | None, colour: str):
    if points is None or len(points) == 0:
        return gr.update()
    return map_figure(points, colour, points.attrs.get("title", ""))


def _rows(points: pd.DataFrame | None, text: str) -> list[int]:
    if points is None or len(points) == 0:
        raise UserFacingError("draw the map first")
    listed = (text or "").split("|")[0]
    try:
        rows = [int(r) for r in listed.split(",") if r.strip()]
    except ValueError:
        raise UserFacingError(f"not a list of map points: '{listed[:40]}'") from None
    bad = [r for r in rows if not 0 <= r < len(points)]
    if bad:
        raise UserFacingError(f"point {bad[0]} is not on the map (it has {len(points)}): draw the map again")
    return rows


def _as_items(name: str, points: pd.DataFrame) -> pd.DataFrame:
    from ui.similar import _items, _remember_paths

    frame = points.assign(label=points["label"].replace("unlabelled", ""), class_name="")
    items = _items(frame, "score")
    _remember_paths(name, items)
    return items


def select(name: str, points: pd.DataFrame | None, text: str):
    """A lasso/box selection: (message, results table, source, selected index, the selection's points)."""
    rows = _rows(points, text)
    if not rows:
        return "No point selected (draw around some points).", gr.update(), gr.update(), gr.update(), None
    chosen = points.iloc[rows].reset_index(drop=True)
    listed = chosen.head(LIST_AT_MOST)
    more = f" (the first {LIST_AT_MOST} listed)" if len(chosen) > LIST_AT_MOST else ""
    message = (f"{len(chosen)} window(s) selected on the map{more}: listen and mark them one by one (p / n / u), "
               "label the whole selection, or search from it.")
    return message, _as_items(name, listed), "map", 0, chosen


def click(name: str, points: pd.DataFrame | None, text: str, items: pd.DataFrame | None, source: str):
    """A clicked point: selected in the results table (added at its top if it is not listed)."""
    rows = _rows(points, text)
    point = points.iloc[rows[:1]]
    key = (str(int(point["file_id"].iloc[0])), int(point["window_index"].iloc[0]))
    if items is not None and len(items):
        listed = list(zip(items["file_id"].astype(str), items["window_index"].astype(int)))
        if key in listed:
            return items, source, listed.index(key)
    added = _as_items(name, point)
    items = added if items is None or len(items) == 0 else pd.concat([added, items[added.columns]], ignore_index=True)
    return items, "map", 0


def search_from(name: str, selection: pd.DataFrame | None, top: float, folders, date_from: str, date_to: str):
    """Search with the mean of the selected windows' embeddings: (message, results, source, selected index)."""
    from rl_core.project.search import QueryClip, search
    from ui.similar import _items, _remember_paths, _store

    if selection is None or len(selection) == 0:
        raise UserFacingError("select windows on the map first (lasso or box)")
    clips = [QueryClip(file=f, window_index=int(w)) for f, w in zip(selection["file"], selection["window_index"])]
    with _store(name) as store:
        found = search(store, clips, top_n=int(top or 20), folders=folders or None,
                       date_from=(date_from or "").strip() or None, date_to=(date_to or "").strip() or None)
    items = _items(found, "similarity")
    _remember_paths(name, items)
    return (f"{len(items)} window(s) most similar to the {len(selection)} selected on the map (cosine similarity to "
            "their mean embedding, best first).", items, "search", 0)


def label_selection(name: str, selection: pd.DataFrame | None, class_name: str, verdict: str,
                    items: pd.DataFrame | None, points: pd.DataFrame | None, colour: str):
    """One verdict on every selected window: (message, results, labels, points, figure)."""
    from rl_core.project.labelling import add_labels, labels
    from ui.similar import LABEL_COLUMNS, _store

    if selection is None or len(selection) == 0:
        raise UserFacingError("select windows on the map first (lasso or box)")
    with _store(name) as store:
        stored = add_labels(store, selection[["file_id", "window_index"]], class_name, verdict, source="map")
        done = labels(store)
    keys = set(zip(selection["file_id"].astype(str), selection["window_index"].astype(int)))
    if items is not None and len(items):
        items = items.copy()
        hit = [(str(f), int(w)) in keys for f, w in zip(items["file_id"], items["window_index"])]
        items.loc[hit, "label"] = verdict
    figure = gr.update()
    if points is not None and len(points):
        points = points.copy()
        hit = [(str(f), int(w)) in keys for f, w in zip(points["file_id"], points["window_index"])]
        points.loc[hit, "label"] = f"{verdict}: {class_name.strip()}"
        if colour == "label":
            figure = map_figure(points, colour, points.attrs.get("title", ""))
    return (f"{stored} selected window(s) marked {verdict} for '{class_name.strip()}' ({len(done)} label(s) in the "
            "project)", items, done[LABEL_COLUMNS], points, figure)


def build_section() -> dict:
    """The map's controls (laid out where this is called); :func:`wire` connects them to the tab."""
    with gr.Accordion("Map of the project's windows", open=False, elem_id="sim-map-section"):
        gr.Markdown("Every window of the project (or of the folders and dates chosen above) as a point: nearby "
                    "points sound alike. Large projects are drawn from a random sample, as said above the map.")
        with gr.Row():
            colour = gr.Dropdown(COLOUR_BY, value="species", label="Colour by", elem_id="sim-map-colour")
            method = gr.Radio(["PCA", "UMAP"], value="PCA", label="Projection", elem_id="sim-map-method")
            max_points = gr.Number(value=20_000, precision=0, minimum=2, label="Points at most", elem_id="sim-map-max")
            draw_button = gr.Button("Draw map", elem_id="sim-map-draw")
        map_message = gr.Markdown(elem_id="sim-map-message")
        plot = gr.Plot(label="Map of the project's windows", elem_id="sim-map")
        clicked = gr.Textbox(elem_id="sim-map-click", elem_classes="rl-hidden", show_label=False, container=False)
        selected_box = gr.Textbox(elem_id="sim-map-select", elem_classes="rl-hidden", show_label=False,
                                  container=False)
        with gr.Row():
            search_button = gr.Button("Search from selection", elem_id="sim-map-search")
            verdict = gr.Radio(["positive", "negative", "unsure"], value="positive",
                               label="Verdict for the whole selection", elem_id="sim-map-verdict")
            label_button = gr.Button("Label the selection", elem_id="sim-map-label")
    return dict(colour=colour, method=method, max_points=max_points, draw=draw_button, message=map_message, plot=plot,
                clicked=clicked, selected_box=selected_box, search=search_button, verdict=verdict, label=label_button,
                points=gr.State(None), selection=gr.State(None))


def wire(m: dict, c: dict) -> None:
    """Events of the map's controls ``m`` on the tab's components ``c`` (project, filters, results, player ...)."""
    from ui.similar import _guard

    m["draw"].click(_guard(draw), [c["project"], c["folders"], c["date_from"], c["date_to"], m["method"], m["colour"],
                                   m["max_points"]], [m["message"], m["plot"], m["points"]], api_name="similar_map")
    m["plot"].change(None, js=MAP_EVENTS_JS)
    m["colour"].input(_guard(recolour), [m["points"], m["colour"]], [m["plot"]], api_name="similar_map_colour")
    m["selected_box"].change(_guard(select), [c["project"], m["points"], m["selected_box"]],
                             [c["message"], c["items"], c["source"], c["selected"], m["selection"]],
                             api_name="similar_map_select").success(**c["show"])
    m["clicked"].change(_guard(click), [c["project"], m["points"], m["clicked"], c["items"], c["source"]],
                        [c["items"], c["source"], c["selected"]], api_name="similar_map_click").success(**c["show"])
    m["search"].click(_guard(search_from), [c["project"], m["selection"], c["top"], c["folders"], c["date_from"],
                                            c["date_to"]], [c["message"], c["items"], c["source"], c["selected"]],
                      api_name="similar_map_search").success(**c["show"])
    m["label"].click(_guard(label_selection), [c["project"], m["selection"], c["class_name"], m["verdict"], c["items"],
                                               m["points"], m["colour"]],
                     [c["label_message"], c["items"], c["labels_table"], m["points"], m["plot"]],
                     api_name="similar_map_label")
