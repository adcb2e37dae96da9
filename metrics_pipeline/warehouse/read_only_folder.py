"""A lake's local data folder as sandboxed readers see it: read-only, and nothing outside it.

DuckDB's sandbox cannot grant a folder for reading only: `allowed_directories` lets a query
write there too, and a sandboxed `COPY ... TO '<a live data file>'` overwrote one. File
modes do not help either (the pipeline and its readers are one user, often root in a
container). So a sandboxed reader has DuckDB's local file system switched off, and reads the
data folder through this fsspec file system (registered with DuckDB's Python client), which
opens files for reading only and refuses every path that resolves outside the folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

PROTOCOL = "metrics-lake-data"
PREFIX = f"{PROTOCOL}://"


def read_only_url(folder: str) -> str:
    """The data path a sandboxed reader gives DuckLake instead of `folder`."""
    return PREFIX + str(Path(folder).resolve()).rstrip("/") + "/"


class ReadOnlyFolder(AbstractFileSystem):
    """`folder` and what is under it, for reading. Every other operation fails, as do paths
    that resolve (through `..` or a link) outside it."""

    protocol = PROTOCOL
    cachable = False  # one instance per folder, never shared through fsspec's cache

    def __init__(self, folder: str) -> None:
        super().__init__()
        self._folder = os.path.realpath(folder)
        self._local = LocalFileSystem()

    def _inside(self, path: str) -> str:
        text = str(path).removeprefix(PREFIX)
        real = os.path.realpath("/" + text.lstrip("/"))
        if real != self._folder and not real.startswith(self._folder + os.sep):
            raise PermissionError(f"{path}: outside the warehouse's data folder")
        return real

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if mode != "rb":
            raise PermissionError(f"{path}: the warehouse's data is read-only here")
        return self._local._open(self._inside(path), mode="rb")

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return dict(self._local.info(self._inside(path)))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        return list(self._local.ls(self._inside(path), detail=detail))

    def modified(self, path: str) -> Any:
        return self._local.modified(self._inside(path))

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise PermissionError("the warehouse's data is read-only here")

    mkdir = makedirs = rm = rm_file = _rm = rmdir = mv = cp_file = touch = put_file = _refuse
    pipe_file = put = copy = move = rename = _refuse
