"""Embedding map tab: many recordings -> one embedding each -> a 2-D map coloured by label.

Inputs are uploaded files, a .zip whose folder names are the labels, an optional labels CSV (``file,label``),
or the bundled example set. Zips are checked before anything is written: absolute paths and ``..`` are
refused, and the file count and total uncompressed size are limited (zip bombs).
"""

from __future__ import annotations

import csv
import io
import logging
import lzma
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from rl_core.csv_safety import spreadsheet_safe
from ui.common import (
    EXAMPLES_DIR,
    SETTINGS,
    RequestCancelled,
    UserFacingError,
    analysis_limits,
    check_file_size,
    default_model,
    describe_error,
    display_name,
    get_model,
    model_choices,
    model_concurrency_id,
    model_slot,
    model_validator,
    new_output_dir,
    progress_adapter,
    request_scratch_dir,
)
from ui.malloc import release_memory

log = logging.getLogger(__name__)

UNLABELLED = "unlabelled"


@dataclass
class Item:
    path: Path
    name: str
    label: str


@dataclass
class MapResult:
    points: pd.DataFrame  # file, label, x, y
    figure: go.Figure
    errors: list[str] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        done = f"Mapped **{len(self.points)}** recordings ({self.points['label'].nunique()} labels)."
        if not self.errors:
            return done
        return done + f"\n\n**{len(self.errors)} file(s) left out:**\n" + "\n".join(f"- ⚠️ {e}" for e in self.errors)


def _audio_extensions() -> set[str]:
    from rl_core.audio import SUPPORTED_EXTENSIONS

    return {e.lower() for e in SUPPORTED_EXTENSIONS}


def safe_member_path(name: str) -> PurePosixPath:
    """A zip entry's path, refused when absolute or climbing out with '..' (zip slip)."""
    normal = name.replace("\\", "/")
    path = PurePosixPath(normal)
    if normal.startswith("/") or (len(normal) > 1 and normal[1] == ":") or path.is_absolute():
        raise UserFacingError(f"the zip was refused: entry '{name}' has an absolute path")
    if ".." in path.parts:
        raise UserFacingError(f"the zip was refused: entry '{name}' contains '..'")
    return path


def _check_member_readable(zip_name: str, info: zipfile.ZipInfo) -> None:
    """Refuse entries that zipfile cannot unpack, before anything is written."""
    if info.flag_bits & 0x1:
        raise UserFacingError(f"the zip {zip_name} was refused: entry '{info.filename}' is encrypted (password-"
                              f"protected); zip the recordings again without a password")
    if info.compress_type not in _READABLE_COMPRESSION:
        method = zipfile.compressor_names.get(info.compress_type, f"method {info.compress_type}")
        raise UserFacingError(f"the zip {zip_name} was refused: entry '{info.filename}' is compressed with "
                              f"{method}, which this server cannot unpack; zip it again with the usual "
                              f"'deflate' compression")


_READABLE_COMPRESSION = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def extract_zip(zip_path: str | Path, dest: Path) -> list[Item]:
    """Audio entries of a zip, written under ``dest``, labelled by their folder; limits checked first.

    On any error the files already written are removed."""
    limit_bytes = SETTINGS.max_total_mb * 1e6
    exts = _audio_extensions()
    zip_name = display_name(zip_path)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserFacingError(f"{zip_name} is not a readable zip file ({exc})") from None
    with archive:
        members = []
        for info in archive.infolist():
            path = safe_member_path(info.filename)  # checked for every entry, audio or not
            if info.is_dir() or path.name.startswith(".") or "__MACOSX" in path.parts:
                continue
            if path.suffix.lower() in exts:
                _check_member_readable(zip_name, info)
                members.append((info, path))
        if not members:
            raise UserFacingError(f"{zip_name} holds no audio files ({', '.join(sorted(exts))})")
        if len(members) > SETTINGS.max_files:
            raise UserFacingError(f"{zip_name} holds {len(members)} recordings; this server takes "
                                  f"at most {SETTINGS.max_files} per map")
        declared = sum(info.file_size for info, _ in members)
        if declared > limit_bytes:
            raise UserFacingError(f"{zip_name} unpacks to {declared / 1e6:.0f} MB; this server takes "
                                  f"at most {SETTINGS.max_total_mb:g} MB per map")
        items, written = [], 0
        try:
            for index, (info, path) in enumerate(members):
                target = dest / f"{index:05d}_{path.name}"
                items.append(Item(target, str(path), path.parent.name if len(path.parts) > 1 else UNLABELLED))
                with archive.open(info) as src, open(target, "wb") as out:
                    # count real bytes: a forged header must not let a bomb through
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > limit_bytes:
                            raise UserFacingError(f"{zip_name} unpacks to more than "
                                                  f"{SETTINGS.max_total_mb:g} MB; refused")
                        out.write(chunk)
        except BaseException as exc:
            for item in items:  # nothing half-unpacked stays on disk
                item.path.unlink(missing_ok=True)
            entry = items[-1].name if items else "?"
            if isinstance(exc, (zipfile.BadZipFile, zlib.error, EOFError, lzma.LZMAError, NotImplementedError)):
                reason = "its CRC check failed" if "CRC" in str(exc) else f"{type(exc).__name__}: {exc}"
                raise UserFacingError(f"the zip {zip_name} is damaged: entry '{entry}' cannot be unpacked "
                                      f"({reason}); copy or zip it again") from None
            if isinstance(exc, OSError):  # disk full, quota: the server's problem, said plainly
                raise UserFacingError(f"{zip_name} could not be unpacked on this server "
                                      f"({exc.strerror or type(exc).__name__}); try again later") from None
            raise
    return items


