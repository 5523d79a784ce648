"""The server-side import folder (ADAPT_DISTILL_IMPORT_DIR): a corpus too large for the browser is
copied there and imported by a worker. Only files inside the folder are read, after every symlink
is resolved: a name with `..`, an absolute name or a link pointing elsewhere is refused."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError, CorpusError
from db.settings import IMPORT_DIR_ENV as IMPORT_ENV

MAX_LISTED = 500


@dataclass(frozen=True)
class ImportableFile:
    name: str  # relative to the import folder, '/'-separated
    size: int  # bytes of the file it resolves to


def import_root(folder: str | Path) -> Path:
    """The import folder, symlinks resolved; ConfigError when it is not an existing folder."""
    try:
        root = Path(folder).expanduser().resolve(strict=True)
    except (OSError, RuntimeError):
        raise ConfigError(f"the import folder {folder} ({IMPORT_ENV}) does not exist: create it or point "
                          f"{IMPORT_ENV} at an existing folder") from None
    if not root.is_dir():
        raise ConfigError(f"the import folder {folder} ({IMPORT_ENV}) is not a folder: point {IMPORT_ENV} at a folder")
    return root


def resolve_import(folder: str | Path, name: str) -> Path:
    """The file `name` (relative to the import folder) names, symlinks resolved. Raises ConfigError
    for a name that leads outside the folder and CorpusError for a missing file or a non-file."""
    root = import_root(folder)
    name = (name or "").strip()
    if not name:
        raise ConfigError("choose a file of the import folder")
    if "\x00" in name:
        raise ConfigError("a file name cannot contain a NUL character: choose a file of the import folder")
    try:
        target = (root / name).resolve(strict=False)
    except (OSError, RuntimeError):  # a symlink loop
        raise CorpusError(f"'{name}' cannot be resolved (a symlink loop?): replace it with the file itself") from None
    if not target.is_relative_to(root):
        raise ConfigError(f"'{name}' is outside the import folder ({IMPORT_ENV}): put the file inside that folder "
                          f"(a symlink there must point inside it too)")
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        raise CorpusError(f"no file '{name}' in the import folder: copy it there first (the list shows what is "
                          f"there)") from None
    except OSError as exc:
        raise CorpusError(f"'{name}' in the import folder cannot be read ({exc.strerror}): check its "
                          f"permissions") from None
    if stat.S_ISDIR(mode):
        raise CorpusError(f"'{name}' is a folder: choose a file inside it")
    if not stat.S_ISREG(mode):
        raise CorpusError(f"'{name}' is not a regular file: copy the corpus into the import folder as a plain file")
    return target


def list_importable(folder: str | Path, limit: int = MAX_LISTED) -> tuple[list[ImportableFile], bool]:
    """(files, truncated): the regular files under the import folder, by name, with their sizes;
    hidden files and folders (a name starting with '.', e.g. a copy in progress) and whatever
    resolves outside the folder are left out. At most `limit` files; truncated says there are more."""
    root = import_root(folder)
    found: list[ImportableFile] = []
    truncated = False
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(f for f in filenames if not f.startswith(".")):
            path = Path(directory) / filename
            try:
                target = path.resolve(strict=True)
                info = target.stat()
            except (OSError, RuntimeError):
                continue  # a dangling link or a loop
            if not target.is_relative_to(root) or not stat.S_ISREG(info.st_mode):
                continue
            if len(found) == limit:
                truncated = True
                break
            found.append(ImportableFile(path.relative_to(root).as_posix(), info.st_size))
        if truncated:
            break
    return sorted(found, key=lambda f: f.name), truncated
