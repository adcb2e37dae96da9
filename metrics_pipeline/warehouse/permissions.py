"""Who may read what the pipeline writes: the warehouse holds account ids, the inventory and
its tags, so its files are the owner's alone; with METRICS_SHARED_GROUP, that group may also
read the snapshot (the file analysts query) and traverse the folder holding it, and on a lake
on this machine read the data files (analysts' readers read them beside the catalog's
copy)."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

from metrics_pipeline.settings import ConfigError, variable

PRIVATE_FILE, PRIVATE_FOLDER = 0o600, 0o700
SHARED_FILE, SHARED_FOLDER = 0o640, 0o750


def group_id(group: str | None) -> int | None:
    """The group's id; KeyError for a group this machine does not know."""
    return grp.getgrnam(group).gr_gid if group else None


def protect(path: Path, shared_with: str | None = None) -> None:
    """Owner-only; readable by `shared_with` too (a group name) when given. A file this user
    does not own (a deployment's shared warehouse) keeps the modes its owner gave it."""
    info = path.stat()
    if info.st_uid != os.geteuid():
        return
    folder = stat.S_ISDIR(info.st_mode)
    gid = group_id(shared_with)
    if gid is None:
        os.chmod(path, PRIVATE_FOLDER if folder else PRIVATE_FILE)
        return
    os.chown(path, -1, gid)
    os.chmod(path, SHARED_FOLDER if folder else SHARED_FILE)


def share_tree(root: Path, shared_with: str) -> None:
    """Everything under `root` readable by the group `shared_with` too: the files a lake's
    writers added since the last call (DuckDB creates them with the umask's mode). Links
    are left alone, never followed."""
    gid = group_id(shared_with)
    for folder, _, files in os.walk(root):
        for name in (".", *files):  # "." is the folder itself: each is walked
            path = Path(folder, name)
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
                continue
            wanted = SHARED_FOLDER if stat.S_ISDIR(info.st_mode) else SHARED_FILE
            if info.st_gid != gid or stat.S_IMODE(info.st_mode) != wanted:
                protect(path, shared_with)


def make_folder(path: Path, shared_with: str | None = None) -> None:
    """Creates the folder (and missing parents) protected; an existing folder is left as its
    owner set it."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        protect(created, shared_with)


def check_writable(
    path: Path, shared_with: str | None = None, setting: str = "duckdb_path"
) -> None:
    """Creates the warehouse folder (owner-only, or also the group's to traverse) and proves it
    can be written, or names the setting (a field of the settings) that put it there."""
    name = variable(setting)
    try:
        make_folder(path.parent, shared_with)
    except OSError as error:
        raise ConfigError(
            f"{name}: cannot create the folder '{path.parent}' ({error.strerror})."
        ) from None
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        raise ConfigError(f"{name}: '{target}' is not writable; choose a path this user can write.")
