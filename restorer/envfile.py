"""Environment files: how unattended runs (cron, systemd) get the secrets a person has in
their shell. `KEY=VALUE` lines, `#` comments, an optional `export ` and quotes; the file must
be readable by its owner only, since it holds secrets."""

from __future__ import annotations

import os
import re
import shlex
import stat
from pathlib import Path

from restorer.errors import UsageError

_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """The variables of an environment file; UsageError (never showing a value) when it is
    missing, readable by group or others, or has a line that is not KEY=VALUE."""
    p = Path(path)
    try:
        st = os.stat(p)
        text = p.read_text()
    except OSError as e:
        raise UsageError(f"environment file {p}: cannot be read: {e.strerror}",
                         hint="create it with mode 0600, one KEY=VALUE per line") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(
            f"environment file {p} is readable by others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); it holds secrets, so it is refused",
            hint=f"chmod 600 {shlex.quote(str(p))}")
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise UsageError(f"environment file {p}, line {n}: not KEY=VALUE",
                             hint="write one NAME=value per line (# starts a comment)")
        key, value = m.group(1), m.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out


def load_env_file(path: str | os.PathLike[str]) -> list[str]:
    """Put the file's variables into this process's environment; their names."""
    values = read_env_file(path)
    os.environ.update(values)
    return sorted(values)
