"""Command line: ``python -m rl_core list-models | describe | predict | embed`` (+ evaluation commands).

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
    from rl_core.inference import AnalysisLimits, analyse_recording, unique_names

    model = get_model(args.model, device=args.device)
    if want_scores and not model.has_classifier:
        raise RLCoreError(f"model '{args.model}' has no classifier head: use `embed` for its embeddings")
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
                                             want_embeddings=not want_scores, class_mask=class_mask,
                                             limits=limits, keep_top=keep_top))
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
        save_embeddings_npz(results, args.out, model=args.model)
        rows = sum(r.num_windows for r in results)
        print(f"wrote {rows} window embedding(s) of dim {results[0].embeddings.shape[1]} from {len(results)} "
              f"file(s) to {args.out}", file=sys.stderr)
    return 1 if failures or not results else 0


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
        p.add_argument("--hop", type=float, default=None, help="seconds between windows (default: window length)")
        p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
        p.add_argument("--max-duration", type=float, default=AnalysisLimits.max_duration_s, metavar="SECONDS",
                       help="longest recording analysed (default: %(default)g s)")
        p.add_argument("--max-windows", type=int, default=AnalysisLimits.max_windows, metavar="N",
                       help="most analysis windows per recording (default: %(default)d)")

    predict = sub.add_parser("predict", help="top-k classes per window as CSV")
    add_run_args(predict)
    predict.add_argument("--top-k", type=int, default=5)
    predict.add_argument("--min-score", type=float, default=0.0)
    predict.add_argument("--csv", help="write the CSV here instead of stdout")
    predict.add_argument("--lat", type=float, help="BirdNET location filter: latitude of the recording site")
    predict.add_argument("--lon", type=float, help="BirdNET location filter: longitude")
    predict.add_argument("--week", type=int, help="BirdNET location filter: week of year, 1-48 (4 per month)")
    predict.set_defaults(func=cmd_predict)

    embed = sub.add_parser("embed", help="window embeddings of each file, saved as .npz (layout: README)")
    add_run_args(embed)
    embed.add_argument("--out", required=True, help="output .npz path")
    embed.set_defaults(func=cmd_embed)

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
