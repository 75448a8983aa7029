"""The "Find & train" tab: search a project for similar calls, label results, review detections, train a classifier.

Display and wiring only: every search is :mod:`rl_core.project.search`, every label, calibration and training step
:mod:`rl_core.project.labelling`, the map of a project's windows :mod:`rl_core.project.window_map`.
Projects are the ones of the Projects tab (same folder, same name rules: :mod:`ui.projects`).
"""

from __future__ import annotations

import logging

import gradio as gr
import pandas as pd

from ui.common import UserFacingError, check_file_size, describe_error, new_output_dir
from ui.projects import list_projects, project_dir

log = logging.getLogger(__name__)

#: a result: ``class_name`` is the classifier class a ranked window is scored for (empty for searches and the map)
ITEM_COLUMNS = ["file", "start_s", "end_s", "score", "class_name", "label", "folder", "recorded_at", "file_id",
                "window_index"]
EVERY_CLASS = "every class (each window's best)"
LABEL_COLUMNS = ["file", "start_s", "end_s", "class_name", "label", "source", "created_at"]
NEXT_COLUMNS = ITEM_COLUMNS + ["why"]
#: p / n / u mark the selected result when the tab is visible and no text field has the focus. Keys pressed while a
#: verdict is being saved wait their turn: Gradio ignores a button's clicks while its previous event runs, and the next
#: verdict must see the selection that the previous one advanced to. ``VERDICT_DONE_JS`` ends each verdict's turn.
KEYBOARD_JS = """
() => {
  if (window.__simKeys) return; window.__simKeys = true;
  const ids = {p: 'sim-positive', n: 'sim-negative', u: 'sim-unsure'};
  const waiting = [];
  let busySince = 0;
  const busy = () => busySince && Date.now() - busySince < 60000;
  const next = () => {
    if (busy() || !waiting.length) return;
    const button = document.getElementById(waiting.shift());
    if (button) button.click(); else next();
  };
  window.__simVerdictDone = () => { busySince = 0; next(); };
  document.addEventListener('click', (e) => {
    const button = e.target && e.target.closest && e.target.closest('#sim-positive, #sim-negative, #sim-unsure');
    if (button) busySince = Date.now();
  }, true);
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
    const root = document.getElementById('sim-root');
    if (!root || root.offsetParent === null || e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const id = ids[(e.key || '').toLowerCase()];
    if (id && document.getElementById(id)) { e.preventDefault(); waiting.push(id); next(); }
  });
}
"""
VERDICT_DONE_JS = "() => { if (window.__simVerdictDone) window.__simVerdictDone(); }"


def _store(name: str):
    """The project, opened read-write without schema changes (the same DuckDB instance as a running analysis)."""
    from rl_core.project import ProjectStore

    if not name:
        raise UserFacingError("choose a project (analyse one in the Projects tab first)")
    folder = project_dir(name)
    if not (folder / "project.duckdb").is_file():
        raise UserFacingError(f"project '{name}' has no analysis yet: analyse recordings in the Projects tab")
    return ProjectStore(folder, shared=True)


def _items(frame: pd.DataFrame, score_column: str) -> pd.DataFrame:
    out = frame.rename(columns={score_column: "score"}).copy()
    for column in ("label", "class_name"):
        if column not in out.columns:
            out[column] = ""
    out["score"] = out["score"].astype(float).round(4)
    out["recorded_at"] = out["recorded_at"].astype(str).replace({"NaT": "", "None": ""})
    out["file_id"] = out["file_id"].astype(str)  # 60-bit ids: a browser's numbers would round them
    return out[ITEM_COLUMNS].fillna({"label": "", "class_name": ""})


