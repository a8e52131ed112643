"""Swapping a restored copy into a live path in one step, for rollback.

Linux's renameat2(RENAME_EXCHANGE) exchanges two paths atomically: at every instant the live
path is either the old tree or the new one, never a mix and never missing. Filesystems
without it (some network filesystems) get two renames, and the caller is told, because then
the live path is missing for the instant between them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def exchange(a: Path, b: Path) -> bool:
    """Swap `a` and `b` (both must exist). True when it was atomic."""
    if _renameat2 is not None:
        rc = _renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
        if rc == 0:
            return True
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(a), None, str(b))
    tmp = a.with_name(a.name + ".restorer-swap")
    os.rename(a, tmp)
    try:
        os.rename(b, a)
    except BaseException:
        os.rename(tmp, a)
        raise
    os.rename(tmp, b)
    return False


def move_noreplace(a: Path, b: Path) -> None:
    """Rename `a` to `b`, refusing (FileExistsError) when `b` exists: never replaces."""
    if _renameat2 is not None:
        rc = _renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(a), None, str(b))
    if os.path.lexists(b):  # no RENAME_NOREPLACE here: a narrow race, never a torn file
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(b))
    os.rename(a, b)
