"""Where `--output` writes: a new file of the owner's alone, written whole or not at all.

`-o` once replaced the warehouse itself with CSV, and wrote through a symbolic link. So an
output never replaces the warehouse, its snapshot, a backup or any DuckDB database; replaces
another existing file only when asked (`--force`); never follows a symbolic link at the
destination; and goes into a folder that exists (a typo in a folder name is not created
silently). The rows are written to an unnamed file in the destination's folder (O_TMPFILE;
a hidden temporary name where the file system has none) that is linked into place once
complete, so a query that fails, is stopped or is killed leaves no partial file behind.
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# Bytes 8 to 12 of every DuckDB database file.
DUCKDB_MAGIC = b"DUCK"


class OutputRefused(ValueError):
    """The output file cannot be written as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Output:
    """An `--output` file: `force` replaces an existing file, never one of `protected` (files
    and folders: the warehouse, its snapshot, its backups) nor a DuckDB database."""

    path: Path
    force: bool = False
    protected: tuple[Path, ...] = ()


def checked_target(output: Output) -> Path:
    """The absolute path to write, or OutputRefused; checked before any row is read, and
    again as the file is linked into place."""
    shown = output.path
    folder = output.path.expanduser().parent
    if not folder.is_dir():
        raise OutputRefused(
            f"output: the folder '{folder}' does not exist; create it first, or name a file "
            "in an existing folder."
        )
    target = folder.resolve() / output.path.name
    for kept in output.protected:
        kept = kept.resolve()
        if target == kept or kept in target.parents:
            raise OutputRefused(
                f"output: '{shown}' is the warehouse's (its DuckDB file, snapshot or "
                "backups); refusing to write over it, even with --force."
            )
    if target.is_symlink():
        raise OutputRefused(
            f"output: '{shown}' is a symbolic link; refusing to write through it, name a "
            "file instead."
        )
    if target.exists():
        if not target.is_file():
            raise OutputRefused(f"output: '{shown}' exists and is not a file; name a file.")
        if _is_duckdb(target):
            raise OutputRefused(
                f"output: '{shown}' is a DuckDB database; refusing to write over it, even "
                "with --force."
            )
        if not output.force:
            raise OutputRefused(f"output: '{shown}' exists; add --force to replace it.")
    return target


def _is_duckdb(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(12)[8:12] == DUCKDB_MAGIC
    except OSError:
        return True  # unreadable to us: not ours to replace


@contextmanager
def open_output(output: Output) -> Iterator[IO[bytes]]:
    """The file to write `output` into, owner-only (0600), published at `output.path` when
    the block ends without an error, and removed otherwise."""
    target = checked_target(output)
    folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    hidden = f".{target.name}.{secrets.token_hex(4)}.partial"
    named = False
    try:
        try:
            fd = os.open(target.parent, os.O_TMPFILE | os.O_WRONLY, 0o600)
        except OSError:  # a file system without unnamed files
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            fd = os.open(hidden, flags, 0o600, dir_fd=folder)
            named = True
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
            if not named:  # give the unnamed file its hidden name, then the real one
                os.link(f"/proc/self/fd/{fd}", hidden, dst_dir_fd=folder, follow_symlinks=True)
                named = True
        checked_target(output)  # nothing put in its place while the rows were written
        if output.force:
            os.replace(hidden, target.name, src_dir_fd=folder, dst_dir_fd=folder)
        else:
            try:
                os.link(hidden, target.name, src_dir_fd=folder, dst_dir_fd=folder)
            except FileExistsError:
                raise OutputRefused(
                    f"output: '{output.path}' appeared while the rows were written; add "
                    "--force to replace it."
                ) from None
    finally:
        if named:
            with suppress(FileNotFoundError):  # renamed into place
                os.unlink(hidden, dir_fd=folder)
        os.close(folder)


@contextmanager
def open_text_output(output: Output) -> Iterator[IO[str]]:
    """open_output for text (UTF-8, newlines as written)."""
    with open_output(output) as binary:
        text = io.TextIOWrapper(binary, encoding="utf-8", newline="")
        yield text
        text.flush()
        text.detach()