def project_overview(name: str) -> tuple[str, list[str], list[str], list[str], pd.DataFrame]:
    """(summary, files, folders, species with detections, labels) of the project's latest run."""
    from rl_core.project.labelling import labels

    with _store(name) as store:
        run = store.default_run()
        settings = store.run_settings(run)
        files = store.files(run)["rel_path"].tolist()
        species = [r[0] for r in store.con.execute(
            "select c.scientific_name from scores s join classes c using (run_id, class_index) where s.run_id = ? "
            "and s.score >= 0.25 group by 1 order by count(*) desc limit 300", [run]).fetchall()]
        done = labels(store, run)
        summary = store.summary(run)
        folders = store.folders(run)
    text = (f"Run **{run}**: {settings['model']}, {summary['files_done']} file(s), {summary['windows']} windows of "
            f"{settings['window_s']:g} s; {len(done)} label(s) so far.")
    return text, files, folders, species, done[LABEL_COLUMNS]


def run_search(name: str, uploads: list[str] | None, file: str | None, start: float | None, end: float | None,
               top: float, folders: list[str] | None, date_from: str, date_to: str) -> tuple[str, pd.DataFrame]:
    from rl_core.project.search import QueryClip, search

    clips = []
    for path in uploads or []:
        check_file_size(path)
        clips.append(QueryClip(path=str(path)))
    if file:
        if start is None or end is None:
            raise UserFacingError("give the start and end (seconds) of the time range in the chosen file")
        clips.append(QueryClip(file=file, start_s=float(start), end_s=float(end)))
    if not clips:
        raise UserFacingError("upload a clip, or choose a project file and a time range, to search with")
    with _store(name) as store:
        found = search(store, clips, top_n=int(top or 20), folders=folders or None,
                       date_from=(date_from or "").strip() or None, date_to=(date_to or "").strip() or None)
    what = ", ".join(c.describe() for c in clips)
    return f"{len(found)} window(s) most similar to {what} (cosine similarity, best first).", _items(found, "similarity")


def show_item(items: pd.DataFrame, index: float | None) -> tuple[str | None, str | None, str]:
    """A playable clip of the selected window and its spectrogram (kHz axis)."""
    from rl_core.project.search import write_clip
    from ui.spectrogram import spectrogram_image

    if items is None or len(items) == 0 or index is None:
        return None, None, "no result selected"
    i = int(index)
    if not 0 <= i < len(items):
        raise UserFacingError(f"no result #{i} (the list has {len(items)})")
    row = items.iloc[i]
    path = _path_of(row)
    out = new_output_dir("similar")
    clip = write_clip(path, float(row["start_s"]), float(row["end_s"]), out / f"clip_{i}.wav")
    title = f"#{i} {row['file']} {float(row['start_s']):g}-{float(row['end_s']):g} s"
    image = spectrogram_image(clip, out / f"clip_{i}.png", title=title)
    return str(clip), str(image), f"#{i}: {row['file']} at {float(row['start_s']):g}-{float(row['end_s']):g} s, " \
                                  f"score {row['score']}" + (f", marked {row['label']}" if row["label"] else "")


_PATHS: dict[int, str] = {}


def _path_of(row) -> str:
    """The recording of a listed window (looked up by file id in the project the row came from)."""
    path = _PATHS.get(int(row["file_id"]))
    if path is None:
        raise UserFacingError("this result is from an earlier page state: search again")
    return path


def _remember_paths(name: str, items: pd.DataFrame) -> None:
    with _store(name) as store:
        ids = [int(i) for i in items["file_id"]]
        for file_id, path in store.con.execute("select file_id, path from files where file_id in (select unnest(?))",
                                               [ids]).fetchall():
            _PATHS[int(file_id)] = path


def mark(name: str, items: pd.DataFrame, index: float | None, class_name: str, verdict: str, source: str):
    """Store a verdict on the selected window; returns (message, items with the label, labels, next index)."""
    from rl_core.project.labelling import add_labels, labels

    if items is None or len(items) == 0 or index is None:
        raise UserFacingError("select a result to label (click a row)")
    i = int(index)
    row = items.iloc[i]
    with _store(name) as store:
        add_labels(store, [{"file_id": int(row["file_id"]), "window_index": int(row["window_index"])}],
                   class_name, verdict, source=source or "search")
        done = labels(store)
    items = items.copy()
    items.loc[items.index[i], "label"] = verdict
    nxt = min(i + 1, len(items) - 1)
    return (f"#{i} marked {verdict} for '{class_name.strip()}' ({len(done)} label(s) in the project)", items,
            done[LABEL_COLUMNS], nxt)


