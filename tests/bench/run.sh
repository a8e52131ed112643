#!/usr/bin/env bash
# Everything too long for the suite, in one command: the backup benchmark beside restic and
# borg, the decoder fuzzing under atheris, and the fault catalogue's long loops.
#   bash tests/bench/run.sh [--fuzz-seconds N] [--skip-bench] [-- bench_backup.py options]
set -euo pipefail
cd "$(dirname "$0")/../.."

fuzz_seconds=600
skip_bench=0
while [ $# -gt 0 ]; do
    case "$1" in
        --fuzz-seconds) fuzz_seconds="$2"; shift 2 ;;
        --skip-bench) skip_bench=1; shift ;;
        --) shift; break ;;
        *) break ;;
    esac
done

# what the suite needs (system packages, the virtualenv), without running it
bash tests/run.sh --collect-only -q >/dev/null
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    need=()
    command -v restic >/dev/null || need+=(restic)
    command -v borg >/dev/null || need+=(borgbackup)
    [ -x /usr/bin/time ] || need+=(time)  # GNU time: each step's CPU and peak RSS
    command -v zstd >/dev/null || need+=(zstd)  # the database case's `pg_dump | zstd -3`
    if [ ${#need[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    fi
fi
# coverage-guided fuzzing (binary wheels; not needed by the suite, which uses hypothesis)
.venv/bin/python -m pip install -q --disable-pip-version-check 'atheris>=2.3'

if [ "$skip_bench" = 0 ]; then
    echo "== backup benchmark"
    .venv/bin/python tests/bench/bench_backup.py "$@"
fi
echo "== decoder fuzzing (atheris, ${fuzz_seconds} s per decoder)"
.venv/bin/python tests/bench/fuzz_decoders.py --seconds "$fuzz_seconds"
echo "== fault catalogue, long loops"
exec .venv/bin/python -m pytest -q -s -p no:cacheprovider tests/faults/test_kill_loop.py \
    --faults-long
