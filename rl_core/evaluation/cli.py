"""Evaluation commands of ``python -m rl_core``: train, evaluate, benchmark.

``register_cli(subparsers)`` adds them to the main parser (rl_core/cli.py); ``python -m rl_core.evaluation.cli``
runs them on their own. Handlers return an exit code and print results as plain text/JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from rl_core.errors import RLCoreError


def cmd_train(args: argparse.Namespace) -> int:
    from rl_core.evaluation.experiments import train

    outcome = train(args.config, progress=not args.quiet)
    sys.stdout.write(json.dumps({"metrics": outcome.metrics, "classes": outcome.classes,
                                 "output_dir": str(outcome.output_dir), "n_train": outcome.n_train,
                                 "n_test": outcome.n_test}, indent=2) + "\n")
    return 0


def _print_results(results) -> None:
    for r in results:
        flag = " [RANDOM WEIGHTS]" if r.random_weights else ""
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in r.metrics.items())
        sys.stdout.write(f"{r.model}{flag} | {r.benchmark} | seed {r.seed} | {metrics} | "
                         f"{r.wall_time_s:.1f} s (cache {r.cache_hits} hits / {r.cache_misses} misses)\n")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rl_core.evaluation.experiments import evaluate

    results, rows = evaluate(args.config, progress=not args.quiet)
    _print_results(results)
    sys.stdout.write(f"{len(rows)} result rows\n")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from rl_core.evaluation.runner import BUNDLED_BENCHMARKS, models_with_weights, run_and_record

    if args.list:
        for spec in BUNDLED_BENCHMARKS.values():
            sys.stdout.write(f"{spec.name}: {spec.description}\n")
        sys.stdout.write(f"models with weights here: {', '.join(models_with_weights()) or 'none'}\n")
        return 0
    models = models_with_weights() if args.models is None else args.models
    if not models and not args.random_init:
        raise RLCoreError("no model has its weights on this machine; name one with --models")
    results, rows = run_and_record(models, args.benchmarks or list(BUNDLED_BENCHMARKS), seeds=args.seeds,
                                   cache_dir=args.cache_dir, leaderboard_dir=args.leaderboard_dir,
                                   write=not args.no_write, progress=not args.quiet,
                                   random_init=args.random_init)
    _print_results(results)
    if not args.no_write:
        sys.stdout.write(f"appended {len(rows)} rows to the local leaderboard\n")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the evaluation subcommands to ``python -m rl_core``."""
    train = subparsers.add_parser("train", help="fit a probe on a dataset (YAML config, see docs/evaluation.md)")
    train.add_argument("--config", required=True, help="EXP.yml (example: examples/train_probe.yml)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=cmd_train)

    evaluate = subparsers.add_parser("evaluate", help="benchmark protocol for models on benchmarks/datasets (YAML)")
    evaluate.add_argument("--config", required=True, help="EVAL.yml (example: examples/evaluate.yml)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(func=cmd_evaluate)

    bench = subparsers.add_parser("benchmark", help="run the bundled benchmarks and record local leaderboard rows")
    bench.add_argument("--list", action="store_true", help="list bundled benchmarks and models with weights")
    bench.add_argument("--models", nargs="*", help="registry keys (default: every model whose weights are here)")
    bench.add_argument("--benchmarks", nargs="*", help="bundled benchmark names (default: all)")
    bench.add_argument("--random-init", nargs="*", default=[], metavar="MODEL",
                       help="also run these architectures with seeded random weights (labelled baselines)")
    bench.add_argument("--seeds", nargs="*", type=int, default=[0])
    bench.add_argument("--cache-dir", default=None, help="embedding cache folder")
    bench.add_argument("--leaderboard-dir", default=None, help="default: leaderboard_data/")
    bench.add_argument("--no-write", action="store_true", help="do not append to the leaderboard")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.set_defaults(func=cmd_benchmark)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl_core.evaluation.cli")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except RLCoreError as err:
        if args.debug:
            raise
        sys.stderr.write(f"error: {err}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
