"""The signed, anchored ledger as an auditor meets it: the forger's attacks (rewrite rows and
recompute every hash with restorer's own code, delete, insert, cut the tail, re-sign with
another key, delete an anchor, strip the signatures) are each found by `ledger verify`,
`history --verify-chain` and `report --verify`, naming the row; an export verifies offline;
an unsigned ledger is only ever called unsigned."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from restorer.ledger.chain import Head, Signature, row_hash
from restorer.ledger.signing import public_of
from tests.conftest import run_cli, unique_name, write_plan

COLS = "seq, time, run_id, kind, data, prev_hash, hash, sig"


def _plan(root: Path, **extra) -> Path:
    (root / "src").mkdir(exist_ok=True)
    (root / "src" / "index.html").write_text("<h1>shop</h1>")
    return write_plan(
        root / "plan.yaml", ledger={"url": "sqlite:///ledger.db",
                                    "signing_key": "${file:ledger.key}"},
        targets=[{"name": "data", "kind": "files", "paths": ["src"],
                  "staging": {"path": "staging"},
                  "checks": [{"files": {"exist": ["index.html"]}}]}], **extra)


@pytest.fixture(scope="module")
def signed(tmp_path_factory) -> tuple[Path, str, str]:
    """A plan whose ledger holds a backup, a passing restore test, a failing one (the file
    the check wants is gone from the snapshot) and a last backup; its public key."""
    root = tmp_path_factory.mktemp("evidence")
    r = run_cli("ledger", "keygen", "--out", root / "ledger.key", "--json")
    public = json.loads(r.out)["public_key"]
    plan = _plan(root)
    env = {"RESTORER_STATE_DIR": str(root / "state")}
    assert run_cli("backup", "--init", plan, env=env).rc == 0
    assert run_cli("verify", plan, env=env).rc == 0
    (root / "src" / "index.html").unlink()
    (root / "src" / "other.html").write_text("x")
    assert run_cli("backup", plan, env=env).rc == 0
    assert run_cli("verify", plan, env=env).rc == 1
    assert run_cli("backup", plan, env=env).rc == 0
    return root, public, str(plan)


@pytest.fixture
def copy(signed, tmp_path: Path) -> tuple[Path, str]:
    """The signed ledger and repository, copied for one attack."""
    root, public, _ = signed
    shutil.copytree(root, tmp_path / "c", symlinks=True)
    return tmp_path / "c", public


def _rows(db: sqlite3.Connection) -> list[list]:
    return [list(r) for r in db.execute(f"SELECT {COLS} FROM entries ORDER BY seq")]


def _forge(root: Path, change) -> None:
    """What a forger with write access to the ledger does: change the rows, then renumber
    and recompute every hash with restorer's own row_hash, so the chain looks intact."""
    db = sqlite3.connect(root / "ledger.db")
    rows = change(_rows(db))
    prev = "0" * 64
    for i, r in enumerate(rows, 1):
        r[0], r[5] = i, prev
        r[6] = row_hash(prev, i, r[1], r[2], r[3], r[4])
        prev = r[6]
    db.execute("DELETE FROM entries")
    db.executemany(f"INSERT INTO entries ({COLS}) VALUES (?,?,?,?,?,?,?,?)", rows)
    db.commit()
    db.close()


def _failed_verify_rows(rows: list[list]) -> list[int]:
    """Indexes of the failed restore test's check phase and run end."""
    failed = [i for i, r in enumerate(rows) if r[3] == "phase"
              and json.loads(r[4]).get("phase") == "check"
              and json.loads(r[4])["outcome"] == "failed"]
    run = rows[failed[0]][2]
    end = next(i for i, r in enumerate(rows) if r[2] == run and r[3] == "run_end")
    return [failed[0], end]


def _passed(rows: list[list]) -> list[list]:
    """The failed restore test rewritten as passed."""
    for i in _failed_verify_rows(rows):
        d = json.loads(rows[i][4])
        d.update(outcome="ok", error=None)
        if "exit_code" in d:
            d["exit_code"] = 0
        rows[i][4] = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return rows


