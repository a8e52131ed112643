"""Real services for tests, on loopback only: a moto S3 server, an OpenSSH sshd, and small
fault-injecting proxies in front of them."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


def process_tree(pid: int) -> list[int]:
    """`pid`, then every process below it (sshd forks one per connection; restorer its
    tools), read from /proc."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# --- S3 (moto server mode) --------------------------------------------------------------

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIATESTRESTORER0001",
    "AWS_SECRET_ACCESS_KEY": "restorer-test-secret-key-do-not-print",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class MotoServer:
    port: int
    server: object

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"])

    def make_bucket(self, name: str, object_lock: bool = False) -> str:
        kw = {"ObjectLockEnabledForBucket": True} if object_lock else {}
        self.client().create_bucket(Bucket=name, **kw)
        return name


def start_moto() -> MotoServer:
    from moto.server import ThreadedMotoServer

    for k, v in AWS_ENV.items():
        os.environ[k] = v
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_port(port)
    return MotoServer(port, server)


# --- HTTP fault proxy -------------------------------------------------------------------


@dataclass
class FaultPlan:
    """Decides, per request, whether to pass it on or answer with a fault."""

    #: called with (method, path, request number); returns None to forward, or a fault:
    #: ("status", code, s3_error_code): answer with that error;
    #: ("delay", seconds): wait, then forward;
    #: ("reset",): read the request, drop it, reset the connection (no answer);
    #: ("reset_after_forward",): forward it (the store acts on it), reset instead of answering;
    #: ("cut_body", fraction): forward, send the headers (full Content-Length) and that
    #: fraction of the body, then reset;
    #: ("stall", seconds): send nothing for that long (or until the proxy closes), then reset;
    #: ("stall_body", seconds): forward, send the headers and half the body, then nothing
    #: for that long, then reset
    decide: Callable[[str, str, int], tuple | None] = lambda m, p, n: None
    #: consulted when `decide` forwards: sees the request body (AWS query APIs name the
    #: operation there, e.g. b"Action=CopySnapshot")
    decide_body: Callable[[bytes], tuple | None] = lambda body: None
    requests: int = 0
    faults: int = 0
    log: list[tuple[str, str, str]] = field(default_factory=list)


_HOP_HEADERS = ("connection", "keep-alive", "transfer-encoding", "content-length", "server",
                "date")


class FaultProxy:
    """An HTTP proxy on loopback in front of `upstream_port` that injects faults."""

    def __init__(self, upstream_port: int, plan: FaultPlan) -> None:
        self.plan = plan
        self.upstream_port = upstream_port
        #: set on close: ends every stall at once, so no handler outlives the test
        self.closing = threading.Event()
        counter = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def _reset(self) -> None:
                # SO_LINGER 0: close() sends a RST, as a crashed server or middlebox does
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                conn = HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("connection", "keep-alive")}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    return resp.status, resp.getheaders(), resp.read()
                finally:
                    conn.close()

            def _send_head(self, status: int, headers: list[tuple[str, str]],
                           length: int) -> None:
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in _HOP_HEADERS:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(length))
                self.end_headers()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with counter:
                    proxy.plan.requests += 1
                    n = proxy.plan.requests
                fault = proxy.plan.decide(self.command, self.path, n) or \
                    proxy.plan.decide_body(body)
                if fault is not None:
                    proxy.plan.faults += 1
                    proxy.plan.log.append((self.command, self.path, str(fault[-1])
                                           if fault[0] == "status" else fault[0]))
                kind = fault[0] if fault is not None else None
                if kind == "delay":
                    time.sleep(fault[1])  # type: ignore[index]
                    kind = None
                if kind == "status":
                    _, status, code = fault  # type: ignore[misc]
                    xml = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                           f"<Message>injected {code}</Message></Error>").encode()
                    self._send_head(status, [("Content-Type", "application/xml")], len(xml))
                    if self.command != "HEAD":
                        self.wfile.write(xml)
                    return
                if kind == "reset":
                    self._reset()
                    return
                if kind == "stall":
                    proxy.closing.wait(fault[1])  # type: ignore[index]
                    self._reset()
                    return
                status, headers, data = self._forward(body)
                if kind == "reset_after_forward":
                    self._reset()
                    return
                self._send_head(status, headers, len(data))
                if self.command == "HEAD":
                    return
                if kind in ("cut_body", "stall_body"):
                    part = 0.5 if kind == "stall_body" else float(fault[1])  # type: ignore[index]
                    self.wfile.write(data[:int(len(data) * part)])
                    # let the client take the headers and the first bytes before the end
                    time.sleep(0.05)
                    if kind == "stall_body":
                        proxy.closing.wait(fault[1])  # type: ignore[index]
                    self._reset()
                    return
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


# --- SSH (a real OpenSSH sshd) ----------------------------------------------------------


