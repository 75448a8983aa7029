"""Inference tab: recordings in, species over time, spectrogram, player and downloads out.

``analyse`` is the plain handler (tests call it directly); the Gradio callbacks only adapt its result to
components. A file that cannot be read is reported by name while the other files are processed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from ui.common import (
    analysis_limits,
    check_file_size,
    default_model,
    describe_error,
    display_name,
    example_recordings,
    get_model,
    model_choices,
    model_concurrency_id,
    new_output_dir,
    progress_adapter,
    UserFacingError,
)
from ui.malloc import release_memory
from ui.spectrogram import playable_audio, read_preview, spectrogram_image

log = logging.getLogger(__name__)

TIMELINE_SPECIES = 10
SPECIES_THRESHOLD = 0.5
SUMMARY_COLUMNS = ["file", "duration (s)", "windows", "top species", "common name", "best score"]
SPECIES_COLUMNS = ["rank", "scientific name", "common name", "max score", "mean score", "at (s)", "windows ≥ 0.5"]


@dataclass
class FileView:
    """What the tab shows for one analysed file (small: no audio, no full score matrix)."""

    name: str
    duration_s: float
    species: pd.DataFrame
    timeline_starts: list[float]
    timeline_edges: list[float]
    timeline_labels: list[str]
    timeline_scores: list[list[float]]
    spectrogram: str
    audio: str | None
    audio_caption: str


@dataclass
class AnalysisResult:
    model: str
    files: dict[str, FileView] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    summary: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SUMMARY_COLUMNS))

    @property
    def message(self) -> str:
        done = f"Analysed {len(self.files)} file(s) with **{self.model}**."
        if not self.errors:
            return done
        problems = "\n".join(f"- ⚠️ {e}" for e in self.errors)
        return f"{done}\n\n**{len(self.errors)} file(s) could not be analysed:**\n{problems}"


def species_table(result: Any, k: int) -> pd.DataFrame:
    """Top-k species of one file (``RecordingResult.file_summary``) with the tab's column names."""
    summary = result.file_summary(k, threshold=SPECIES_THRESHOLD)
    table = pd.DataFrame({
        "rank": summary["rank"], "scientific name": summary["scientific_name"],
        "common name": summary["common_name"], "max score": summary["max_score"].round(4),
        "mean score": summary["mean_score"].round(4), "at (s)": summary["best_window_start_s"].round(2),
        "windows ≥ 0.5": summary["windows_at_or_above"],
    })
    return table[SPECIES_COLUMNS]