def read_labels_csv(path: str | Path) -> dict[str, str]:
    """``file,label`` rows (a header row is optional) -> {file name: label}."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserFacingError(f"the labels CSV {display_name(path)} could not be read ({exc})") from None
    labels = {}
    reader = csv.reader(io.StringIO(text))
    try:
        for row in reader:
            if len(row) < 2 or not row[0].strip():
                continue
            if row[0].strip().lower() in ("file", "filename", "path") and row[1].strip().lower() == "label":
                continue
            labels[PurePosixPath(row[0].strip().replace("\\", "/")).name] = row[1].strip()
    except csv.Error as exc:  # a field over csv.field_size_limit (128 kB), a NUL byte, an unclosed quote ...
        raise UserFacingError(f"the labels CSV {display_name(path)} could not be read at line {reader.line_num} "
                              f"({exc}); it should hold 'file,label' rows") from None
    if not labels:
        raise UserFacingError(f"the labels CSV {display_name(path)} has no 'file,label' rows")
    return labels


def example_set() -> list[Item]:
    """Bundled labelled recordings: 20 great-tit songs of two birds (pykanto), two storm-petrels, zebra finches."""
    from rl_core.datasets_bundled import great_tit_songs, storm_petrel_recordings, vocalpy_examples_dir
    from rl_core.errors import MissingDependencyError

    try:
        items = [Item(r.path, r.path.name, f"Great Tit {r.label}") for r in great_tit_songs()]
        items += [Item(p, p.name, "Storm-Petrel") for p in storm_petrel_recordings()]
        items += [Item(p, p.name, "Zebra Finch") for p in sorted(vocalpy_examples_dir().glob("*.wav"))
                  if p.name in {"samba.wav", "simple.wav", "bells.wav", "flashcam.wav"}]
        return items
    except MissingDependencyError:  # the data packages are absent: fall back to assets/examples
        return [Item(p, p.name, p.stem.rsplit("_", 1)[0]) for p in sorted(EXAMPLES_DIR.glob("*.wav"))]


def gather(files: list[str] | None, zip_file: str | None, labels_csv: str | None, use_examples: bool,
           workdir: Path) -> list[Item]:
    items: list[Item] = []
    if use_examples:
        items += example_set()
    if zip_file:
        check_file_size(zip_file)
        items += extract_zip(zip_file, workdir)
    exts = _audio_extensions()
    for f in files or []:
        path = Path(f)
        items.append(Item(path, display_name(path), UNLABELLED))
        if path.suffix.lower() not in exts:
            log.info("%s has an unexpected extension; it will be tried anyway", path.name)
    if labels_csv:
        labels = read_labels_csv(labels_csv)
        for item in items:
            item.label = labels.get(PurePosixPath(item.name).name, item.label)
    if not items:
        raise UserFacingError("add recordings, a .zip of labelled folders, or tick 'use the example set'")
    if len(items) > SETTINGS.max_files:
        raise UserFacingError(f"{len(items)} recordings given; this server maps at most {SETTINGS.max_files}")
    total = sum(i.path.stat().st_size for i in items if i.path.exists())
    if total > SETTINGS.max_total_mb * 1e6:
        raise UserFacingError(f"the recordings add up to {total / 1e6:.0f} MB; this server takes at most "
                              f"{SETTINGS.max_total_mb:g} MB per map")
    return items


def map_figure(points: pd.DataFrame, title: str) -> go.Figure:
    fig = px.scatter(points, x="x", y="y", color="label", custom_data=["file", "label"], title=title,
                     template="plotly_white")
    fig.update_traces(marker=dict(size=11, opacity=0.85, line=dict(width=1, color="white")),
                      hovertemplate="<b>%{customdata[0]}</b><br>label: %{customdata[1]}<extra></extra>")
    fig.update_layout(height=560, xaxis_title="", yaxis_title="", legend_title="label",
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def build_map(
    files: list[str] | None = None,
    zip_file: str | None = None,
    labels_csv: str | None = None,
    use_examples: bool = False,
    model_name: str | None = None,
    layer: str = "last_layer",
    pooling: str = "mean",
    method: str = "UMAP",
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    perplexity: float = 30.0,
    progress: Any = None,
) -> MapResult:
    """Embed every recording with ``model_name`` and project the embeddings to 2-D."""
    # a zip is unpacked into a folder that lives as long as this request (issue 16: they stayed for hours)
    with request_scratch_dir("map-unzip") as scratch:
        return _build_map(files, zip_file, labels_csv, use_examples, model_name, layer, pooling, method,
                          n_neighbors, min_dist, metric, perplexity, progress, scratch)


def _build_map(files, zip_file, labels_csv, use_examples, model_name, layer, pooling, method, n_neighbors,
               min_dist, metric, perplexity, progress, scratch: Path) -> MapResult:
    from rl_core.projection import CALL_MIN_PROB, call_embeddings, file_embedding, project

    model_name = model_name or default_model()
    report = progress_adapter(progress)
    items = gather(files, zip_file, labels_csv, use_examples, scratch)
    report(0.0, f"loading {model_name}")
    try:
        model = get_model(model_name)
    except Exception as exc:  # noqa: BLE001
        raise UserFacingError(describe_error(exc, f"model {model_name} could not be loaded")) from None
    layers = model.list_layers()
    if layer not in ("last_layer", "", None) and layer not in layers:
        offered = ", ".join(["last_layer", *layers])
        raise UserFacingError(f"unknown layer '{layer}' for {model_name}; choose one of: {offered}")
    per_call = model.detects_calls and layer in ("last_layer", "", None)  # BatDetect2: one point per call
    kept, vectors, errors = [], [], []
    for i, item in enumerate(items):
        def step(fraction: float, message: str = "", i: int = i) -> None:
            report(0.9 * (i + fraction) / len(items), f"embedding {i + 1}/{len(items)}: {item.name}")

        step(0.0)
        try:
            check_file_size(item.path)
            with model_slot(model):
                if per_call:
                    starts, features = call_embeddings(model, item.path, progress=step, limits=analysis_limits())
                    vectors += list(features)
                    kept += [replace(item, name=f"{item.name} @ {start:.3f} s") for start in starts]
                    continue
                vectors.append(file_embedding(model, item.path, layer=layer, pooling=pooling, progress=step,
                                              limits=analysis_limits()))
            kept.append(item)
        except RequestCancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - named, the rest go on
            errors.append(describe_error(exc, item.name))
    what = "calls" if per_call else "readable recordings"
    if len(kept) < 2:
        detail = ("; ".join(errors)) if errors else ""
        raise UserFacingError(f"a map needs at least 2 {what}, got {len(kept)}. {detail}".strip())
    report(0.92, f"projecting with {method}")
    matrix = np.stack(vectors)
    try:
        coords = project(matrix, method, n_neighbors=int(n_neighbors), min_dist=float(min_dist), metric=metric,
                         perplexity=float(perplexity))
    except Exception as exc:  # noqa: BLE001
        raise UserFacingError(describe_error(exc, f"{method} failed")) from None
    points = pd.DataFrame({
        "file": [i.name for i in kept], "label": [i.label for i in kept],
        "x": coords[:, 0].round(5), "y": coords[:, 1].round(5),
    })
    out = new_output_dir("map")
    csv_path = out / "map_coordinates.csv"
    spreadsheet_safe(points).to_csv(csv_path, index=False)
    npz_path = out / "map_embeddings.npz"
    np.savez_compressed(npz_path, files=np.array(points["file"]), label=np.array(points["label"]),
                        embeddings=matrix.astype(np.float32), coordinates=coords.astype(np.float32),
                        model=np.array(model_name), layer=np.array(layer), pooling=np.array(pooling),
                        method=np.array(method))
    title = (f"{method} of {model_name} call features · {len(points)} calls (detection probability ≥ "
             f"{CALL_MIN_PROB:g})"
             if per_call else f"{method} of {model_name} embeddings ({layer}, {pooling} pooling) · "
             f"{len(points)} recordings")
    report(1.0, "done")
    return MapResult(points, map_figure(points, title), errors, [str(csv_path), str(npz_path)])


@lru_cache(maxsize=32)
def layer_choices(model_name: str) -> list[str]:
    from rl_core.loading import list_model_layers

    try:
        return ["last_layer", *list_model_layers(model_name)]
    except Exception:  # noqa: BLE001 - a model that cannot be built offers its output only
        log.info("could not list the layers of %s", model_name, exc_info=True)
        return ["last_layer"]


# --------------------------------------------------------------------------- Gradio adapters
def on_build(files, zip_file, labels_csv, use_examples, model_name, layer, pooling, method, n_neighbors,
             min_dist, metric, perplexity, progress=gr.Progress()):
    try:
        result = build_map(files, zip_file, labels_csv, use_examples, model_name, layer, pooling, method,
                           n_neighbors, min_dist, metric, perplexity, progress=progress)
    except Exception as exc:  # noqa: BLE001
        raise gr.Error(describe_error(exc), print_exception=False) from None
    finally:
        release_memory()
    return result.message, result.figure, result.points, result.downloads


def on_model_change(model_name):
    return gr.update(choices=layer_choices(model_name) if model_name else ["last_layer"], value="last_layer")


def build() -> None:
    gr.Markdown(
        "Map many recordings into two dimensions: each recording becomes one embedding (its windows pooled), "
        "and similar sounds land close together. Upload files, or a **.zip whose folder names are the labels** "
        "(`bird_A/song1.wav` → label *bird_A*), optionally a labels CSV (`file,label`), or use the example set "
        "(20 great-tit songs from two birds, two storm-petrels, zebra finches). "
        f"Limits: {SETTINGS.max_files} recordings and {SETTINGS.max_total_mb:g} MB unpacked per map."
    )
    with gr.Row():
        with gr.Column(scale=3):
            files = gr.File(file_count="multiple", label="Recordings", elem_id="map-files", height=130)
            with gr.Row():
                zip_file = gr.File(file_types=[".zip"], label="…or a .zip (folders = labels)", elem_id="map-zip")
                labels_csv = gr.File(file_types=[".csv"], label="Labels CSV (optional)", elem_id="map-labels")
            use_examples = gr.Checkbox(label="Use the bundled example set", value=False, elem_id="map-examples")
        with gr.Column(scale=2):
            model = gr.Dropdown(model_choices(), value=default_model(), label="Model", elem_id="map-model")
            with gr.Row():
                layer = gr.Dropdown(["last_layer"], value="last_layer", label="Layer", allow_custom_value=True)
                pooling = gr.Radio(["mean", "max"], value="mean", label="Pooling over windows")
            method = gr.Radio(["UMAP", "PCA", "t-SNE"], value="UMAP", label="Projection", elem_id="map-method")
            with gr.Accordion("Projection parameters", open=False):
                n_neighbors = gr.Slider(2, 100, value=15, step=1, label="UMAP neighbours")
                min_dist = gr.Slider(0.0, 1.0, value=0.1, step=0.01, label="UMAP minimum distance")
                metric = gr.Dropdown(["euclidean", "cosine", "manhattan"], value="euclidean", label="Metric")
                perplexity = gr.Slider(2, 100, value=30, step=1, label="t-SNE perplexity")
            run = gr.Button("Build map", variant="primary", elem_id="map-run")
    status = gr.Markdown(elem_id="map-status")
    plot = gr.Plot(label="Embedding map", elem_id="map-plot")
    with gr.Row():
        points = gr.Dataframe(headers=["file", "label", "x", "y"], interactive=False, label="Coordinates",
                              max_height=300, scale=2)
        downloads = gr.File(label="Downloads: coordinates (CSV), embeddings (.npz)", file_count="multiple",
                            interactive=False, scale=1)
    run.click(
        on_build,
        [files, zip_file, labels_csv, use_examples, model, layer, pooling, method, n_neighbors, min_dist, metric,
         perplexity],
        [status, plot, points, downloads],
        api_name="embedding_map", concurrency_id=model_concurrency_id(), concurrency_limit=SETTINGS.model_workers,
        validator=model_validator(4),
    )
    # layers are listed from the architecture on the meta device: no weights, no need for the model slot
    model.change(on_model_change, model, layer, api_visibility="private", queue=False)
