"""`python -m harness.bundle build`: the bundle command without the whole CLI."""

import argparse
import logging
import sys

from harness.bundle.command import add_parser
from harness.errors import HarnessError


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m harness")
    add_parser(parser.add_subparsers(dest="command", required=True))
    argv = sys.argv[1:]
    verbose = "-v" in argv  # `python -m harness.bundle -v build` logs every command
    args = parser.parse_args(["bundle", *(arg for arg in argv if arg != "-v")])
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        return int(args.func(args))
    except HarnessError as exc:
        logging.getLogger("harness.bundle").error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
