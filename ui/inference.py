"""Inference tab, the Gradio side: inputs, events and layout. What is shown is computed in ``ui.inference_view``
(no Gradio there); no error is raised to Gradio (no red badges): each handler reports in the status line.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from gradio.data_classes import FileData

from ui.common import SETTINGS, default_model, describe_error, example_recordings, model_choices, model_concurrency_id
from ui.inference_downloads import write_exports
from ui.inference_figure import CLIP_COLUMNS, clip_choices, clips_zip, listen, view_figure
from ui.inference_view import (
    BELOW_CHOICES,
    CONTEXT_S,
    REMOVED_COLUMNS,
    SPECIES_COLUMNS,
    SUMMARY_COLUMNS,
    VIEW_SECONDS,
    FileView,
    Options,
    Run,
    analyse,
    file_view,
    formatted,
    get_run,
    options_from_inputs,
    render,
    scrub,
    styled_species,
)
from ui.location_map import map_with_marker, on_map_pick, on_place_typed
from ui.malloc import release_memory


# --------------------------------------------------------------------------- Gradio adapters
class Player(gr.Audio):
    """gr.Audio for the WAVs ``ui.inference_figure.listen`` writes (16-bit PCM at 48 kHz or less: browsers play
    them). gr.Audio runs ffprobe on every file it shows to check that, 0.1 s of each request."""

    is_template = True  # the page draws it as a gr.Audio

    def postprocess(self, value):
        if isinstance(value, str) and value.endswith(".wav") and Path(value).is_file():
            return FileData(path=value, orig_name=Path(value).name)
        return super().postprocess(value)


FILTER_INPUTS_HELP = {
    "min_conf": "Detections scoring less are faded or hidden and left out of the downloads. BirdNET-Analyzer's "
                "default is 0.25; raise it (0.5-0.7) when you want few false alarms.",
    "sensitivity": "BirdNET-Analyzer's sensitivity: above 1 raises every score (more detections, more false "
                   "alarms), below 1 lowers them. 1 leaves the model's scores unchanged.",
    "overlap": "Seconds each analysis window overlaps the previous one (BirdNET windows are 3 s). More overlap: "
               "finer timing, longer run.",
}


def _state(run: Run | None, name: str | None, options: Options | None = None) -> dict:
    """The session's run, file shown and the filter settings it is shown with (``/downloads`` writes those)."""
    return {"run": run.id if run else None, "file": name, "options": asdict(options) if options else None}


def _file_outputs(run: Run | None, view: FileView | None, options: Options) -> tuple:
    """species, removed (with its accordion label), figure, audio, position slider, calls."""
    if run is None or view is None:
        return (pd.DataFrame(columns=SPECIES_COLUMNS), pd.DataFrame(columns=REMOVED_COLUMNS),
                gr.update(label="Removed by the location filter"), view_figure(None),
                gr.update(value=None, label="Listen"), gr.update(value=0, maximum=1), gr.update(visible=False))
    start, end = 0.0, min(view.duration_s, VIEW_SECONDS)
    heard = listen(run, view.name, view, start, end, options)
    removed_label = (f"Removed by the location filter: {len(view.removed)} species found here are not expected "
                     "at this place and week" if len(view.removed) else "Removed by the location filter (none)")
    calls = gr.update(visible=view.calls is not None, value=view.calls)
    removed = formatted(view.removed) if len(view.removed) else view.removed
    return (styled_species(view), removed, gr.update(label=removed_label), heard.figure,
            gr.update(value=heard.audio, label=f"Listen · {heard.caption}"),
            gr.update(value=0, maximum=max(int(view.duration_s), 1)), calls)


def _outputs(run: Run, options: Options, name: str | None = None) -> tuple:
    shown = render(run, options)
    names = list(shown.files)
    name = name if name in shown.files else (names[0] if names else None)
    return (
        shown.message, formatted(shown.summary),
        gr.update(choices=names, value=name),
        *_file_outputs(run, shown.files.get(name), options),
        None,  # the downloads: written on demand (on_downloads), cleared when what is shown changes
        _state(run, name, options),
        clip_choices(run, name, options),
    )