def train(name: str, classes_text: str, random_negatives: float):
    """Train on the project's labels; (metrics, ranked windows, next clips to label, saved classifier files, the
    class chooser of the ranked list, the classifier)."""
    from rl_core.project.labelling import train_project_classifier

    classes = [c.strip() for c in (classes_text or "").split(",") if c.strip()] or None
    with _store(name) as store:
        classifier = train_project_classifier(store, classes=classes, random_negatives=int(random_negatives or 0))
    ranked_items, next_items = rank(name, classifier, EVERY_CLASS)
    card = classifier.card
    stem = "-".join(c.replace(" ", "_") for c in card.classes)[:60]
    classifier.save(project_dir(name) / "classifiers" / stem)  # kept with the project; a copy to download
    weights, card_path = classifier.save(new_output_dir("classifier") / stem)
    lines = [f"Trained a {card.probe_type} classifier on {card.backbone} embeddings in {card.train_seconds:.1f} s: "
             f"{sum(card.positives.values())} positive(s), {card.negatives} negative(s)."]
    for cls, m in card.metrics.items():
        lines.append(f"- **{cls}** (cross-validated): precision {m['precision']:.2f}, recall {m['recall']:.2f}, "
                     f"average precision {m['average_precision']:.2f}")
    if not card.metrics:
        lines.append("- too few labels for cross-validation (label at least 2 of each per fold)")
    chooser = gr.update(choices=[EVERY_CLASS, *card.classes], value=EVERY_CLASS,
                        visible=len(card.classes) > 1)
    return "\n".join(lines), ranked_items, next_items, [str(weights), str(card_path)], chooser, classifier


def rank(name: str, classifier, rank_by: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the 100 best windows, next clips to label) for one class of the classifier or each window's best class."""
    from rl_core.project.labelling import apply_classifier, suggest_to_label

    if classifier is None:
        raise UserFacingError("train a classifier first")
    class_name = None if not rank_by or rank_by == EVERY_CLASS else rank_by
    with _store(name) as store:
        ranked, _scores = apply_classifier(store, classifier, top_n=100, class_name=class_name)
        nxt = suggest_to_label(store, classifier, n=5, class_name=class_name)
    ranked_items = _items(ranked, "score")
    _remember_paths(name, ranked_items)
    next_items = _items(nxt, "score").assign(why=nxt["why"].to_numpy())
    _remember_paths(name, next_items)
    return ranked_items, next_items


def review(name: str, species: str, order: str, n: float) -> tuple[str, pd.DataFrame]:
    from rl_core.project.labelling import review_queue

    if not species:
        raise UserFacingError("choose a species to review")
    with _store(name) as store:
        queue = review_queue(store, species=species, n=int(n or 20), order="bins" if order.startswith("spread") else "score")
    items = _items(queue, "score")
    _remember_paths(name, items)
    return f"{len(items)} detection(s) of {species} to verify ({order}).", items


def calibrate(name: str, species: str, target: float) -> tuple[str, pd.DataFrame]:
    from rl_core.project.labelling import calibrate_species

    with _store(name) as store:
        calibration, bins = calibrate_species(store, species, target_precision=float(target))
    if calibration.threshold is None:
        text = f"No threshold for {species}: {calibration.note}."
    else:
        text = (f"Threshold for **{species}** at precision {calibration.target_precision:.2f}: "
                f"**{calibration.threshold:.3f}** (from {calibration.verified} verified, {calibration.correct} correct); "
                "saved in the project, used by exports with calibrated thresholds.")
    return text, bins


# --------------------------------------------------------------------------- Gradio wiring
def _guard(fn):
    def wrapped(*args):
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - shown to the user as one line
            raise gr.Error(describe_error(exc), print_exception=False) from None
    wrapped.__name__ = fn.__name__
    return wrapped