def _verify(root: Path, *extra: str) -> tuple[int, dict, str]:
    r = run_cli("ledger", "verify", root / "plan.yaml", *extra, "--json",
                env={"RESTORER_STATE_DIR": str(root / "state")})
    return r.rc, json.loads(r.out), r.err


def test_untouched_signed_ledger_verifies(copy) -> None:
    root, public = copy
    rc, v, _ = _verify(root)
    assert rc == 0 and v["status"] == "signed", v
    # five runs, each closed by a signed row and anchored
    assert v["signatures"] == 5 and v["anchors"] == 5 and v["signed_through"] == v["last_seq"]
    assert len(list((root / "repo" / "anchors").iterdir())) == 5
    # the auditor's own copy of the public key gives the same verdict
    rc, v2, _ = _verify(root, "--public-key", public)
    assert rc == 0 and v2["status"] == "signed"


def test_rewritten_failed_test_is_found_by_every_verification(copy, cli) -> None:
    root, _ = copy
    env = {"RESTORER_STATE_DIR": str(root / "state")}
    now = datetime.now(UTC)
    report = root / "before.json"
    assert cli("report", root / "plan.yaml", "--format", "json", "-o", report,
               "--from", (now - timedelta(days=1)).isoformat(),
               "--to", (now + timedelta(hours=1)).isoformat(), env=env).rc in (0, 1)
    db = sqlite3.connect(root / "ledger.db")
    first = _failed_verify_rows(_rows(db))[0] + 1
    db.close()
    _forge(root, _passed)
    rc, v, err = _verify(root)
    assert rc == 1 and v["status"] == "broken"
    assert v["first_problem"]["seq"] == first and v["first_problem"]["what"] == "edited", v
    assert f"row {first} was rewritten" in err
    r = cli("history", root / "plan.yaml", "--verify-chain", env=env)
    assert r.rc == 1 and f"row {first} was rewritten" in r.err
    r = cli("report", "--verify", report, env=env)
    assert r.rc == 1 and f"row {first} was rewritten" in r.text


def test_deleted_row_is_found(copy) -> None:
    root, _ = copy
    victim = 3
    _forge(root, lambda rows: rows[:victim - 1] + rows[victim:])
    rc, v, err = _verify(root)
    assert rc == 1 and v["first_problem"]["seq"] == victim
    assert v["first_problem"]["what"] == "deleted" and f"row {victim} was deleted" in err


def test_inserted_row_is_found(copy) -> None:
    root, _ = copy
    at = 4

    def insert(rows: list[list]) -> list[list]:
        fake = list(rows[at - 1])
        fake[3], fake[4], fake[7] = "phase", json.dumps(
            {"plan": "test", "phase": "check", "outcome": "ok"}), None
        return [*rows[:at - 1], fake, *rows[at - 1:]]

    _forge(root, insert)
    rc, v, err = _verify(root)
    assert rc == 1 and v["first_problem"]["seq"] == at
    assert v["first_problem"]["what"] == "inserted" and f"row {at} was inserted" in err


def test_truncated_tail_is_found_up_to_the_last_anchor(copy) -> None:
    root, _ = copy
    db = sqlite3.connect(root / "ledger.db")
    last = db.execute("SELECT max(seq) FROM entries").fetchone()[0]
    # the last run (the final backup) cut off entirely
    start = db.execute("SELECT min(seq) FROM entries WHERE run_id = (SELECT run_id FROM "
                       "entries WHERE seq = ?)", (last,)).fetchone()[0]
    db.execute("DELETE FROM entries WHERE seq >= ?", (start,))
    db.commit()
    db.close()
    rc, v, err = _verify(root)
    assert rc == 1 and v["first_problem"]["what"] == "truncated"
    assert v["first_problem"]["seq"] == start and f"rows {start}–{last} were deleted" in err


