"""A 1,200-deep tree through verify and rollback: staging is removed, the live tree is walked
and swapped, and leftovers are cleaned, all without recursion (Python 3.11's shutil.rmtree and
os.walk recurse once per level and end in RecursionError past ~1,000)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import run_cli, write_plan
from tests.faults.test_resources import DEPTH, _describe_chain, _make_chain


def test_verify_and_rollback_of_a_1200_deep_tree(tmp_path: Path) -> None:
    src = tmp_path / "src"
    try:
        _make_chain(src, DEPTH)
        want = _describe_chain(src)
        plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db",
                          targets=[{"name": "data", "kind": "files", "paths": ["src"],
                                    "staging": {"path": "staging"}}])
        assert run_cli("backup", "--init", plan).rc == 0
        r = run_cli("verify", plan, "--json")
        assert r.rc == 0, r.text
        assert "RecursionError" not in r.text
        staging = tmp_path / "staging"
        assert not staging.exists() or not any(staging.iterdir()), "staging was left behind"
        # break the deepest file, then roll back to the verified snapshot
        leaf = src.joinpath(*["d"] * DEPTH, f"f{DEPTH}")
        leaf.write_text("broken")
        r = run_cli("rollback", plan, "--yes")
        assert r.rc == 0, r.text
        assert _describe_chain(src) == want
        r = run_cli("rollback", plan, "--cleanup", "--yes")
        assert r.rc == 0, r.text
        last = json.loads(run_cli("history", plan, "--json").out)[0]
        assert last["outcome"] == "ok", last
    finally:
        subprocess.run(["rm", "-rf", str(src), str(tmp_path / "staging")], check=True)
