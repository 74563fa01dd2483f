"""``python -m einspace.tasks.fetch_syzygy --fetch [DIR]``: fetch the Syzygy tables of the
``chesseract_wdl`` task.

The command lives apart from the task module because importing ``einspace.tasks`` imports every
task module; running one of them with ``python -m`` would execute a second copy of it.
"""

from __future__ import annotations

import argparse
import sys

from .chesseract_wdl import ENV, fetch_syzygy_tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m einspace.tasks.fetch_syzygy",
                                     description="Fetch the Syzygy tables the task needs.")
    parser.add_argument("--fetch", nargs="?", const="", metavar="DIR",
                        help=f"download into DIR (default ${ENV} or ~/.cache/einspace/syzygy)")
    parser.add_argument("--sdist", help="use this local chess-*.tar.gz instead of pip download")
    args = parser.parse_args(argv)
    if args.fetch is None:
        parser.print_help()
        return 2
    print(fetch_syzygy_tables(args.fetch or None, args.sdist))
    return 0


if __name__ == "__main__":
    sys.exit(main())