def test_row_re_signed_with_another_key_is_found(copy) -> None:
    root, _ = copy
    mine = Ed25519PrivateKey.generate()
    pub = public_of(mine)
    db = sqlite3.connect(root / "ledger.db")
    first = _failed_verify_rows(_rows(db))[0] + 1
    db.close()
    _forge(root, _passed)
    # the forger signs every closing row again with a key of their own, as restorer would
    db = sqlite3.connect(root / "ledger.db")
    rows = _rows(db)
    start = 1
    for r in rows:
        if r[7] is None:
            continue
        seq = r[0]
        hashes = tuple(x[6] for x in rows if start <= x[0] <= seq)
        prev = rows[start - 2][6] if start > 1 else "0" * 64
        head = Head(seq, r[6], start, prev, hashes)
        sig = Signature(pub.text, base64.b64encode(mine.sign(head.message())).decode(), start)
        db.execute("UPDATE entries SET sig = ? WHERE seq = ?", (sig.text(), seq))
        start = seq + 1
    db.commit()
    db.close()
    rc, v, err = _verify(root)
    assert rc == 1
    whats = {f["what"] for f in v["findings"]}
    # the first re-signed closing row is named, and the anchors still name the rewritten row
    assert v["first_problem"]["what"] == "other_key" and "signed by another key" in err
    assert pub.fingerprint in v["first_problem"]["message"]
    assert {"seq": first, "what": "edited"} in [
        {"seq": f["seq"], "what": f["what"]} for f in v["findings"]]
    assert "other_key" in whats


def test_deleted_anchor_is_found(copy) -> None:
    root, _ = copy
    anchors = sorted((root / "repo" / "anchors").iterdir())
    gone = anchors[2]
    seq = int(gone.name.split("-")[0])
    gone.unlink()
    rc, v, err = _verify(root)
    assert rc == 1 and v["first_problem"] == {
        "seq": seq, "what": "missing_anchor", "message": v["first_problem"]["message"]}
    assert f"row {seq}" in err and "has no anchor in the repository" in err


def test_stripped_signatures_are_found_by_the_anchors(copy) -> None:
    root, _ = copy
    db = sqlite3.connect(root / "ledger.db")
    db.execute("UPDATE entries SET sig = NULL")
    db.commit()
    db.close()
    rc, v, err = _verify(root)
    assert rc == 1 and v["first_problem"]["what"] == "unsigned"
    assert "signature was removed" in err


def test_export_verifies_offline_and_an_edited_export_does_not(copy, tmp_path: Path,
                                                               cli) -> None:
    root, public = copy
    out = tmp_path / "evidence.jsonl"
    r = cli("ledger", "export", root / "plan.yaml", "--since", "90d", "-o", out, "--json",
            env={"RESTORER_STATE_DIR": str(root / "state")})
    assert r.rc == 0, r.text
    info = json.loads(r.out)
    assert info["anchors"] == 5 and info["rows"] >= 10
    # the auditor's machine: a fresh folder, no ledger, no repository, no plan
    shutil.rmtree(root)
    away = tmp_path / "auditor"
    away.mkdir()
    shutil.move(out, away / "evidence.jsonl")
    env = {"RESTORER_STATE_DIR": str(away / "state")}
    r = cli("ledger", "verify", "evidence.jsonl", "--public-key", public, cwd=away, env=env)
    assert r.rc == 0 and "signed: rows 1–" in r.out, r.text
    assert not (away / "state").exists()  # nothing was made on the auditor's machine
    # the export says nothing proven without the key
    r = cli("ledger", "verify", "evidence.jsonl", cwd=away, env=env)
    assert r.rc == 0 and r.out.startswith("ledger evidence.jsonl: unchecked")
    lines = (away / "evidence.jsonl").read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if '"outcome\\":\\"failed' in line)
    lines[i] = lines[i].replace('\\"outcome\\":\\"failed', '\\"outcome\\":\\"ok')
    (away / "evidence.jsonl").write_text("\n".join(lines) + "\n")
    r = cli("ledger", "verify", "evidence.jsonl", "--public-key", public, cwd=away, env=env)
    assert r.rc == 1 and f"row {i} was changed after it was written" in r.err, r.text


