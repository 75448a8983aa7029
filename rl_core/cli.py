"""Command line: ``python -m rl_core list-models | describe | predict | embed | analyse | export | search | label |
train-classifier | classify`` (+ evaluation).

Errors print one line naming the file and the reason and exit non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from rl_core.atomic import write_text_atomic
from rl_core.errors import RLCoreError

log = logging.getLogger("rl_core.cli")


def cmd_list_models(args: argparse.Namespace) -> int:
    from rl_core import list_models

    list_models()
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from rl_core import describe_model

    describe_model(args.name, verbose=True)
    return 0


def _run_files(args: argparse.Namespace, want_scores: bool):
    """Run the model on each file; bad files are reported and skipped so the others still finish."""
    from rl_core.cache import get_model
    from rl_core.inference import AnalysisLimits, analyse_recording, unique_names

    classifier = _load_classifier(args)  # a classifier of another backbone is refused before any model loads
    model = get_model(args.model, device=args.device)
    if want_scores and not model.has_classifier and classifier is None:
        raise RLCoreError(f"model '{args.model}' has no classifier head: use `embed` for its embeddings, "
                          "or give --classifier FILE (a classifier trained on its embeddings)")
    want_scores = want_scores and model.has_classifier
    class_mask = None
    if want_scores and getattr(args, "lat", None) is not None:
        from rl_core.birdnet_location import expected_species_mask

        if model.name != "birdnet" or args.lon is None or args.week is None:
            raise RLCoreError("--lat/--lon/--week (BirdNET's location filter) need all three and a BirdNET model")
        class_mask = expected_species_mask(args.lat, args.lon, args.week)
    limits = AnalysisLimits(max_duration_s=args.max_duration, max_windows=args.max_windows)
    keep_top = args.top_k if want_scores else None
    results, failures = [], 0
    for file, name in zip(args.files, unique_names([Path(f).name for f in args.files])):
        try:
            results.append(analyse_recording(model, file, name=name, hop_s=args.hop, want_scores=want_scores,
                                             want_embeddings=classifier is not None or not want_scores, class_mask=class_mask,
                                             limits=limits, keep_top=keep_top))
        except RLCoreError as err:
            failures += 1
            named = str(err).startswith((str(file), Path(file).name))  # rl_core's messages begin with the file
            print(f"error: {err}" if named else f"error: {file}: {err}", file=sys.stderr)
            if args.debug:
                raise
    return results, failures


def _load_classifier(args: argparse.Namespace):
    """The --classifier of predict (None without one), checked against the model."""
    if not getattr(args, "classifier", None):
        return None
    from rl_core.custom_classifier import load_for_backbone

    classifier = load_for_backbone(args.classifier, args.model)
    args.loaded_classifier = classifier
    return classifier


def cmd_predict(args: argparse.Namespace) -> int:
    from rl_core.exports import predictions_csv

    results, failures = _run_files(args, want_scores=True)
    classifier = getattr(args, "loaded_classifier", None)
    extra = None
    if classifier is not None:  # custom classes beside the backbone's, per window
        from rl_core.custom_classifier import classifier_table

        extra = [classifier_table(classifier, r, args.min_score, Path(args.classifier).stem) for r in results]
    text = predictions_csv(results, k=args.top_k, min_score=args.min_score, extra=extra)
    if args.csv:
        write_text_atomic(text, Path(args.csv))
        print(f"wrote predictions for {len(results)} file(s) to {args.csv}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 1 if failures else 0


def cmd_embed(args: argparse.Namespace) -> int:
    from rl_core.exports import save_embeddings_npz

    results, failures = _run_files(args, want_scores=False)
    if results:
        save_embeddings_npz(results, args.out, model=args.model)
        rows = sum(r.num_windows for r in results)
        print(f"wrote {rows} window embedding(s) of dim {results[0].embeddings.shape[1]} from {len(results)} "
              f"file(s) to {args.out}", file=sys.stderr)
    return 1 if failures or not results else 0


def _number(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse type: ``kind`` within [low, high] (``low_open``: above low), so bad values get argparse's
    one-line usage error instead of a traceback or a silent empty result."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low)) or (
                high is not None and value > high):
            if low_open and high is None:
                raise argparse.ArgumentTypeError(f"must be above {low:g}, got {text}")
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text}" if high is not None
                                             else f"must be at least {low:g}, got {text}")
        return value
    return parse


def cmd_analyse(args: argparse.Namespace) -> int:
    """Analyse folders into a project; resumable; exit 0 all done, 1 some files failed, 130 interrupted."""
    from rl_core.project import RunSettings, analyse_project

    settings = RunSettings(model=args.model, hop_s=args.hop, precision=args.precision, score_floor=args.score_floor,
                           embeddings=not args.no_embeddings)
    summary = analyse_project(args.dirs, args.project, settings, workers=args.workers, engine=args.engine,
                              address=args.address, retry_failed=args.retry_failed, show_bar=not args.quiet,
                              commit_every_files=args.commit_every)
    for path, reason in summary.failures[:20]:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    if len(summary.failures) > 20:
        print(f"... and {len(summary.failures) - 20} more in the project's failures table", file=sys.stderr)
    print(summary.message(), file=sys.stderr)
    if args.classifier:
        from rl_core.custom_classifier import CustomClassifier
        from rl_core.project.search import store_classifier_scores

        classifier = CustomClassifier.load(args.classifier)
        stored = store_classifier_scores(args.project, classifier, Path(args.classifier).stem, run_id=settings.run_id)
        print(f"classifier {Path(args.classifier).stem}: {stored} window score(s) >= 0.5 stored in the project's "
              "custom_scores table", file=sys.stderr)
    return summary.exit_code


def _write_table(frame, csv: str | None, what: str) -> None:
    if csv:
        write_text_atomic(frame.to_csv(index=False), Path(csv))
        print(f"wrote {len(frame)} {what} to {csv}", file=sys.stderr)
    else:
        sys.stdout.write(frame.to_csv(index=False))


def cmd_search(args: argparse.Namespace) -> int:
    from rl_core.project.search import search

    found = search(args.project, args.clips, top_n=args.top, run_id=args.run, folders=args.folder,
                   date_from=args.date_from, date_to=args.date_to)
    _write_table(found[["file", "start_s", "end_s", "similarity"]].round({"similarity": 4}), args.csv, "result(s)")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from rl_core.project.search import QueryClip, add_labels

    rows = []
    for text in args.windows:
        clip = QueryClip.parse(text)
        if clip.file is None or clip.window_index is None:
            raise RLCoreError(f"{text}: give a window as FILE#WINDOW_INDEX (the file as search results list it)")
        rows.append(clip)
    from rl_core.project.search import window_keys

    stored = add_labels(args.project, window_keys(args.project, rows, args.run), args.class_name, args.verdict,
                        source=args.source, run_id=args.run)
    print(f"stored {stored} {args.verdict} label(s) for '{args.class_name}'", file=sys.stderr)
    return 0


def cmd_train_classifier(args: argparse.Namespace) -> int:
    import json

    from rl_core.project.search import train_project_classifier

    classifier = train_project_classifier(args.project, run_id=args.run, classes=args.classes,
                                          random_negatives=args.random_negatives)
    weights, card = classifier.save(args.out)
    print(json.dumps(classifier.card.metrics, indent=1), file=sys.stderr)
    print(f"wrote {weights} and {card}", file=sys.stderr)
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from rl_core.custom_classifier import CustomClassifier
    from rl_core.project.search import apply_classifier

    ranked, _scores = apply_classifier(args.project, CustomClassifier.load(args.classifier), run_id=args.run,
                                       top_n=args.top, class_name=args.class_name)
    _write_table(ranked[["file", "start_s", "end_s", "class_name", "score", "label"]].round({"score": 4}), args.csv,
                 "ranked window(s)")
    return 0


def _detection_filter(args: argparse.Namespace):
    from rl_core.detection_filters import DetectionFilter, read_species_list

    species = read_species_list(args.slist) if args.slist else None
    merge = None if args.merge_consecutive == 0 else args.merge_consecutive
    return DetectionFilter(min_conf=args.min_conf, sensitivity=args.sensitivity, lat=args.lat, lon=args.lon,
                           week=args.week, location_threshold=args.sf_thresh, species_list=species,
                           language=args.locale, merge_consecutive=merge)


def cmd_export(args: argparse.Namespace) -> int:
    from rl_core.project.exports import export_project

    flt = _detection_filter(args)
    if args.calibrated:
        from rl_core.project.search import calibrated_filter

        flt = calibrated_filter(flt, args.project, args.run)
    written = export_project(args.project, args.out, formats=args.format, flt=flt, run_id=args.run,
                             folders=args.folder, files=args.file)
    for fmt, paths in written.items():
        print(f"{fmt}: {len(paths)} file(s) under {args.out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from rl_core.inference import AnalysisLimits

    parser = argparse.ArgumentParser(prog="python -m rl_core", description="Bioacoustic representation models.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list-models", help="table of registered models").set_defaults(func=cmd_list_models)
    describe = sub.add_parser("describe", help="details of one model")
    describe.add_argument("name")
    describe.set_defaults(func=cmd_describe)

    def add_run_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="registry name, e.g. birdnet_v2_4")
        p.add_argument("files", nargs="+", help="audio files (wav, flac, ogg, mp3, ...)")
        p.add_argument("--hop", type=_number(float, 0, low_open=True), default=None,
                       help="seconds between windows (default: window length)")
        p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
        p.add_argument("--max-duration", type=float, default=AnalysisLimits.max_duration_s, metavar="SECONDS",
                       help="longest recording analysed (default: %(default)g s)")
        p.add_argument("--max-windows", type=int, default=AnalysisLimits.max_windows, metavar="N",
                       help="most analysis windows per recording (default: %(default)d)")

    predict = sub.add_parser("predict", help="top-k classes per window as CSV")
    add_run_args(predict)
    predict.add_argument("--top-k", type=_number(int, 1), default=5, help="classes per window (at least 1)")
    predict.add_argument("--min-score", type=_number(float, 0.0, 1.0), default=0.0, help="drop scores below (0-1)")
    predict.add_argument("--csv", help="write the CSV here instead of stdout")
    predict.add_argument("--lat", type=_number(float, -90.0, 90.0),
                         help="BirdNET location filter: latitude of the recording site")
    predict.add_argument("--lon", type=_number(float, -180.0, 180.0), help="BirdNET location filter: longitude")
    predict.add_argument("--week", type=_number(int, 1, 48),
                         help="BirdNET location filter: week of year, 1-48 (4 per month)")
    predict.add_argument("--classifier", default=None, metavar="FILE",
                         help="also score each window with your classifier (.safetensors with its .yaml card)")
    predict.set_defaults(func=cmd_predict)

    embed = sub.add_parser("embed", help="window embeddings of each file, saved as .npz (layout: README)")
    add_run_args(embed)
    embed.add_argument("--out", required=True, help="output .npz path")
    embed.set_defaults(func=cmd_embed)

    from rl_core.detection_filters import DEFAULT_LOCATION_THRESHOLD, DEFAULT_MIN_CONF, DEFAULT_SENSITIVITY
    from rl_core.project.exports import FORMATS
    from rl_core.project.store import DEFAULT_SCORE_FLOOR

    analyse = sub.add_parser("analyse", help="analyse folders of recordings into a resumable project (DuckDB store)")
    analyse.add_argument("dirs", nargs="+", metavar="DIR", help="folders of recordings (searched recursively)")
    analyse.add_argument("--project", required=True, help="project folder (created if missing; reused to resume)")
    analyse.add_argument("--model", default="birdnet_v2_4", help="registry name (default birdnet_v2_4)")
    analyse.add_argument("--hop", type=float, default=None, help="seconds between windows (default: window length)")
    analyse.add_argument("--workers", type=int, default=None, help="worker processes (default: one per physical core)")
    analyse.add_argument("--engine", choices=["local", "ray"], default="local", help="local processes or a Ray cluster")
    analyse.add_argument("--address", default=None, help="Ray cluster address (e.g. auto or ray://head:10001)")
    analyse.add_argument("--retry-failed", action="store_true", help="analyse files that failed before again")
    analyse.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    analyse.add_argument("--score-floor", type=float, default=DEFAULT_SCORE_FLOOR,
                         help=f"store scores at or above this (default {DEFAULT_SCORE_FLOOR}; filters apply later)")
    analyse.add_argument("--no-embeddings", action="store_true", help="store scores only")
    analyse.add_argument("--commit-every", type=int, default=32, metavar="N",
                         help="commit finished files to the store every N files (or 5 s); a hard kill loses at most these")
    analyse.add_argument("--quiet", action="store_true", help="no progress bar")
    analyse.add_argument("--classifier", default=None, metavar="FILE",
                         help="after the analysis, score every window with your classifier (custom_scores table)")
    analyse.set_defaults(func=cmd_analyse)

    export = sub.add_parser("export", help="filtered detections of a project as CSV, Raven, Audacity, Kaleidoscope, ...")
    export.add_argument("project", help="project folder made by `analyse`")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--format", nargs="+", choices=FORMATS, default=list(FORMATS))
    export.add_argument("--run", default=None, help="run id (default: the latest run)")
    export.add_argument("--folder", action="append", default=None, help="only this folder (site); repeatable")
    export.add_argument("--file", action="append", default=None, help="only this file (relative path); repeatable")
    export.add_argument("--min-conf", "--min_conf", type=float, default=DEFAULT_MIN_CONF)
    export.add_argument("--sensitivity", type=float, default=DEFAULT_SENSITIVITY, help="0.5-1.5 as in BirdNET-Analyzer")
    export.add_argument("--lat", type=float, default=None)
    export.add_argument("--lon", type=float, default=None)
    export.add_argument("--week", type=int, default=None, help="1-48 (four per month), -1 year-round")
    export.add_argument("--sf-thresh", "--sf_thresh", type=float, default=DEFAULT_LOCATION_THRESHOLD,
                        help="location-filter threshold (default 0.03)")
    export.add_argument("--slist", default=None, help="species list file (one scientific name per line)")
    export.add_argument("--locale", default="en", help="language of common names (e.g. de, fr, pt_BR)")
    export.add_argument("--merge-consecutive", "--merge_consecutive", type=int, default=1,
                        help="max windows merged into one detection (1: none, 0: no limit)")
    export.add_argument("--calibrated", action="store_true",
                        help="use each species' calibrated threshold (from reviewed detections) instead of --min-conf")
    export.set_defaults(func=cmd_export)

    search = sub.add_parser("search", help="windows of a project most similar to query clips")
    search.add_argument("clips", nargs="+", metavar="CLIP",
                        help="an audio file, FILE@START-END (seconds of a project file) or FILE#WINDOW; "
                             "several clips are averaged")
    search.add_argument("--project", required=True, help="project folder made by `analyse` (with embeddings)")
    search.add_argument("--top", type=int, default=20, help="how many windows (default 20)")
    search.add_argument("--csv", default=None, help="write the results here instead of stdout")
    search.add_argument("--run", default=None, help="run id (default: the latest run)")
    search.add_argument("--folder", action="append", default=None, help="only this folder (site); repeatable")
    search.add_argument("--from", dest="date_from", default=None, help="only recordings from this date (YYYY-MM-DD)")
    search.add_argument("--to", dest="date_to", default=None, help="only recordings up to this date (YYYY-MM-DD)")
    search.set_defaults(func=cmd_search)

    label = sub.add_parser("label", help="store verdicts on project windows (FILE#WINDOW)")
    label.add_argument("windows", nargs="+", metavar="FILE#WINDOW")
    label.add_argument("--project", required=True)
    label.add_argument("--class", dest="class_name", required=True, help="the call or species the verdict is about")
    label.add_argument("--verdict", choices=["positive", "negative", "unsure"], required=True)
    label.add_argument("--source", choices=["search", "review", "classifier"], default="search")
    label.add_argument("--run", default=None)
    label.set_defaults(func=cmd_label)

    train = sub.add_parser("train-classifier", help="train your own classifier on a project's labelled windows")
    train.add_argument("--project", required=True)
    train.add_argument("--out", required=True, help="where to save it (NAME -> NAME.safetensors + NAME.yaml)")
    train.add_argument("--classes", nargs="+", default=None, help="class names to train (default: every labelled one)")
    train.add_argument("--random-negatives", type=int, default=0,
                       help="also take this many unlabelled windows at random as negatives")
    train.add_argument("--run", default=None)
    train.set_defaults(func=cmd_train_classifier)

    classify = sub.add_parser("classify", help="rank every window of a project by a saved classifier")
    classify.add_argument("--project", required=True)
    classify.add_argument("--classifier", required=True, metavar="FILE")
    classify.add_argument("--class", dest="class_name", default=None, help="which of its classes (default: the first)")
    classify.add_argument("--top", type=int, default=100)
    classify.add_argument("--csv", default=None)
    classify.add_argument("--run", default=None)
    classify.set_defaults(func=cmd_classify)

    try:
        from rl_core.evaluation.cli import register_cli
    except ImportError:  # evaluation commands are optional extras of the package layout
        register_cli = None
    if register_cli is not None:
        register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not hasattr(args, "debug"):
        args.debug = False
    try:
        return int(args.func(args) or 0)
    except RLCoreError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a bug or an unforeseen input: still one line, traceback with --debug
        if args.debug:
            raise
        log.debug("unexpected error", exc_info=True)
        print(f"error: unexpected {type(err).__name__}: {err} (run with --debug for the traceback)", file=sys.stderr)
        return 2
