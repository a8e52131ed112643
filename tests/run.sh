#!/usr/bin/env bash
# Installs everything the test suite needs (system packages, a virtualenv with the project and
# its test extras), checks style, and runs the whole suite. Used by CI (.ci/run) and by people.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    need=()
    python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
    # a real OpenSSH server for the SFTP tests (started per session on a loopback port)
    [ -x /usr/sbin/sshd ] || need+=(openssh-server)
    # the crontab program, for `schedule --install` (tested on a throwaway user's crontab)
    command -v crontab >/dev/null || need+=(cron)
    # a real headless browser for the HTML report test (driven by Playwright, no download)
    command -v chromium >/dev/null || need+=(chromium fonts-dejavu-core)
    # the lock-takeover test runs the pruning process under a faked clock; the rollback kill
    # tests stop the process at a chosen rename with strace's fault injection
    command -v faketime >/dev/null || need+=(faketime)
    command -v strace >/dev/null || need+=(strace)
    # the signal tests find a run's hook child with pgrep; setpriv drops root's capabilities
    command -v pgrep >/dev/null || need+=(procps)
    command -v setpriv >/dev/null || need+=(util-linux)
    # PostgreSQL client tools (and a server to start when none runs on 127.0.0.1:5432)
    command -v pg_dump >/dev/null || need+=(postgresql postgresql-client)
    command -v mariadb-dump >/dev/null || command -v mysqldump >/dev/null \
        || need+=(mariadb-server mariadb-client)
    if [ ${#need[@]} -gt 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}"
    fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check restorer tests
# two workers: a test mostly waits on one restorer process, so one core would sit idle;
# --dist loadscope keeps each module (and its module-scoped fixtures) on one worker
exec .venv/bin/python -m pytest -q -n "${RESTORER_TEST_WORKERS:-2}" --dist loadscope "$@"