def test_unsigned_ledger_is_called_unsigned(tmp_path: Path, cli) -> None:
    (tmp_path / "src").mkdir()
    plan = write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db")
    assert cli("backup", "--init", plan).rc == 0
    assert not (tmp_path / "repo" / "anchors").exists()
    for args in (("ledger", "verify", plan), ("history", plan, "--verify-chain")):
        r = cli(*args)
        assert r.rc == 0 and ": unsigned: hash chain intact" in r.out, r.text
        assert "tamper" not in r.out.lower() and ": signed:" not in r.out


def test_unreadable_key_records_the_run_unsigned(tmp_path: Path, cli) -> None:
    plan = _plan(tmp_path)
    r = cli("backup", "--init", plan)
    assert r.rc == 0, r.text  # a key problem never fails the backup
    assert "ledger.signing_key" in r.err and "recorded unsigned" in r.err
    end = json.loads(cli("history", plan, "--json").out)[0]
    assert end["outcome"] == "ok"
    db = sqlite3.connect(tmp_path / "ledger.db")
    data = json.loads(db.execute("SELECT data FROM entries WHERE kind = 'run_end'").fetchone()[0])
    assert "ledger.signing_key" in data["unsigned"]


def test_repository_that_cannot_take_the_anchor_never_fails_the_run(tmp_path: Path,
                                                                     cli) -> None:
    assert cli("ledger", "keygen", "--out", tmp_path / "ledger.key").rc == 0
    plan = _plan(tmp_path)
    # no repository yet: the backup fails for that, and the anchor is not written either
    r = cli("backup", plan)
    assert r.rc == 1
    assert not (tmp_path / "repo").exists()  # the anchor never made the folder
    assert "could not be anchored" in r.err
    db = sqlite3.connect(tmp_path / "ledger.db")
    note = db.execute("SELECT data FROM entries WHERE kind = 'anchor_failed'").fetchone()
    assert note and "no repository here yet" in json.loads(note[0])["error"]
    # the run whose anchor failed is not reported as a missing anchor
    assert cli("init", plan).rc == 0
    r = cli("ledger", "verify", plan)
    assert r.rc == 0 and "signed:" in r.out, r.text


def test_anchor_on_object_locked_s3_is_retained_and_cannot_be_deleted(tmp_path: Path, cli,
                                                                       moto_server) -> None:
    from botocore.exceptions import ClientError

    bucket = moto_server.make_bucket(unique_name("anchor"), object_lock=True)
    assert cli("ledger", "keygen", "--out", tmp_path / "ledger.key").rc == 0
    plan = _plan(tmp_path, repository={
        "url": f"s3://{bucket}/r", "endpoint_url": moto_server.url, "region": "us-east-1",
        "object_lock_days": 30})
    assert cli("backup", "--init", plan).rc == 0
    assert cli("backup", plan).rc == 0
    c = moto_server.client()
    keys = [o["Key"] for o in c.list_objects_v2(Bucket=bucket, Prefix="r/anchors/")["Contents"]]
    assert len(keys) == 2  # one per run
    for key in keys:
        # (moto 5.2 does not serve GetObjectRetention; HeadObject carries the same fields)
        head = c.head_object(Bucket=bucket, Key=key)
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=29)
        version = head["VersionId"]
        with pytest.raises(ClientError) as e:
            c.delete_object(Bucket=bucket, Key=key, VersionId=version)
        assert e.value.response["Error"]["Code"] == "AccessDenied"
    r = cli("ledger", "verify", plan)
    assert r.rc == 0 and "2 anchors match" in r.out, r.text
    # a plain DELETE only hides a version on a versioned bucket: the anchor still counts,
    # and the attempt is said
    c.delete_object(Bucket=bucket, Key=keys[0])
    assert not c.list_objects_v2(Bucket=bucket, Prefix=keys[0]).get("Contents")
    r = cli("ledger", "verify", plan)
    assert r.rc == 0 and "2 anchors match" in r.out, r.text
    assert f"{keys[0][2:]} was deleted or overwritten in the store, which kept it" in r.out