N_OUTPUTS = 13


def on_run(files, example, model_name, top_k, min_conf=0.25, sensitivity=1.0, overlap_s=0.0, lat=None,
           lon=None, date=None, location_threshold=0.03, species_list=None, language="en", below="fade",
           classifier_files=None, progress=gr.Progress()):
    try:
        options = options_from_inputs(min_conf, sensitivity, overlap_s, lat, lon, date, location_threshold,
                                      species_list, language, below)
        run = analyse(files, model_name, top_k, example=example or None, progress=progress, options=options,
                      classifier_files=classifier_files)
        return _outputs(run, options)
    except Exception as exc:  # noqa: BLE001 - one message in the status line; the panels keep what they show
        return (f"⚠️ {scrub(describe_error(exc))}", *[gr.skip()] * (N_OUTPUTS - 1))
    finally:
        release_memory()


def on_refilter(state, min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below):
    """Re-draw the stored results under new filter settings (no model pass)."""
    run = get_run((state or {}).get("run"))
    if run is None:
        return (gr.skip(),) * N_OUTPUTS
    try:
        options = options_from_inputs(min_conf, sensitivity, 0.0, lat, lon, date, location_threshold,
                                      species_list, language, below)
        return _outputs(run, options, (state or {}).get("file"))
    except Exception as exc:  # noqa: BLE001
        return (f"⚠️ {scrub(describe_error(exc))}", *[gr.skip()] * (N_OUTPUTS - 1))


def on_pick_file(state, name, min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below):
    filters = (min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below)
    run = get_run((state or {}).get("run"))
    if run is None or name not in run.results:
        return (gr.skip(),) * 9
    options = options_from_inputs(filters[0], filters[1], 0.0, *filters[2:])
    return (*_file_outputs(run, file_view(run, name, options), options), _state(run, name, options),
            clip_choices(run, name, options))


def _listen_outputs(state, start_s: float, end_s: float, filters) -> tuple:
    run = get_run((state or {}).get("run"))
    name = (state or {}).get("file")
    if run is None or name not in run.results:
        return gr.skip(), gr.skip(), gr.skip()
    options = options_from_inputs(filters[0], filters[1], 0.0, *filters[2:])
    view = file_view(run, name, options)
    heard = listen(run, name, view, start_s, end_s, options)
    return heard.figure, gr.update(value=heard.audio, label=f"Listen · {heard.caption}"), gr.skip()


def on_species_select(state, table,
        min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below, evt: gr.SelectData):
    """A click on a species row plays its best window with a second of context."""
    filters = (min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below)
    if evt is None or table is None or not len(table):
        return gr.skip(), gr.skip(), gr.skip()
    row = table.iloc[evt.index[0]]
    at = float(row["at (s)"])
    run = get_run((state or {}).get("run"))
    name = (state or {}).get("file")
    if run is None or name not in run.results:
        return gr.skip(), gr.skip(), gr.skip()
    window = float(run.results[name].ends[0] - run.results[name].starts[0])
    fig, audio, _ = _listen_outputs(state, at - CONTEXT_S, at + window + CONTEXT_S, filters)
    return fig, audio, gr.update(value=at)


def on_timeline_click(state, clicked,
        min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below):
    """A click on a timeline cell (sent by the page's script as "seconds|label") plays that window."""
    filters = (min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below)
    try:
        at = float(str(clicked).split("|")[0])
    except ValueError:
        return gr.skip(), gr.skip(), gr.skip()
    run = get_run((state or {}).get("run"))
    name = (state or {}).get("file")
    if run is None or name not in run.results:
        return gr.skip(), gr.skip(), gr.skip()
    result = run.results[name]
    w = int(np.searchsorted(result.starts, at, side="right") - 1)
    w = min(max(w, 0), result.num_windows - 1)
    start, end = float(result.starts[w]), float(result.ends[w])
    fig, audio, _ = _listen_outputs(state, start - CONTEXT_S, end + CONTEXT_S, filters)
    return fig, audio, gr.update(value=start)


