"""Command line: ``python -m rl_core list-models | describe | predict | embed | analyse | export`` (+ evaluation).

Errors print one line naming the file and the reason and exit non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
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
    from rl_core.inference import run_file

    model = get_model(args.model, device=args.device)
    if want_scores and not model.has_classifier:
        raise RLCoreError(f"model '{args.model}' has no classifier head: use `embed` for its embeddings")
    class_mask = None
    if want_scores and getattr(args, "lat", None) is not None:
        from rl_core.birdnet_location import expected_species_mask

        if model.name != "birdnet" or args.lon is None or args.week is None:
            raise RLCoreError("--lat/--lon/--week (BirdNET's location filter) need all three and a BirdNET model")
        class_mask = expected_species_mask(args.lat, args.lon, args.week)
    results, failures = [], 0
    for file in args.files:
        try:
            results.append(run_file(model, file, hop_s=args.hop, want_scores=want_scores, class_mask=class_mask))
        except RLCoreError as err:
            failures += 1
            print(f"error: {file}: {err}", file=sys.stderr)
            if args.debug:
                raise
    return results, failures


def cmd_predict(args: argparse.Namespace) -> int:
    from rl_core.inference import predictions_csv

    results, failures = _run_files(args, want_scores=True)
    text = predictions_csv(results, k=args.top_k, min_score=args.min_score)
    if args.csv:
        write_text_atomic(text, Path(args.csv))
        print(f"wrote predictions for {len(results)} file(s) to {args.csv}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 1 if failures else 0


def cmd_embed(args: argparse.Namespace) -> int:
    from rl_core.inference import save_embeddings_npz

    results, failures = _run_files(args, want_scores=False)
    if results:
        save_embeddings_npz(results, args.out)
        print(f"wrote {len(results)} embedding row(s) of dim {results[0].embeddings.shape[1]} to {args.out}",
              file=sys.stderr)
    return 1 if failures or not results else 0


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
    return summary.exit_code


def _detection_filter(args: argparse.Namespace):
    from rl_core.detection_filters import DetectionFilter, read_species_list

    species = read_species_list(args.slist) if args.slist else None
    merge = None if args.merge_consecutive == 0 else args.merge_consecutive
    return DetectionFilter(min_conf=args.min_conf, sensitivity=args.sensitivity, lat=args.lat, lon=args.lon,
                           week=args.week, location_threshold=args.sf_thresh, species_list=species,
                           language=args.locale, merge_consecutive=merge)


def cmd_export(args: argparse.Namespace) -> int:
    from rl_core.project.exports import export_project

    written = export_project(args.project, args.out, formats=args.format, flt=_detection_filter(args), run_id=args.run,
                             folders=args.folder, files=args.file)
    for fmt, paths in written.items():
        print(f"{fmt}: {len(paths)} file(s) under {args.out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
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
        p.add_argument("--hop", type=float, default=None, help="seconds between windows (default: window length)")
        p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")

    predict = sub.add_parser("predict", help="top-k classes per window as CSV")
    add_run_args(predict)
    predict.add_argument("--top-k", type=int, default=5)
    predict.add_argument("--min-score", type=float, default=0.0)
    predict.add_argument("--csv", help="write the CSV here instead of stdout")
    predict.add_argument("--lat", type=float, help="BirdNET location filter: latitude of the recording site")
    predict.add_argument("--lon", type=float, help="BirdNET location filter: longitude")
    predict.add_argument("--week", type=int, help="BirdNET location filter: week of year, 1-48 (4 per month)")
    predict.set_defaults(func=cmd_predict)

    embed = sub.add_parser("embed", help="one pooled embedding per file, saved as .npz")
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
    export.set_defaults(func=cmd_export)

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