def timeline_figure(view: FileView | None) -> go.Figure:
    """Heatmap of the top species' scores over time (one column per analysis window)."""
    fig = go.Figure()
    if view is None or not view.timeline_labels:
        fig.add_annotation(text="No species scores (this model has no classifier)" if view else "No file",
                           showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
        fig.update_layout(height=260, xaxis_visible=False, yaxis_visible=False, template="plotly_white")
        return fig
    fig.add_trace(go.Heatmap(
        # bin edges (one more than columns): each cell spans its analysis window in seconds
        x=view.timeline_edges, y=view.timeline_labels, z=view.timeline_scores, colorscale="Viridis", zmin=0,
        zmax=1, colorbar=dict(title="score"),
        hovertemplate="%{y}<br>%{x:.1f} s<br>score %{z:.3f}<extra></extra>",
    ))
    fig.update_layout(
        title=f"Detections over time · {view.name}", xaxis_title="time (s)",
        yaxis=dict(autorange="reversed"), height=120 + 28 * len(view.timeline_labels), template="plotly_white",
        margin=dict(l=10, r=10, t=50, b=40),
    )
    return fig


def resolve_inputs(files: list[str] | str | None, example: str | None = None) -> list[Path]:
    """Uploaded paths plus the chosen bundled example (by file name)."""
    paths = [Path(p) for p in ([files] if isinstance(files, str) else (files or []))]
    if example:
        matches = [p for p in example_recordings() if p.name == example]
        if not matches:
            raise UserFacingError(f"unknown example '{example}'")
        paths.append(matches[0])
    if not paths:
        raise UserFacingError("add one or more recordings (drag them onto the upload box) or pick an example")
    return paths


def analyse(
    files: list[str] | str | None,
    model_name: str,
    top_k: int = 5,
    example: str | None = None,
    progress: Any = None,
) -> AnalysisResult:
    """Run ``model_name`` on every file; per-file views, error messages and download files."""
    from rl_core.audio import audio_info
    from rl_core.inference import (
        analyse_recording,
        predictions_csv,
        raven_selection_table,
        save_embeddings_npz,
        unique_names,
    )

    paths = resolve_inputs(files, example)
    top_k = int(top_k)
    if not 1 <= top_k <= 50:
        raise UserFacingError(f"top-k must be between 1 and 50, got {top_k}")
    report = progress_adapter(progress)
    report(0.0, f"loading {model_name}")
    try:
        model = get_model(model_name)
    except Exception as exc:  # noqa: BLE001 - the whole request fails with a readable message
        raise UserFacingError(describe_error(exc, f"model {model_name} could not be loaded")) from None
    out = new_output_dir("inference")
    analysis = AnalysisResult(model=model_name)
    results = []
    limits = analysis_limits()
    # two uploads with one name (song.wav twice) become song.wav and song (2).wav in every output
    names = unique_names([display_name(p) for p in paths])
    for i, (path, name) in enumerate(zip(paths, names)):

        def file_progress(fraction: float, message: str = "", i: int = i, name: str = name) -> None:
            report((i + fraction) / len(paths), f"{name}: {message}" if message else name)

        try:
            check_file_size(path)
            info = audio_info(path)  # the one header read of this request
            result = analyse_recording(model, path, name=name, info=info, limits=limits, progress=file_progress)
            has_scores = result.has_scores
            preview = read_preview(path, info)  # the first minute, decoded once for the image and the player
            spec_path = spectrogram_image(path, out / f"{i:03d}_spectrogram.png", title=name, preview=preview)
            audio, caption = playable_audio(path, out, info=info, preview=preview, name=name)
        except Exception as exc:  # noqa: BLE001 - reported by name, the other files go on
            analysis.errors.append(describe_error(exc, name))
            continue
        timeline = result.timeline(TIMELINE_SPECIES)
        analysis.files[name] = FileView(
            name=name, duration_s=float(result.duration_s),
            species=species_table(result, top_k) if has_scores else pd.DataFrame(columns=SPECIES_COLUMNS),
            timeline_starts=timeline.starts, timeline_edges=timeline.edges, timeline_labels=timeline.labels,
            timeline_scores=timeline.scores.round(4).tolist(),
            spectrogram=str(spec_path), audio=audio, audio_caption=caption,
        )
        results.append(result)
        if has_scores:
            raven = out / f"{Path(name).stem}.selections.txt"
            raven.write_text(raven_selection_table(result, top_k))
            analysis.downloads.append(str(raven))

    report(1.0, "writing downloads")
    if results and all(r.has_scores for r in results):
        csv_path = out / "predictions.csv"
        csv_path.write_text(predictions_csv(results, top_k))
        analysis.downloads.insert(0, str(csv_path))
    if any(r.embeddings is not None for r in results):
        npz_path = save_embeddings_npz(results, out / "embeddings.npz", model=model_name)
        analysis.downloads.append(str(npz_path))
    analysis.summary = pd.DataFrame([
        [v.name, round(v.duration_s, 2), len(r.starts),
         v.species.iloc[0]["scientific name"] if len(v.species) else "",
         v.species.iloc[0]["common name"] if len(v.species) else "",
         float(v.species.iloc[0]["max score"]) if len(v.species) else None]
        for v, r in zip(analysis.files.values(), results)
    ], columns=SUMMARY_COLUMNS)
    return analysis


# --------------------------------------------------------------------------- Gradio adapters
def _file_outputs(view: FileView | None) -> tuple:
    if view is None:
        return (pd.DataFrame(columns=SPECIES_COLUMNS), timeline_figure(None), None,
                gr.update(value=None, label="Listen"))
    return (view.species, timeline_figure(view), view.spectrogram,
            gr.update(value=view.audio, label=f"Listen · {view.audio_caption}"))


def on_run(files, example, model_name, top_k, progress=gr.Progress()):
    try:
        analysis = analyse(files, model_name, top_k, example=example or None, progress=progress)
    except Exception as exc:  # noqa: BLE001 - shown in the page, never a traceback
        raise gr.Error(describe_error(exc), print_exception=False) from None
    finally:
        release_memory()
    names = list(analysis.files)
    first = analysis.files[names[0]] if names else None
    if not names:
        gr.Warning("No file could be analysed; see the messages below.")
    return (
        analysis.message,
        analysis.summary,
        gr.update(choices=names, value=names[0] if names else None),
        *_file_outputs(first),
        analysis.downloads or None,
        {n: v for n, v in analysis.files.items()},
    )


def on_pick_file(name, views):
    return _file_outputs((views or {}).get(name))


def build() -> None:
    examples = [p.name for p in example_recordings()]
    gr.Markdown(
        "Drop one or more recordings (WAV, FLAC, OGG, MP3 ... at any sample rate) or pick a bundled example, "
        "choose a model and press **Analyse**. Scores are per analysis window; downloads hold every window."
    )
    with gr.Row():
        with gr.Column(scale=3):
            files = gr.File(file_count="multiple", label="Recordings", elem_id="inf-files", height=150)
            example = gr.Dropdown([("—", "")] + [(n, n) for n in examples], value="", label="…or a bundled example",
                                  elem_id="inf-example")
        with gr.Column(scale=2):
            model = gr.Dropdown(model_choices(), value=default_model(), label="Model", elem_id="inf-model")
            top_k = gr.Slider(1, 20, value=5, step=1, label="Species per file (top-k)")
            with gr.Row():
                run = gr.Button("Analyse", variant="primary", elem_id="inf-run", scale=3)
                clear = gr.ClearButton(value="Clear", scale=1)
    status = gr.Markdown(elem_id="inf-status")
    summary = gr.Dataframe(headers=SUMMARY_COLUMNS, interactive=False, label="All files", elem_id="inf-summary")
    pick = gr.Dropdown([], label="Show file", elem_id="inf-pick")
    with gr.Row():
        species = gr.Dataframe(headers=SPECIES_COLUMNS, interactive=False, label="Top species",
                               elem_id="inf-species", scale=3)
        audio = gr.Audio(type="filepath", label="Listen", interactive=False, scale=2, elem_id="inf-audio")
    timeline = gr.Plot(label="Detections timeline", elem_id="inf-timeline")
    spectrogram = gr.Image(type="filepath", label="Spectrogram", show_label=False, interactive=False,
                           elem_id="inf-spectrogram",
                           buttons=["download", "fullscreen"])
    downloads = gr.File(label="Downloads: predictions CSV, Raven selection tables, embeddings (.npz)",
                        file_count="multiple", interactive=False, elem_id="inf-downloads")
    views = gr.State({})
    clear.add([files, status, summary, pick, species, timeline, spectrogram, audio, downloads])
    run.click(
        on_run, [files, example, model, top_k],
        [status, summary, pick, species, timeline, spectrogram, audio, downloads, views],
        api_name="predict", concurrency_id=model_concurrency_id(), concurrency_limit=1,
    )
    pick.change(on_pick_file, [pick, views], [species, timeline, spectrogram, audio], api_visibility="private",
                queue=False)