def on_position(state, position,
        min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below):
    """The position slider: the player and spectrogram show VIEW_SECONDS from there."""
    filters = (min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below)
    return _listen_outputs(state, float(position or 0), float(position or 0) + VIEW_SECONDS, filters)[:2]


def on_clips(state, chosen, min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language,
             below):
    """The clips of the detections ticked in the clips table (``chosen``), as a zip of WAVs."""
    filters = (min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below)
    run = get_run((state or {}).get("run"))
    name = (state or {}).get("file")
    if run is None or name not in run.results:
        return gr.skip(), "Analyse a recording first."
    try:
        options = options_from_inputs(filters[0], filters[1], 0.0, *filters[2:])
        return gr.update(value=str(clips_zip(run, name, options, chosen)), visible=True), ""
    except Exception as exc:  # noqa: BLE001
        return gr.skip(), f"⚠️ {scrub(describe_error(exc))}"


def on_downloads(state):
    """Predictions CSV, Raven and Audacity tables, embeddings and settings.json for the filter settings shown."""
    run = get_run((state or {}).get("run"))
    if run is None or not (state or {}).get("options"):
        return gr.skip(), "Analyse a recording first."
    try:
        paths = write_exports(run, Options(**state["options"]))
        if not paths:
            return gr.skip(), "⚠️ nothing to download: no file could be analysed"
        return paths, ""
    except Exception as exc:  # noqa: BLE001
        return gr.skip(), f"⚠️ {scrub(describe_error(exc))}"


# the page's script: a click on a timeline cell writes "seconds|label" into a hidden box and fires its input event
TIMELINE_CLICK_JS = """
() => {
  const attach = (tries) => {
    const plot = document.querySelector('#inf-view .js-plotly-plot');
    if (!plot || !plot.on) { if (tries > 0) setTimeout(() => attach(tries - 1), 200); return; }
    if (plot._rlClick) return;
    plot._rlClick = true;
    plot.on('plotly_click', (data) => {
      const point = data.points && data.points[0];
      if (!point || point.data.type !== 'heatmap') return;
      const box = document.querySelector('#inf-jump textarea, #inf-jump input');
      box.value = `${point.x}|${point.y}|${Date.now()}`;
      box.dispatchEvent(new Event('input', {bubbles: true}));
    });
  };
  attach(25);
}
"""


