"""What vit-predict reads: image files, folders, globs and list files, expanded to one path list.

Each INPUT becomes paths in a stable order:
- an image file: itself;
- a folder: every image file below it (recursively, following links once), sorted by path;
- a glob (`*`, `?`, `[`): its matches, sorted, each expanded as above;
- a text file (`.txt`, `.lst`, `.list`): one path per line, relative paths taken from the list's
  folder, blank lines and lines starting with `#` skipped; each line stays one input even when
  the file is missing or broken, so it gets its own row with the error.
A path listed twice is listed twice. Only the path list is held in memory.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import PolyvitError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif",
                            ".tiff", ".ppm", ".pgm", ".pbm", ".jfif"})
LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})
GLOB_CHARS = frozenset("*?[")


class InputError(PolyvitError, ValueError):
    """An INPUT names nothing that can be read, or expands to no image at all."""


def is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES


def expand_inputs(inputs: Iterable[str], skipped: list[str] | None = None) -> list[str]:
    """INPUT arguments -> the list of image paths, one entry per row the job will write.

    skipped collects one line per thing passed over on purpose (a folder reached again through
    a symbolic link loop). Raises InputError for an INPUT that does not exist, matches nothing
    or cannot be listed, and when everything together holds no image."""
    skipped = [] if skipped is None else skipped
    paths: list[str] = []
    given = list(inputs)
    if not given:
        raise InputError("no INPUT given: name image files, folders, globs or list files")
    for item in given:
        paths.extend(_expand_one(str(item), skipped))
    if not paths:
        raise InputError(f"no images found in {', '.join(given)} (looked for "
                         f"{', '.join(sorted(IMAGE_SUFFIXES))} files)")
    return paths


def _expand_one(item: str, skipped: list[str]) -> Iterator[str]:
    if os.path.isdir(item):
        yield from walk_images(item, skipped)
    elif os.path.isfile(item) or os.path.islink(item):
        if os.path.splitext(item)[1].lower() in LIST_SUFFIXES:
            yield from read_list(item)
        else:
            yield item  # named explicitly: classified (or its error reported) whatever its suffix
    elif GLOB_CHARS & set(item):
        matches = sorted(glob.glob(item, recursive=True))
        if not matches:
            raise InputError(f"{item}: the pattern matches no file")
        for match in matches:
            if os.path.isdir(match):
                yield from walk_images(match, skipped)
            elif is_image_name(match):
                yield match
    else:
        raise InputError(f"{item}: no such file or folder")


def walk_images(folder: str, skipped: list[str]) -> Iterator[str]:
    """Image files below folder, sorted, following symbolic links to folders but entering each
    real folder once: a link loop is reported in skipped instead of recursing forever."""
    seen: set[tuple[int, int]] = set()

    def visit(path: str) -> Iterator[str]:
        try:
            st = os.stat(path)
        except OSError as exc:
            skipped.append(f"{path}: cannot enter the folder ({exc.strerror or exc})")
            return
        key = (st.st_dev, st.st_ino)
        if key in seen:
            skipped.append(f"{path}: a symbolic link back to a folder already listed (a loop); "
                           "not entered again")
            return
        seen.add(key)
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as exc:
            skipped.append(f"{path}: cannot list the folder ({exc.strerror or exc})")
            return
        for entry in entries:
            if _is_dir(entry):
                yield from visit(entry.path)
            elif is_image_name(entry.name):
                yield entry.path

    yield from visit(folder)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:  # a dangling link or one that loops onto itself
        return False


def read_list(list_file: str) -> Iterator[str]:
    base = Path(list_file).parent
    try:
        with open(list_file, encoding="utf-8") as f:
            for line in f:
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                yield text if os.path.isabs(text) else str(base / text)
    except UnicodeDecodeError:
        raise InputError(f"{list_file}: a list file must be UTF-8 text, one path per line") from None
    except OSError as exc:
        raise InputError(f"{list_file}: cannot read the list ({exc.strerror or exc})") from None
