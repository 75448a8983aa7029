"""Regenerate leaderboard_data/published_results.csv and schema.json from the curated source file.

Usage: python leaderboard_data/build_published.py [--source PATH] [--check]
--check exits 1 when the committed files differ from what the source produces (for CI).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rl_core.leaderboard import build_published_table, default_source_csv, write_published


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None, help="published_results.csv of leaderboard_sources")
    parser.add_argument("--check", action="store_true", help="only compare with the committed files")
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parent
    table = build_published_table(args.source or default_source_csv())
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            write_published(table, tmp)
            same = all((Path(tmp) / n).read_bytes() == (here / n).read_bytes()
                       for n in ("published_results.csv", "schema.json"))
        sys.stdout.write("up to date\n" if same else "published_results.csv is stale: rerun build_published.py\n")
        return 0 if same else 1
    path = write_published(table, here)
    sys.stdout.write(f"wrote {len(table)} rows to {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
