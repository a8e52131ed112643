"""Walking and removing local trees without recursion.

Python 3.11's `shutil.rmtree` and `os.walk` recurse once per directory level, so a tree deeper
than the recursion limit (about 1,000) ends in RecursionError; the depth of a restored or live
tree is the file system's to choose. These keep an explicit stack instead.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator


def walk(root: str | os.PathLike[str]) -> Iterator[tuple[str, list[str], list[str]]]:
    """(folder, subfolder names, other names) top-down, as os.walk; symlinks to folders are
    listed as names, never followed; an unreadable folder is skipped, as os.walk does."""
    stack = [os.fspath(root)]
    while stack:
        cur = stack.pop()
        dirs: list[str] = []
        files: list[str] = []
        try:
            with os.scandir(cur) as it:
                for e in it:
                    (dirs if e.is_dir(follow_symlinks=False) else files).append(e.name)
        except OSError:
            continue
        yield cur, dirs, files
        # the caller may prune `dirs` in place, as with os.walk
        stack.extend(os.path.join(cur, d) for d in reversed(dirs))


def remove_tree(root: str | os.PathLike[str], ignore_errors: bool = False) -> None:
    """Remove `root` and everything below it (a symlink is removed, never followed).

    shutil.rmtree first: it works through directory descriptors, so a folder swapped for a
    symlink meanwhile cannot lead it elsewhere. Only a tree too deep for it (RecursionError)
    is finished by the path-based loop below, which checks each entry with lstat."""
    try:
        shutil.rmtree(root, ignore_errors=ignore_errors)
        return
    except RecursionError:
        pass
    top = os.fspath(root)
    stack: list[tuple[str, bool]] = [(top, False)]
    while stack:
        path, emptied = stack.pop()
        try:
            if emptied:
                os.rmdir(path)
                continue
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                os.unlink(path)
                continue
            stack.append((path, True))
            with os.scandir(path) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        stack.append((e.path, False))
                    else:
                        os.unlink(e.path)
        except FileNotFoundError:
            continue
        except OSError:
            if not ignore_errors:
                raise
