"""schedule: what cron or systemd needs to run plans unattended.

One entry every 5 minutes runs `restorer run --due` over the plans; restorer itself decides
from each plan's `schedule:` and the ledger what is due. So the entry never changes when a
plan's schedule does, and a machine that was down catches up once.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from restorer.errors import RestorerError, UsageError
from restorer.ledger import default_path
from restorer.plan.load import load_plan

BEGIN = "# BEGIN restorer (managed by `restorer schedule --install`; edits in here are replaced)"
END = "# END restorer"


def _command(paths: list[Path]) -> str:
    me = Path(sys.argv[0])
    exe = str(me.absolute()) if me.name == "restorer" and me.is_file() else \
        shutil.which("restorer")
    prog = [exe] if exe else [sys.executable, "-m", "restorer"]
    return shlex.join([*prog, "--log-format", "json", "run", "--due", *map(str, paths)])


def _summary(paths: list[Path]) -> list[str]:
    """A comment line per plan with its schedule, for the person reading the crontab."""
    from restorer.actions.run_due import plan_files

    lines = []
    for f in plan_files(tuple(map(str, paths))):
        try:
            s = load_plan(f).plan.schedule
        except RestorerError as e:
            lines.append(f"# {f}: cannot be read ({e.message.splitlines()[0]})")
            continue
        jobs = ", ".join(f"{j} '{getattr(s, j)}'" for j in ("backup", "prune", "verify",
                                                             "check") if getattr(s, j))
        lines.append(f"# {f}: {jobs or 'no schedule'} ({s.timezone or 'UTC'})")
    return lines


def crontab_block(paths: list[Path], log_file: Path | None = None) -> str:
    log = log_file or default_path().parent / "run.log"
    line = f"*/5 * * * * {_command(paths)} >> {shlex.quote(str(log))} 2>&1"
    return "\n".join([BEGIN, *_summary(paths), line, END]) + "\n"


def merge(current: str, block: str) -> str:
    """`current` with our block replaced (or appended); every other byte kept."""
    start = current.find(BEGIN)
    if start != -1:
        end = current.find(END, start)
        if end == -1:
            raise UsageError("the crontab has our BEGIN marker but no END marker; fix it by "
                             "hand (`crontab -e`) before installing")
        stop = end + len(END)
        if current[stop:stop + 1] == "\n":
            stop += 1
        return current[:start] + block + current[stop:]
    if current and not current.endswith("\n"):
        current += "\n"
    return current + block


def _crontab(args: list[str], user: str | None, stdin: str | None = None
             ) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("crontab")
    if exe is None:
        raise UsageError("the crontab program is not installed",
                         hint="install cron (apt-get install cron), or use --systemd DIR")
    argv = [exe, *(["-u", user] if user else []), *args]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True)


def install_crontab(block: str, user: str | None = None) -> tuple[str, str]:
    """(crontab before, crontab after)."""
    cur = _crontab(["-l"], user)
    if cur.returncode != 0:
        if "no crontab" not in cur.stderr:
            raise RestorerError(f"crontab -l failed: {cur.stderr.strip()}")
        before = ""
    else:
        before = cur.stdout
    after = merge(before, block)
    if after != before:
        w = _crontab(["-"], user, after)
        if w.returncode != 0:
            raise RestorerError(f"crontab could not be written: {w.stderr.strip()}")
    return before, after


def systemd_units(paths: list[Path]) -> dict[str, str]:
    service = f"""[Unit]
Description=restorer: run the jobs that are due ({len(paths)} plan path(s))
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
ExecStart={_command(paths)}
Nice=10
IOSchedulingClass=idle
"""
    timer = """[Unit]
Description=restorer: look for due jobs every 5 minutes

[Timer]
OnCalendar=*:0/5
Persistent=true
RandomizedDelaySec=30s

[Install]
WantedBy=timers.target
"""
    return {"restorer-run.service": service, "restorer-run.timer": timer}


def write_units(units: dict[str, str], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, text in units.items():
        p = folder / name
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, p)
        out.append(p)
    return out
