"""Where a DuckLake lives, as METRICS_WAREHOUSE and METRICS_LAKE_DATA_PATH say: the catalog
string (its syntax, and its password kept out of every message) and the data path. Values
only, with no connection: the settings check them without importing the warehouse, which
opens them (warehouse/lake.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2.extensions import make_dsn, parse_dsn

LAKE_PREFIX = "ducklake:"
POSTGRES_CATALOG_PREFIX = "ducklake:postgres:"
# DuckLake's other catalog databases, named by a prefix; without one the catalog is a DuckDB
# file. SQLite is refused (see settings.parse_warehouse), MySQL untested.
OTHER_CATALOG_PREFIX = re.compile(r"^ducklake:(sqlite|mysql|md|motherduck|duckdb):")


class LakeError(RuntimeError):
    """The lake cannot be reached or used; the message names the setting to check."""


_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(://[^/@:]*:)[^@/]*(@)")


def redacted(text: str) -> str:
    """`text` with any password of a libpq connection string (key=value or URI) hidden."""
    return _URI_PASSWORD.sub(r"\1***\2", _KEYWORD_PASSWORD.sub(r"\1***", text))


def split_password(catalog: str) -> tuple[str, str | None]:
    """A DuckLake catalog without its PostgreSQL password, and the password (None without one).

    The libpq part may be `key=value` pairs or a postgresql:// URI; it comes back as pairs.
    """
    if not catalog.startswith(POSTGRES_CATALOG_PREFIX):
        return catalog, None
    try:
        parts = parse_dsn(catalog.removeprefix(POSTGRES_CATALOG_PREFIX))
    except psycopg2.ProgrammingError:
        # libpq's message quotes nothing of the string, so it cannot show a password.
        raise LakeError(
            "METRICS_WAREHOUSE: the text after 'ducklake:postgres:' is not a libpq connection "
            "string; expected 'key=value' pairs such as 'host=db.internal dbname=lake "
            "user=metrics' or a postgresql:// URI."
        ) from None
    if "password" not in parts:
        return catalog, None
    password = parts.pop("password")
    return POSTGRES_CATALOG_PREFIX + make_dsn(**parts), password


@dataclass(frozen=True)
class Lake:
    """Where a lake lives: its catalog (METRICS_WAREHOUSE) and its data (METRICS_LAKE_DATA_PATH)."""

    catalog: str  # as configured: it may hold a password (repr and str leave it out)
    data_path: str

    @property
    def on_s3(self) -> bool:
        return self.data_path.startswith("s3://")

    @property
    def attach_path(self) -> str:
        """The catalog as DuckDB is given it: without the password."""
        return split_password(self.catalog)[0]

    @property
    def password(self) -> str | None:
        return split_password(self.catalog)[1]

    @property
    def catalog_file(self) -> Path | None:
        """The catalog's DuckDB file, when it is one (a lake on one machine)."""
        if self.catalog.startswith(POSTGRES_CATALOG_PREFIX):
            return None
        return Path(self.catalog.removeprefix(LAKE_PREFIX))

    @property
    def postgres_dsn(self) -> str | None:
        """The catalog's libpq connection string (with its password, for psycopg2 only) when
        it lives in PostgreSQL."""
        if self.catalog.startswith(POSTGRES_CATALOG_PREFIX):
            return self.catalog.removeprefix(POSTGRES_CATALOG_PREFIX)
        return None

    def __str__(self) -> str:
        return self.label

    def __repr__(self) -> str:
        return f"Lake({self.label})"

    @property
    def label(self) -> str:
        """The lake for messages: its catalog without a password."""
        return f"{self.attach_path} (data {self.data_path})"
