"""schedule: the crontab block and systemd units; --install edits a real crontab (of a
throwaway user) idempotently and keeps every other line byte for byte."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import unique_name, write_plan

OTHER = ("# m h dom mon dow   command\n"
         "MAILTO=ops@example.com\n"
         "15 2 * * 1   /usr/local/bin/rotate-logs   --keep 7\n"
         "\n"
         "@reboot echo 'hello   world'  # trailing comment\n")


@pytest.fixture
def cron_user():
    if os.geteuid() != 0 or not shutil.which("crontab") or not shutil.which("useradd"):
        pytest.fail("this test needs root, crontab (apt-get install cron) and useradd; "
                    "tests/run.sh installs cron")
    name = unique_name("rcron").replace("-", "")[:30]
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True)
    yield name
    subprocess.run(["crontab", "-u", name, "-r"], capture_output=True)
    subprocess.run(["userdel", name], check=True)


def _crontab(user: str) -> str:
    return subprocess.run(["crontab", "-u", user, "-l"], capture_output=True, text=True,
                          check=True).stdout


def test_install_keeps_other_entries_and_is_idempotent(tmp_path: Path, cli, cron_user) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    write_plan(plans / "web.yaml", name="web", schedule={"backup": "0 3 * * *",
                                                         "verify": "30 4 * * 0"})
    subprocess.run(["crontab", "-u", cron_user, "-"], input=OTHER, text=True, check=True)
    original = _crontab(cron_user)
    r = cli("schedule", plans, "--install", "--user", cron_user, "--log-file",
            tmp_path / "run.log")
    assert r.rc == 0 and "updated" in r.out, r.text
    first = _crontab(cron_user)
    assert first.startswith(original.rstrip("\n") + "\n")  # everything before: unchanged
    block = first[len(original.rstrip("\n") + "\n"):]
    assert block.startswith("# BEGIN restorer") and block.endswith("# END restorer\n")
    assert f"run --due {plans}" in block and "*/5 * * * *" in block
    assert "backup '0 3 * * *', verify '30 4 * * 0' (UTC)" in block
    # again: nothing changes
    r = cli("schedule", plans, "--install", "--user", cron_user, "--log-file",
            tmp_path / "run.log")
    assert r.rc == 0 and "unchanged" in r.out
    assert _crontab(cron_user) == first
    # a line added after our block by hand stays where it is when the block is replaced
    subprocess.run(["crontab", "-u", cron_user, "-"], input=first + "0 1 * * * true\n",
                   text=True, check=True)
    write_plan(plans / "db.yaml", name="db", schedule={"backup": "0 4 * * *"})
    assert cli("schedule", plans, "--install", "--user", cron_user, "--log-file",
               tmp_path / "run.log").rc == 0
    third = _crontab(cron_user)
    assert third.startswith(original.rstrip("\n") + "\n")
    assert third.endswith("# END restorer\n0 1 * * * true\n")
    assert third.count("# BEGIN restorer") == 1 and "db.yaml: backup '0 4 * * *'" in third


def test_print_and_systemd_units(tmp_path: Path, cli) -> None:
    plan = write_plan(tmp_path / "plan.yaml", schedule={"backup": "0 3 * * *"})
    r = cli("schedule", plan)
    assert r.rc == 0 and r.out.startswith("# BEGIN restorer")
    assert f"run --due {plan}" in r.out
    r = cli("schedule", plan, "--systemd", tmp_path / "units")
    assert r.rc == 0, r.text
    timer = (tmp_path / "units" / "restorer-run.timer").read_text()
    service = (tmp_path / "units" / "restorer-run.service").read_text()
    assert "OnCalendar=*:0/5" in timer and "Persistent=true" in timer
    assert "Type=oneshot" in service and f"run --due {plan}" in service
    r = cli("schedule", tmp_path / "missing.yaml")
    assert r.rc == 2