def on_project(name):
    if not name:
        return "", gr.update(choices=[]), gr.update(choices=[]), gr.update(choices=[]), pd.DataFrame(columns=LABEL_COLUMNS)
    text, files, folders, species, done = project_overview(name)
    return (text, gr.update(choices=files, value=None), gr.update(choices=folders, value=[]),
            gr.update(choices=species, value=None), done)


def on_search(*args):
    message, items = run_search(*args)
    _remember_paths(args[0], items)
    return message, items, "search", 0


def on_select(items, evt: gr.SelectData):
    index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    return int(index)


def build(demo: gr.Blocks) -> None:
    from ui import similar_map

    with gr.Column(elem_id="sim-root"):
        gr.Markdown(
            "Find more of a call in a project: search by a clip, listen, mark results **positive / negative / "
            "unsure** (keys **p / n / u**), train your own classifier on the marked windows in seconds, look at "
            "what it finds, label the suggested clips, retrain. Review a species' detections to calibrate its "
            "threshold. The project's stored embeddings are used: nothing is re-analysed.")
        with gr.Row():
            project = gr.Dropdown(list_projects(), value=None, allow_custom_value=True, label="Project",
                                  elem_id="sim-project")
            overview = gr.Markdown(elem_id="sim-overview")
        gr.Markdown("### Query")
        with gr.Row():
            uploads = gr.File(file_count="multiple", file_types=["audio"], label="Upload clip(s) (averaged)",
                              elem_id="sim-uploads", height=110)
            with gr.Column():
                file = gr.Dropdown([], value=None, label="…or a project file", elem_id="sim-file")
                with gr.Row():
                    start = gr.Number(value=0.0, label="Start (s)", elem_id="sim-start")
                    end = gr.Number(value=3.0, label="End (s)", elem_id="sim-end")
        with gr.Row():
            top = gr.Slider(1, 500, value=20, step=1, label="Results", elem_id="sim-top")
            folders = gr.Dropdown([], multiselect=True, label="Folders (none = all)", elem_id="sim-folders")
            date_from = gr.Textbox(label="From date (YYYY-MM-DD)", elem_id="sim-from")
            date_to = gr.Textbox(label="To date", elem_id="sim-to")
        search_button = gr.Button("Search", variant="primary", elem_id="sim-search")
        map_parts = similar_map.build_section()
        message = gr.Markdown(elem_id="sim-message")
        source = gr.State("search")
        items = gr.Dataframe(headers=ITEM_COLUMNS, interactive=False, elem_id="sim-items", max_height=360)
        with gr.Row():
            with gr.Column(scale=2):
                selected = gr.Number(value=0, precision=0, label="Selected result #", elem_id="sim-selected")
                player = gr.Audio(label="Clip", type="filepath", interactive=False, elem_id="sim-player")
                caption = gr.Markdown(elem_id="sim-caption")
            spectrogram = gr.Image(label="Spectrogram", type="filepath", interactive=False, elem_id="sim-spec")
        with gr.Row():
            class_name = gr.Textbox(label="Class name of the verdict", placeholder="e.g. Parus major, or my-call",
                                    elem_id="sim-class")
            positive = gr.Button("Positive (p)", variant="primary", elem_id="sim-positive")
            negative = gr.Button("Negative (n)", variant="stop", elem_id="sim-negative")
            unsure = gr.Button("Unsure (u)", elem_id="sim-unsure")
        label_message = gr.Markdown(elem_id="sim-label-message")
        with gr.Accordion("Labels in this project", open=False):
            labels_table = gr.Dataframe(headers=LABEL_COLUMNS, interactive=False, elem_id="sim-labels")

        gr.Markdown("### Your own classifier")
        with gr.Row():
            classes = gr.Textbox(label="Classes (comma-separated; empty = every labelled class)", elem_id="sim-classes")
            random_negatives = gr.Number(value=20, precision=0, minimum=0, label="Random windows as negatives",
                                         elem_id="sim-randneg")
            train_button = gr.Button("Train & rank", variant="primary", elem_id="sim-train")
        metrics = gr.Markdown(elem_id="sim-metrics")
        rank_by = gr.Dropdown([EVERY_CLASS], value=EVERY_CLASS, label="Rank the windows by", visible=False,
                              elem_id="sim-rank-by")
        classifier = gr.State(None)
        with gr.Accordion("Next clips to label (top unlabelled and most uncertain)", open=True):
            next_table = gr.Dataframe(headers=NEXT_COLUMNS, interactive=False, elem_id="sim-next")
            label_next = gr.Button("Label these", elem_id="sim-label-next")
        saved = gr.File(label="Classifier (.safetensors + .yaml card)", file_count="multiple", interactive=False,
                        elem_id="sim-saved")

        gr.Markdown("### Review a species' detections")
        with gr.Row():
            species = gr.Dropdown([], value=None, label="Species", elem_id="sim-species")
            order = gr.Radio(["highest scores first", "spread over score bins"], value="spread over score bins",
                             label="Queue", elem_id="sim-order")
            n_review = gr.Number(value=20, precision=0, minimum=1, label="Clips", elem_id="sim-nreview")
            review_button = gr.Button("Review queue", elem_id="sim-review")
        with gr.Row():
            target = gr.Slider(0.5, 0.99, value=0.9, step=0.01, label="Target precision", elem_id="sim-target")
            calibrate_button = gr.Button("Calibrate threshold", elem_id="sim-calibrate")
        calibration = gr.Markdown(elem_id="sim-calibration")
        bins = gr.Dataframe(headers=["score_from", "score_to", "verified", "correct", "precision"], interactive=False,
                            label="Verified detections per score band", elem_id="sim-bins")

    project.change(_guard(on_project), [project], [overview, file, folders, species, labels_table],
                   api_name="similar_project")
    show = dict(fn=_guard(show_item), inputs=[items, selected], outputs=[player, spectrogram, caption],
                api_visibility="private")
    search_button.click(_guard(on_search), [project, uploads, file, start, end, top, folders, date_from, date_to],
                        [message, items, source, selected], api_name="similar_search").success(**show)
    items.select(on_select, [items], [selected], api_visibility="private")
    selected.change(_guard(show_item), [items, selected], [player, spectrogram, caption], api_name="similar_show")
    for button, verdict in ((positive, "positive"), (negative, "negative"), (unsure, "unsure")):
        button.click(_guard(lambda n, it, i, c, s, v=verdict: mark(n, it, i, c, v, s)),
                     [project, items, selected, class_name, source], [label_message, items, labels_table, selected],
                     api_name=f"similar_mark_{verdict}").then(None, None, None, js=VERDICT_DONE_JS,
                                                              api_visibility="private")
    train_button.click(_guard(train), [project, classes, random_negatives],
                       [metrics, items, next_table, saved, rank_by, classifier],
                       api_name="similar_train").success(lambda: ("classifier", 0), None, [source, selected],
                                                         api_visibility="private").then(**show)
    rank_by.input(_guard(rank), [project, classifier, rank_by], [items, next_table], api_name="similar_rank").success(
        lambda: ("classifier", 0), None, [source, selected], api_visibility="private").then(**show)
    label_next.click(lambda t: (t[ITEM_COLUMNS], "classifier", 0), [next_table], [items, source, selected],
                     api_visibility="private").then(**show)
    review_button.click(_guard(review), [project, species, order, n_review], [message, items],
                        api_name="similar_review").success(lambda: ("review", 0), None, [source, selected],
                                                          api_visibility="private").then(**show)
    calibrate_button.click(_guard(calibrate), [project, species, target], [calibration, bins],
                           api_name="similar_calibrate")
    similar_map.wire(map_parts, dict(project=project, folders=folders, date_from=date_from, date_to=date_to, top=top,
                                     message=message, items=items, source=source, selected=selected, show=show,
                                     class_name=class_name, label_message=label_message, labels_table=labels_table))
    demo.load(lambda: gr.update(choices=list_projects()), None, [project], api_visibility="private")
    demo.load(None, None, None, js=KEYBOARD_JS)
