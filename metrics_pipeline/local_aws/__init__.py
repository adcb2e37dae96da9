"""A local AWS for development and tests: moto, extended where it differs from AWS."""

import sys
from importlib.util import find_spec


def exit_without_local_extra(package: str, command: str) -> None:
    """The local stack's packages come with the `local` extra, not with the deployed image:
    one line saying so, rather than an ImportError's traceback."""
    if find_spec(package) is None:
        sys.exit(
            f"{command}: needs {package}, from the project's local extra: "
            "pip install -e '.[local]' (scripts/start.sh installs it)"
        )