def build() -> None:
    from rl_core.detection_filters import LANGUAGES, available_languages

    examples = [p.name for p in example_recordings()]
    gr.Markdown(
        "**Find the species in your recordings.** Drop one or more recordings (WAV, FLAC, OGG, MP3 … any sample "
        f"rate, up to {SETTINGS.max_file_size_mb:g} MB each) or pick a bundled example, then press **Analyse**. "
        "The model scores every 3-s window: a score is the model's confidence (0-1) that the species calls in "
        "that window. Click a row of the species table or a cell of the timeline to hear that moment."
    )
    with gr.Row():
        with gr.Column(scale=3):
            files = gr.File(file_count="multiple", label="Recordings", elem_id="inf-files", height=150)
            example = gr.Dropdown([("—", "")] + [(n, n) for n in examples], value="", label="…or a bundled example",
                                  elem_id="inf-example")
        with gr.Column(scale=2):
            model = gr.Dropdown(model_choices(), value=default_model(), label="Model", elem_id="inf-model",
                                info="Only models marked 'species names · ready' name species on this machine; "
                                     "'embeddings only' models give vectors for the embedding map.")
            top_k = gr.Slider(1, 20, value=5, step=1, label="Species per file",
                              info="How many of the best-scoring species each file lists.")
            classifier_files = gr.File(file_count="multiple", type="filepath", height=130, elem_id="inf-classifier",
                                       label="Your classifier (.safetensors + .yaml)")
            with gr.Row():
                run = gr.Button("Analyse", variant="primary", elem_id="inf-run", scale=3)
                clear = gr.ClearButton(value="Clear", scale=1)
    with gr.Accordion("Filters: confidence, location and season, species list, language", open=True):
        with gr.Row():
            min_conf = gr.Slider(0.01, 0.99, value=0.25, step=0.01, label="Minimum confidence",
                                 info=FILTER_INPUTS_HELP["min_conf"], elem_id="inf-min-conf")
            sensitivity = gr.Slider(0.5, 1.5, value=1.0, step=0.05, label="Sensitivity",
                                    info=FILTER_INPUTS_HELP["sensitivity"], elem_id="inf-sensitivity")
            overlap = gr.Slider(0.0, 2.5, value=0.0, step=0.5, label="Overlap (s)", info=FILTER_INPUTS_HELP["overlap"],
                                elem_id="inf-overlap")
            below = gr.Radio(BELOW_CHOICES, value="fade", label="Scores below the minimum", elem_id="inf-below")
        with gr.Row():
            lat = gr.Textbox("", label="Latitude", placeholder="e.g. 42.45", elem_id="inf-lat",
                             info="Decimal degrees, north positive. Empty: no location filter.")
            lon = gr.Textbox("", label="Longitude", placeholder="e.g. -76.48", elem_id="inf-lon",
                             info="Decimal degrees, east positive.")
            date = gr.Textbox("", label="Recording date", placeholder="YYYY-MM-DD", elem_id="inf-date",
                              info="Gives BirdNET's week (4 per month). Empty: the whole year.")
            location_threshold = gr.Slider(0.01, 0.99, value=0.03, step=0.01, label="Occurrence threshold",
                                           info="Species the location model gives less than this probability of "
                                                "occurring there that week are removed (BirdNET-Analyzer: 0.03).",
                                           elem_id="inf-loc-thr")
        with gr.Row():
            species_list = gr.File(label="Custom species list (.txt, one scientific name per line)",
                                   file_types=[".txt", ".csv"], type="filepath", elem_id="inf-slist", height=120)
            language = gr.Dropdown([(LANGUAGES.get(c, c), c) for c in available_languages()], value="en",
                                   label="Language of common names", elem_id="inf-language")
        with gr.Row():
            place_map = gr.Image(map_with_marker(), format="png", interactive=False, show_label=False,
                                 buttons=[], elem_id="inf-map", height=250, scale=2, container=False)
            gr.Markdown("Click the map to set the latitude and longitude of the recording site (or type them); "
                        "the red dot shows the place. The map and BirdNET's range model both work offline.",
                        elem_classes="rl-note")
    status = gr.Markdown(elem_id="inf-status")
    summary = gr.Dataframe(headers=SUMMARY_COLUMNS, interactive=False, label="All files", elem_id="inf-summary",
                           wrap=True, column_widths=["26%", "11%", "9%", "30%", "12%", "12%"])
    pick = gr.Dropdown([], label="Show file", elem_id="inf-pick")
    with gr.Row():
        with gr.Column(scale=3):
            species = gr.Dataframe(headers=SPECIES_COLUMNS, interactive=False, elem_id="inf-species", wrap=True,
                                   label="Species (click a row to hear its best window)",
                                   column_widths=["7%", "22%", "22%", "11%", "12%", "10%", "16%"])
            with gr.Accordion("Removed by the location filter", open=False, elem_id="inf-removed-box") as removed_box:
                removed = gr.Dataframe(headers=REMOVED_COLUMNS, interactive=False, elem_id="inf-removed", wrap=True)
            # BatDetect2 (another helper): one row per call with its time/frequency box
            calls = gr.Dataframe(interactive=False, label="Calls", elem_id="inf-calls", visible=False, wrap=True)
        with gr.Column(scale=2):
            audio = Player(type="filepath", label="Listen", interactive=False, elem_id="inf-audio")
            position = gr.Slider(0, 1, value=0, step=1, label="Position in the file (s)", elem_id="inf-position",
                                 info=f"Moves the player and spectrogram ({VIEW_SECONDS:g} s from here).")
            with gr.Accordion("Clips: choose the detections to export", open=False, elem_id="inf-clip-box"):
                clip_rows = gr.Dataframe(headers=CLIP_COLUMNS, datatype=["bool", "str", "number", "number"],
                                         interactive=True, static_columns=[1, 2, 3], elem_id="inf-clip-rows",
                                         show_label=False, max_height=300, wrap=True,
                                         column_widths=["19%", "47%", "16%", "18%"])
            clips_button = gr.Button("Download clips of the ticked detections (zip of WAVs)", size="sm",
                                     elem_id="inf-clips-run")
            clips = gr.File(label="Clips", interactive=False, elem_id="inf-clips", visible=False)
            clips_note = gr.Markdown(elem_id="inf-clips-note")
    figure = gr.Plot(label="Spectrogram and detections over time", elem_id="inf-view")
    jump = gr.Textbox(elem_id="inf-jump", elem_classes="rl-hidden", show_label=False, container=False)
    downloads_button = gr.Button("Prepare downloads: predictions CSV, Raven selection tables, Audacity labels, "
                                 "embeddings (.npz), settings (for the filters shown)", size="sm",
                                 elem_id="inf-downloads-run")
    downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="inf-downloads")
    downloads_note = gr.Markdown(elem_id="inf-downloads-note")
    state = gr.State({})
    filters = [min_conf, sensitivity, lat, lon, date, location_threshold, species_list, language, below]
    outputs = [status, summary, pick, species, removed, removed_box, figure, audio, position, calls, downloads, state,
               clip_rows]
    clear.add([files, classifier_files, status, summary, pick, species, removed, figure, audio, downloads, clip_rows])
    run.click(
        on_run, [files, example, model, top_k, min_conf, sensitivity, overlap, lat, lon, date, location_threshold,
                 species_list, language, below, classifier_files],
        outputs, api_name="predict", concurrency_id=model_concurrency_id(), concurrency_limit=SETTINGS.model_workers,
        show_progress_on=[status],
    )
    # sliders: .change also fires when a number is typed into their box; always_last drops stale drags
    gr.on([min_conf.change, sensitivity.change, below.change, lat.submit, lon.submit, lat.blur, lon.blur,
           date.submit, date.blur, location_threshold.change, species_list.change, language.change],
          on_refilter, [state, *filters], outputs, api_visibility="private", show_progress="hidden",
          trigger_mode="always_last", concurrency_id="inference-redraw")
    pick.input(on_pick_file, [state, pick, *filters],
               [species, removed, removed_box, figure, audio, position, calls, state, clip_rows],
               api_visibility="private", show_progress="hidden")
    species.select(on_species_select, [state, species, *filters], [figure, audio, position],
                   api_visibility="private", show_progress="hidden")
    jump.change(on_timeline_click, [state, jump, *filters], [figure, audio, position], api_visibility="private",
               show_progress="hidden")
    # input: the user's drag or typed number (not the value set by a click on a detection)
    position.input(on_position, [state, position, *filters], [figure, audio], api_visibility="private",
                   show_progress="hidden", trigger_mode="always_last")
    clips_button.click(on_clips, [state, clip_rows, *filters], [clips, clips_note], api_visibility="private")
    figure.change(None, js=TIMELINE_CLICK_JS)
    # one queue with the re-draw: a click right after a filter change writes the new settings' files
    downloads_button.click(on_downloads, [state], [downloads, downloads_note], api_name="downloads",
                           concurrency_id="inference-redraw")
    # the map: a click writes the coordinates (and re-filters); typed coordinates move its marker
    place_map.select(on_map_pick, None, [lat, lon, place_map], api_visibility="private", show_progress="hidden").then(
        on_refilter, [state, *filters], outputs, api_visibility="private", show_progress="hidden")
    gr.on([lat.submit, lon.submit, lat.blur, lon.blur], on_place_typed, [lat, lon], place_map,
          api_visibility="private", show_progress="hidden")