@dataclass
class SSHServer:
    port: int
    proc: subprocess.Popen
    user: str
    key_file: Path
    known_hosts: Path
    host_pub: str
    root: Path

    def url(self, path: Path | str, port: int | None = None) -> str:
        return f"sftp://{self.user}@127.0.0.1:{port or self.port}{path}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_sshd(workdir: Path, wrap: list[str] | None = None) -> SSHServer:
    """`wrap` runs sshd under a command (e.g. setpriv, to drop capabilities)."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd):
        pytest.fail("OpenSSH server not installed: run the suite through tests/run.sh, which "
                    "installs openssh-server")
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = workdir / "host_ed25519"
    user_key = workdir / "user_ed25519"
    for k in (host_key, user_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(k)],
                       check=True)
    auth = workdir / "authorized_keys"
    shutil.copy(f"{user_key}.pub", auth)
    os.chmod(auth, 0o600)
    port = free_port()
    user = os.environ.get("USER") or subprocess.run(
        ["id", "-un"], capture_output=True, text=True).stdout.strip()
    config = workdir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {auth}\nPidFile {workdir}/sshd.pid\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\n"
        "UsePAM no\nSubsystem sftp internal-sftp\nClientAliveInterval 10\nMaxStartups 50\n"
        "MaxSessions 50\nLogLevel ERROR\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    with open(workdir / "sshd.log", "wb") as errlog:
        proc = subprocess.Popen([*(wrap or []), sshd, "-D", "-e", "-f", str(config)],
                                stdout=subprocess.DEVNULL, stderr=errlog)
    wait_port(port)
    host_pub = (workdir / "host_ed25519.pub").read_text().split()
    known = workdir / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    root = workdir / "storage"
    root.mkdir()
    return SSHServer(port, proc, user, user_key, known, f"{host_pub[0]} {host_pub[1]}", root)


class TCPProxy:
    """A loopback TCP relay whose live connections can be cut (a dropped network)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(50)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.bytes_up = 0
        self.accepted = 0
        self._lock = threading.Lock()
        #: cut every connection once this many client->server bytes passed (None: never)
        self.cut_after: int | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self.conns += [c, u]
                self.accepted += 1
            threading.Thread(target=self._pipe, args=(c, u, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, False), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket, up: bool) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
                if up:
                    with self._lock:
                        self.bytes_up += len(data)
                        cut = self.cut_after is not None and self.bytes_up >= self.cut_after
                        if cut:
                            self.cut_after = None
                    if cut:
                        self.cut_all()
                        return
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut_all(self) -> None:
        with self._lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self.cut_all()
        self.sock.close()


# --- PostgreSQL -------------------------------------------------------------------------


def _pg_ok(dsn: str) -> bool:
    r = subprocess.run(["psql", "-X", "-Atc", "select 1", "--dbname", dsn],
                       capture_output=True, text=True, env={**os.environ,
                                                            "PGCONNECT_TIMEOUT": "3"})
    return r.returncode == 0 and r.stdout.strip() == "1"


#: server DSN -> (run-as prefix, bin dir, data dir, work dir) of the clusters started here
_THROWAWAY_PG: dict[str, tuple[list[str], Path, Path, Path]] = {}


def restart_postgres(dsn: str) -> None:
    """Restart a throwaway server `start_postgres(force_new=True)` made, the way an operator
    does (`pg_ctl restart -m fast`: open sessions are ended at once), waiting until it is up."""
    as_user, bindir, data, workdir = _THROWAWAY_PG[dsn]
    port = dsn.rsplit(":", 1)[1]
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-m", "fast",
                    "-l", str(workdir / "pg.log"), "-o",
                    f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1", "restart"],
                   check=True, capture_output=True)


def start_postgres(workdir: Path, force_new: bool = False) -> tuple[str, Callable[[], None]]:
    """(server DSN without a database, stop function): the machine's server on
    127.0.0.1:5432 when it answers, else a throwaway cluster started here."""
    if shutil.which("psql") is None:
        pytest.fail("psql is not installed: run the suite through tests/run.sh")
    local = "postgresql://postgres@127.0.0.1:5432"
    if not force_new and _pg_ok(local + "/postgres"):
        return local, lambda: None
    import glob

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.fail("no PostgreSQL server here and no server binaries to start one: run the "
                    "suite through tests/run.sh, which installs postgresql")
    import tempfile

    bindir = Path(bins[-1]).parent
    # the server refuses to run as root, and its user must reach the directory: pytest's
    # temporary folders are private to root, so the cluster lives in /var/tmp
    workdir = Path(tempfile.mkdtemp(prefix="restorer-pg-", dir="/var/tmp"))
    data = workdir / "pgdata"
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth=trust"], check=True, capture_output=True)
    port = free_port()
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l",
                    str(workdir / "pg.log"), "-o",
                    f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    dsn = f"postgresql://postgres@127.0.0.1:{port}"
    _THROWAWAY_PG[dsn] = (as_user, bindir, data, workdir)

    def stop() -> None:
        _THROWAWAY_PG.pop(dsn, None)
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast",
                        "stop"], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)

    return dsn, stop


# --- MariaDB / MySQL --------------------------------------------------------------------


def _my_ok(port: int) -> bool:
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        return False
    r = subprocess.run([client, "--protocol=TCP", "-h", "127.0.0.1", "-P", str(port), "-u",
                        "root", "--connect-timeout=3", "-N", "-e", "select 1"],
                       capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.strip() == "1"


def start_mariadb(workdir: Path, force_new: bool = False) -> tuple[str, Callable[[], None]]:
    """(server DSN without a database, stop function): the machine's server on
    127.0.0.1:3306 when it answers, else a throwaway one started here."""
    if not force_new and _my_ok(3306):
        return "mysql://root@127.0.0.1:3306", lambda: None
    server = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    if not os.path.exists(server) or install is None:
        pytest.fail("no MariaDB server here and no server binaries to start one: run the "
                    "suite through tests/run.sh, which installs mariadb-server")
    data = workdir / "data"
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run([install, "--no-defaults", f"--datadir={data}", "--user=root",
                    "--auth-root-authentication-method=normal", "--skip-test-db"],
                   check=True, capture_output=True)
    port = free_port()
    with open(workdir / "mariadb.log", "wb") as log:
        proc = subprocess.Popen([server, "--no-defaults", f"--datadir={data}", "--user=root",
                                 f"--port={port}", "--bind-address=127.0.0.1",
                                 f"--socket={workdir}/mysqld.sock", "--skip-log-bin"],
                                stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while not _my_ok(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"throwaway MariaDB did not start; see {workdir}/mariadb.log")
        time.sleep(0.2)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()

    return f"mysql://root@127.0.0.1:{port}", stop