def test_report_with_an_offset_period_verifies(copy, cli) -> None:
    root, _ = copy
    env = {"RESTORER_STATE_DIR": str(root / "state")}
    now = datetime.now(UTC).astimezone(timezone(timedelta(hours=2)))
    out = root / "r.json"
    r = cli("report", root / "plan.yaml", "--format", "json", "-o", out,
            "--from", (now - timedelta(days=1)).isoformat(),
            "--to", (now + timedelta(hours=1)).isoformat(), env=env)
    assert r.rc == 0, r.text
    led = json.loads(out.read_text())["evidence"]["ledgers"][0]
    assert led["status"] == "signed" and led["chain_intact"], led
    r = cli("report", "--verify", out, env=env)
    assert r.rc == 0, r.text


def test_export_without_the_repository_is_not_called_broken(copy, tmp_path: Path,
                                                            cli) -> None:
    root, public = copy
    shutil.move(root / "repo", root / "repo.away")  # the repository is out of reach
    out = tmp_path / "e.jsonl"
    r = cli("ledger", "export", root / "plan.yaml", "-o", out,
            env={"RESTORER_STATE_DIR": str(root / "state")})
    assert r.rc == 0, r.text
    r = cli("ledger", "verify", out, "--public-key", public, "--json")
    v = json.loads(r.out)
    assert r.rc == 0 and v["status"] == "unanchored", v
    assert "anchors not checked" in " ".join(v["notes"])


def test_key_rotation_and_a_key_not_yet_used(copy, cli) -> None:
    root, old = copy
    env = {"RESTORER_STATE_DIR": str(root / "state")}
    # a new key: the old one stays trusted for the rows it signed
    (root / "ledger.key").rename(root / "old.key")
    assert cli("ledger", "keygen", "--out", root / "ledger.key").rc == 0
    plan = root / "plan.yaml"
    text = plan.read_text()
    r = cli("ledger", "verify", plan, env=env)
    assert r.rc == 1 and "signed by another key" in r.err  # the old rows, until it is listed
    plan.write_text(text.replace("signing_key: ${file:ledger.key}",
                                      f"signing_key: ${{file:ledger.key}}\n  public_keys: "
                                      f"['{old}']"))
    assert cli("backup", plan, env=env).rc == 0
    r = cli("ledger", "verify", plan, "--json", env=env)
    assert r.rc == 0 and json.loads(r.out)["status"] == "signed", r.text
    assert len(json.loads(r.out)["signed_by"]) == 2
    # a plan that has just been given a key, before its first signed run: unsigned, not broken
    fresh = root / "fresh"
    fresh.mkdir()
    (fresh / "src").mkdir()
    p = write_plan(fresh / "plan.yaml", ledger="sqlite:///ledger.db")
    assert cli("backup", "--init", p, env=env).rc == 0
    assert cli("ledger", "keygen", "--out", fresh / "ledger.key").rc == 0
    p = _plan(fresh)
    r = cli("ledger", "verify", p, env=env)
    assert r.rc == 0 and ": unsigned: hash chain intact over rows 1–" in r.out, r.text


