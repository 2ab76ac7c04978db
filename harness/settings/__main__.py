"""``python3 -m harness.settings [--json]``: the Vagrantfile's entry point."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.settings.loading import (
    load,
    resolve,
)
from harness.settings.schema import (
    ROOT,
    SettingsError,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python3 -m harness.settings``: resolve settings for the Vagrantfile."""
    parser = argparse.ArgumentParser(
        prog="python3 -m harness.settings", description=main.__doc__
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="read the Vagrantfile's request (documents, environ, provider, "
        "active_providers, networks_conf, root) as JSON on stdin; print its plan",
    )
    args = parser.parse_args(argv)
    try:
        if args.json:
            request = json.load(sys.stdin)
            settings = resolve(
                request["documents"],
                request.get("environ") or {},
                root=Path(request.get("root") or ROOT),
                provider=request.get("provider"),
                active_providers=request.get("active_providers") or (),
                networks_conf=request.get("networks_conf"),
            )
        else:
            settings = load()
    except SettingsError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    sys.stdout.write(
        json.dumps(settings.vagrant_plan(), indent=2, sort_keys=True) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
