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

from restorer.actions.run_due import JOBS
from restorer.envfile import read_env_file
from restorer.errors import RestorerError, UsageError
from restorer.ledger import default_path
from restorer.plan.load import LoadedPlan, secret_refs
from restorer.targets import load_checked

BEGIN = "# BEGIN restorer (managed by `restorer schedule --install`; edits in here are replaced)"
END = "# END restorer"


def state_dir() -> Path:
    """The state folder (default ledger, run.log) this shell sees: pinned into the entry,
    since cron's bare environment would pick another one."""
    return default_path().parent.resolve()


def _command(paths: list[Path], env_file: Path | None = None) -> str:
    me = Path(sys.argv[0])
    exe = str(me.absolute()) if me.name == "restorer" and me.is_file() else \
        shutil.which("restorer")
    prog = [exe] if exe else [sys.executable, "-m", "restorer"]
    extra = ["--env-file", str(env_file)] if env_file else []
    return shlex.join([*prog, "--log-format", "json", "run", "--due", *extra,
                       *map(str, paths)])


def load_plans(paths: list[Path]) -> list[LoadedPlan]:
    """Every plan the paths name; UsageError naming each one that cannot be read (an
    entry that silently skipped a plan would never back it up)."""
    from restorer.actions.run_due import plan_files

    out, bad = [], []
    for f in plan_files(tuple(map(str, paths))):
        try:
            out.append(load_checked(f))
        except RestorerError as e:
            bad.append(f"{f}: {e.message.splitlines()[0]}")
    if bad:
        raise UsageError("these plans cannot be read, so nothing was scheduled:\n  "
                         + "\n  ".join(bad),
                         hint="fix them (`restorer validate PLAN` lists every problem)")
    return out


def cron_environment(user: str | None, env_file: Path | None) -> dict[str, str]:
    """What a job sees under cron: cron's own few variables, the pinned state folder and
    the environment file's variables."""
    import pwd

    pw = pwd.getpwnam(user) if user else pwd.getpwuid(os.getuid())
    env = {"HOME": pw.pw_dir, "LOGNAME": pw.pw_name, "PATH": "/usr/bin:/bin",
           "SHELL": "/bin/sh", "RESTORER_STATE_DIR": str(state_dir())}
    if env_file:
        env.update(read_env_file(env_file))
    return env


def unresolved_under_cron(plans: list[LoadedPlan], env: dict[str, str]) -> list[str]:
    """'plan P (file): key -> ${env:X}' for each environment reference cron would lack."""
    out = []
    for lp in plans:
        for key, ref in secret_refs(lp):
            for kind, name in ref.references():
                if kind == "env" and name.strip() not in env:
                    out.append(f"plan {lp.name} ({lp.path}): {key} refers to "
                               f"${{env:{name.strip()}}}, which cron's environment lacks")
    return out


def _summary(plans: list[LoadedPlan]) -> list[str]:
    """A comment line per plan with its schedule, for the person reading the crontab."""
    lines = []
    for lp in plans:
        s = lp.plan.schedule
        jobs = ", ".join(f"{j} '{getattr(s, j)}'" for j in JOBS if getattr(s, j))
        lines.append(f"# {lp.path}: {jobs or 'no schedule'} ({s.timezone or 'UTC'})")
    return lines


def crontab_block(paths: list[Path], plans: list[LoadedPlan], log_file: Path | None = None,
                  env_file: Path | None = None) -> str:
    log = log_file or state_dir() / "run.log"
    pin = shlex.quote(f"RESTORER_STATE_DIR={state_dir()}")
    line = (f"*/5 * * * * {pin} {_command(paths, env_file)} >> {shlex.quote(str(log))} "
            "2>&1")
    return "\n".join([BEGIN, *_summary(plans), line, END]) + "\n"


def unmerge(current: str) -> str:
    """`current` without our block; every other byte kept."""
    start = current.find(BEGIN)
    if start == -1:
        return current
    return merge(current, "")


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


def install_crontab(block: str | None, user: str | None = None) -> tuple[str, str]:
    """(crontab before, crontab after); a `block` of None removes ours."""
    cur = _crontab(["-l"], user)
    if cur.returncode != 0:
        if "no crontab" not in cur.stderr:
            raise RestorerError(f"crontab -l failed: {cur.stderr.strip()}")
        before = ""
    else:
        before = cur.stdout
    after = unmerge(before) if block is None else merge(before, block)
    if after != before:
        w = _crontab(["-"], user, after)
        if w.returncode != 0:
            raise RestorerError(f"crontab could not be written: {w.stderr.strip()}")
    return before, after


def systemd_units(paths: list[Path], env_file: Path | None = None) -> dict[str, str]:
    env_line = f"EnvironmentFile={env_file}\n" if env_file else ""
    service = f"""[Unit]
Description=restorer: run the jobs that are due ({len(paths)} plan path(s))
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
Environment={shlex.quote(f"RESTORER_STATE_DIR={state_dir()}")}
{env_line}ExecStart={_command(paths)}
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