def test_forged_signature_start_and_a_key_file_that_is_not_a_key(copy, tmp_path: Path,
                                                                 cli) -> None:
    root, _ = copy
    db = sqlite3.connect(root / "ledger.db")
    seq, sig = db.execute("SELECT seq, sig FROM entries WHERE sig IS NOT NULL "
                          "ORDER BY seq DESC LIMIT 1").fetchone()
    d = json.loads(sig)
    d["from"] = 0  # "my signature covers nothing I can be held to"
    db.execute("UPDATE entries SET sig = ? WHERE seq = ?", (json.dumps(d), seq))
    db.commit()
    db.close()
    rc, v, err = _verify(root)
    assert rc == 1 and v["first_problem"]["seq"] == seq, v
    assert v["first_problem"]["what"] == "bad_signature" and "forged" in err
    secret = tmp_path / "repo.pass"
    secret.write_text("hunter2-not-a-key\n")
    r = cli("ledger", "verify", root / "plan.yaml", "--public-key", secret,
            env={"RESTORER_STATE_DIR": str(root / "state")})
    assert r.rc == 2 and "not an Ed25519 public key" in r.err and "hunter2" not in r.text


def test_an_export_with_absurd_numbers_is_a_clear_error(copy, tmp_path: Path, cli) -> None:
    root, public = copy
    out = tmp_path / "e.jsonl"
    assert cli("ledger", "export", root / "plan.yaml", "-o", out,
               env={"RESTORER_STATE_DIR": str(root / "state")}).rc == 0
    lines = out.read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if '"type": "anchor"' in line)
    d = json.loads(lines[i])
    d["from"] = 1e999
    lines[i] = json.dumps(d)
    out.write_text("\n".join(lines) + "\n")
    r = cli("ledger", "verify", out, "--public-key", public)
    assert r.rc == 1 and "not a line of a ledger export" in r.err
    assert "Traceback" not in r.text


def test_next_run_does_not_sign_over_a_rewritten_tail_unseen(tmp_path: Path, cli) -> None:
    """The forger rewrites the last run and removes its signature and anchor (a local
    repository lets them): that tail is not covered, and says so; the next run on the
    machine notices that the row it signed last has changed, and its signature carries that."""
    assert cli("ledger", "keygen", "--out", tmp_path / "ledger.key").rc == 0
    plan = _plan(tmp_path)
    assert cli("backup", "--init", plan).rc == 0
    assert cli("backup", plan).rc == 0
    db = sqlite3.connect(tmp_path / "ledger.db")
    last = db.execute("SELECT max(seq) FROM entries").fetchone()[0]
    db.close()
    anchors = sorted((tmp_path / "repo" / "anchors").iterdir())
    anchors[-1].unlink()

    def rewrite(rows: list[list]) -> list[list]:
        rows[-1][7] = None  # the signature the forger cannot redo
        d = json.loads(rows[-1][4])
        d["outcome"] = "failed"
        rows[-1][4] = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return rows

    _forge(tmp_path, rewrite)
    # a closing row with neither signature nor a reason is caught at once ...
    r = cli("ledger", "verify", plan)
    assert r.rc == 1 and f"row {last} (the end of run" in r.err and "carries no" in r.err

    def excuse(rows: list[list]) -> list[list]:
        d = json.loads(rows[-1][4])
        d["unsigned"] = "the key could not be read"
        rows[-1][4] = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return rows

    _forge(tmp_path, excuse)  # ... so the forger gives one
    r = cli("ledger", "verify", plan, "--json")
    v = json.loads(r.out)
    # the rewritten tail is not caught yet (the documented limit), but not called covered
    assert r.rc == 0 and v["signed_through"] < last, v
    assert f"rows {v['signed_through'] + 1}–{last} come after the last signature" in v["summary"]
    assert cli("backup", plan).rc == 0
    r = cli("ledger", "verify", plan)
    assert r.rc == 1, r.text
    assert f"the signer found row {last}, which this machine signed last" in r.err


