"""Coverage-guided fuzzing of the repository decoders with atheris (the targets of
tests/faults/decoder_targets.py, which hypothesis also runs in the suite).

    .venv/bin/python tests/bench/fuzz_decoders.py [--seconds 60] [--target NAME ...]

Each target runs in its own process for --seconds, seeded with its valid record. A finding is
any exception but a RestorerError naming the record; atheris writes the input that caused it
(crash-*) into the work folder. Prints executions and findings per target.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def child(name: str, seconds: int, corpus: Path) -> None:
    import atheris

    with atheris.instrument_imports(include=["restorer"]):
        from tests.faults import decoder_targets as targets

    target = targets.TARGETS[name]
    corpus.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"scratch-{name}-", dir=corpus.parent))
    (corpus / "seed").write_bytes(target.seed)

    def one(data: bytes) -> None:
        targets.run_one(target, data, work)

    atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", "-rss_limit_mb=4096",
                   f"-artifact_prefix={corpus.parent}/crash-{name}-", str(corpus)], one)
    atheris.Fuzz()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60, help="per target")
    ap.add_argument("--target", action="append", default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="restorer-fuzz-", dir="/var/tmp"))
    if a.child:
        child(a.child, a.seconds, work / f"corpus-{a.child}")
        return
    from tests.faults.decoder_targets import TARGETS

    names = a.target or sorted(TARGETS)
    total_runs, total_found = 0, 0
    print(f"fuzzing {len(names)} decoders, {a.seconds} s each, in {work}")
    for name in names:
        p = subprocess.run([sys.executable, __file__, "--child", name, "--seconds",
                            str(a.seconds), "--workdir", str(work)],
                           capture_output=True, text=True, cwd=ROOT)
        runs = re.findall(r"Done (\d+) runs", p.stderr) or re.findall(r"#(\d+)\s", p.stderr)
        n = int(runs[-1]) if runs else 0
        found = "Uncaught Python exception" in p.stderr or bool(list(work.glob(f"crash-{name}-*")))
        if p.returncode != 0 and not found:
            print(p.stderr[-3000:])
            raise SystemExit(f"the fuzzer for {name} did not run")
        total_runs += n
        total_found += found
        status = "FINDING (see crash-* in the work folder)" if found else "no finding"
        print(f"  {name:12} {n:>10,} executions  {status}")
        if found:
            print("    " + "\n    ".join(p.stderr.strip().splitlines()[-25:]))
    print(f"total: {total_runs:,} executions in {len(names) * a.seconds} s, "
          f"{total_found} target(s) with findings")
    sys.exit(1 if total_found else 0)


if __name__ == "__main__":
    main()
