"""Serves the dashboard on loopback: python -m metrics_pipeline.dashboard [--port N].

It reads the warehouse the settings name (docs/operations.md) through the analysts' reader,
and the Dagster instance of DAGSTER_HOME read-only for the hours being healed. No login: it
listens on 127.0.0.1 only, for the user of this machine."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from metrics_pipeline.settings import ConfigError, StorageSettings, look_back_from_env

HOST = "127.0.0.1"
DEFAULT_PORT = 8050


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m metrics_pipeline.dashboard",
        description="The fleet's charts, served on 127.0.0.1 (loopback only, no login).",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default %(default)s")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port: {args.port} is not a port; expected 1 to 65535.")
    try:
        storage = StorageSettings.from_env()
        look_back = look_back_from_env()
    except ConfigError as error:
        print(f"dashboard: {error}", file=sys.stderr)
        return 2
    from metrics_pipeline.dashboard.app import build_app
    from metrics_pipeline.dashboard.data import SharedReader

    app = build_app(SharedReader(storage), look_back)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    print(f"dashboard on http://{HOST}:{args.port}", flush=True)
    app.run(host=HOST, port=args.port, debug=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