def test_signing_turned_off_and_on_again_is_no_finding(tmp_path: Path, cli) -> None:
    assert cli("ledger", "keygen", "--out", tmp_path / "ledger.key").rc == 0
    signed = _plan(tmp_path)
    text = signed.read_text()
    assert cli("backup", "--init", signed).rc == 0
    # the key taken out of the plan for a while: those runs are plainly unsigned
    write_plan(tmp_path / "plan.yaml", ledger="sqlite:///ledger.db")
    assert cli("backup", signed).rc == 0
    signed.write_text(text)
    assert cli("backup", signed).rc == 0
    r = cli("ledger", "verify", signed, "--json")
    assert r.rc == 0 and json.loads(r.out)["status"] == "signed", r.text


def test_planted_objects_under_anchors_are_findings_not_crashes(copy) -> None:
    root, _ = copy
    folder = root / "repo" / "anchors"
    good = json.loads(sorted(folder.iterdir())[0].read_text())
    pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----"
    pem_key = dict(good, key=pem)
    (folder / "000000000099-planted").write_text(json.dumps(pem_key))
    (folder / "000000000098-nested").write_text("[" * 100_000 + "]" * 100_000)
    (folder / "000000000097-huge").write_bytes(b"x" * (2 << 20))
    rc, v, err = _verify(root)
    assert rc == 1 and "Traceback" not in err
    messages = " ".join(f["message"] for f in v["findings"])
    assert "000000000098-nested is not an anchor" in messages
    assert "000000000097-huge is not an anchor (too large" in messages
    assert "does not match its own signature" in messages  # the PEM-keyed one


def test_a_value_of_the_wrong_type_in_the_ledger_is_named(copy) -> None:
    root, _ = copy
    db = sqlite3.connect(root / "ledger.db")
    # the same text stored as a BLOB is the same row
    db.execute("UPDATE entries SET data = CAST(data AS BLOB) WHERE seq = 2")
    db.commit()
    rc, v, err = _verify(root)
    assert rc == 0, err
    # bytes that are not the row's text are an edit, named, never a crash
    db.execute("UPDATE entries SET data = X'7b7dff', time = 3 WHERE seq = 2")
    db.commit()
    db.close()
    rc, v, err = _verify(root)
    assert rc == 1 and v["first_problem"]["seq"] == 2 and "Traceback" not in err


def test_signed_runs_under_cron_and_after_a_kill(tmp_path: Path) -> None:
    """A signing plan as cron runs it (env -i HOME PATH=/usr/bin:/bin: no RESTORER_STATE_DIR,
    the state folder under HOME), with a backup killed half-way in between: every finished
    run is signed and anchored, the killed one is covered by the next signature."""
    import os
    import signal
    import subprocess
    import sys
    import time

    assert run_cli("ledger", "keygen", "--out", tmp_path / "ledger.key").rc == 0
    plan = _plan(tmp_path, hooks={"before": ["sleep 30"]})
    home = tmp_path / "home"
    home.mkdir()
    cron = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LOGNAME": "root", "SHELL": "/bin/sh"}
    py = [sys.executable, "-m", "restorer"]
    root = str(Path(__file__).resolve().parents[2])

    def under_cron(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*py, *args], env={**cron, "PYTHONPATH": root},
                              capture_output=True, text=True, cwd=home, timeout=120)

    assert under_cron("init", str(plan)).returncode == 0
    p = subprocess.Popen([*py, "backup", str(plan)], env={**cron, "PYTHONPATH": root},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=home)
    time.sleep(3)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    plain = _plan(tmp_path)  # the same plan without the slow hook
    assert under_cron("backup", str(plain)).returncode == 0
    r = under_cron("ledger", "verify", str(plain), "--json")
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    assert v["status"] == "signed" and v["signatures"] == 2 and v["anchors"] == 2, v
    assert v["signed_through"] == v["last_seq"]
    assert (home / ".local" / "state" / "restorer" / "ledger-heads.json").exists()
    runs = json.loads(under_cron("history", str(plain), "--json").stdout)
    assert [(r["command"], r["outcome"]) for r in runs] == [
        ("backup", "ok"), ("backup", "interrupted"), ("init", "ok")]
