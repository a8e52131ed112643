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


def _entry(block: str) -> str:
    """The command of our crontab entry, as cron hands it to /bin/sh."""
    line = next(x for x in block.splitlines() if x.startswith("*/5 "))
    return line.split(None, 5)[5]


def test_the_installed_line_runs_under_cron_environment_with_its_secrets(
        tmp_path: Path, cli, cron_user) -> None:
    import json

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("data")
    plan = write_plan(tmp_path / "plan.yaml", name="cronplan",
                      repository={"url": "file://repo", "password": "${env:CRON_TEST_PW}"},
                      schedule={"backup": "0 3 * * *", "verify": "0 4 * * *"},
                      targets=[{"name": "data", "kind": "files", "paths": ["src"],
                                "staging": {"path": "staging"}}])
    env = {"CRON_TEST_PW": "s3cret-cron-pw"}
    assert cli("init", plan, env=env).rc == 0
    # without a way to give the secret, installing is refused and nothing is written
    r = cli("schedule", plan, "--install", "--user", cron_user, env=env)
    assert r.rc == 2, r.text
    assert "CRON_TEST_PW" in r.err and "cronplan" in r.err and "--env-file" in r.err
    assert subprocess.run(["crontab", "-u", cron_user, "-l"], capture_output=True).returncode
    envfile = tmp_path / "restorer.env"
    envfile.write_text("# secrets for unattended runs\nCRON_TEST_PW='s3cret-cron-pw'\n")
    os.chmod(envfile, 0o644)
    r = cli("schedule", plan, "--install", "--user", cron_user, "--env-file", envfile, env=env)
    assert r.rc == 2 and "chmod 600" in r.err, r.text  # readable by others: refused
    os.chmod(envfile, 0o600)
    r = cli("schedule", plan, "--install", "--user", cron_user, "--env-file", envfile, env=env)
    assert r.rc == 0, r.text
    line = _entry(_crontab(cron_user))
    assert "s3cret" not in line and f"RESTORER_STATE_DIR={os.environ['RESTORER_STATE_DIR']}" \
        in line
    # the exact line, in cron's bare environment (jobs that never ran are due)
    cron_env = ["env", "-i", "HOME=/root", "LOGNAME=root", "PATH=/usr/bin:/bin",
                "SHELL=/bin/sh"]
    p = subprocess.run([*cron_env, "/bin/sh", "-c", line], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    log = (Path(os.environ["RESTORER_STATE_DIR"]) / "run.log").read_text()
    assert "s3cret" not in log
    # what the shell sees: the run, in the same ledger
    runs = json.loads(cli("history", plan, "--json", env=env).out)
    assert [(x["command"], x["outcome"]) for x in runs[:2]] == [("verify", "ok"),
                                                                ("backup", "ok")], runs
    assert len(json.loads(cli("snapshots", plan, "--json", env=env).out)) == 1
    r = cli("report", plan, "--format", "json", env=env)
    assert r.rc == 0, r.text
    target = json.loads(r.out)["plans"][0]["targets"][0]
    assert target["covered"] and target["restore_tests"]["passed"] == 1


def test_unreadable_plan_installs_nothing_and_uninstall_keeps_the_rest(
        tmp_path: Path, cli, cron_user) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    write_plan(plans / "good.yaml", name="good", schedule={"backup": "0 3 * * *"})
    (plans / "broken.yaml").write_text("version: 1\nname: [unclosed\n")
    subprocess.run(["crontab", "-u", cron_user, "-"], input=OTHER, text=True, check=True)
    r = cli("schedule", plans, "--install", "--user", cron_user)
    assert r.rc == 2 and "broken.yaml" in r.err, r.text
    assert _crontab(cron_user) == OTHER  # nothing installed
    (plans / "broken.yaml").unlink()
    assert cli("schedule", plans, "--install", "--user", cron_user).rc == 0
    assert "# BEGIN restorer" in _crontab(cron_user)
    r = cli("schedule", plans, "--uninstall", "--user", cron_user)
    assert r.rc == 0 and "removed" in r.out, r.text
    assert _crontab(cron_user) == OTHER  # every other byte as it was
    r = cli("schedule", plans, "--uninstall", "--user", cron_user)
    assert r.rc == 0 and "no restorer block" in r.out
