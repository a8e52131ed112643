"""SSH connections with verified host keys, shared by the SFTP backend and remote targets.

An unknown host key is refused unless accept-new is allowed (then it is recorded in the
known_hosts file); a changed key is always refused. Connection failures are StorageErrors
whose messages name the host and what to do.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from restorer.errors import StorageError

log = logging.getLogger("restorer.ssh")


class HostKeyError(StorageError):
    """The server's host key is unknown or changed: never retried."""


@dataclass(frozen=True)
class SSHParams:
    host: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    key_passphrase: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    accept_new_host_key: bool = False
    connect_timeout: float = 15.0
    keepalive: int = 30

    def __repr__(self) -> str:  # never show the passphrase
        return f"SSHParams({self.user or ''}@{self.host}:{self.port})"


_quieted = threading.Lock()
_quiet = False


def _from_prefetch(tb: TracebackType | None) -> bool:
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "_prefetch_thread" and "paramiko" in code.co_filename:
            return True
        tb = tb.tb_next
    return False


def _quiet_paramiko() -> None:
    """Keep paramiko's own noise off stderr when a connection drops. Its transport logs
    "Socket exception: ..." at ERROR with no handler configured (Python's last-resort handler
    then prints it bare), and the thread behind readv/prefetch has no error handling, so a
    dropped connection prints its traceback. The read waiting on that thread fails with the
    same dropped connection and is reported (and retried) by us, so both only mislead."""
    global _quiet
    with _quieted:
        if _quiet:
            return
        _quiet = True
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        import paramiko

        if isinstance(args.exc_value, EOFError | OSError | paramiko.SSHException) \
                and _from_prefetch(args.exc_traceback):
            log.debug("SFTP read-ahead thread ended: %r", args.exc_value)
            return
        previous(args)

    threading.excepthook = hook


def connect_ssh(p: SSHParams, location: str) -> Any:
    """A connected paramiko SSHClient; StorageError (HostKeyError) with a hint otherwise."""
    import paramiko

    _quiet_paramiko()

    known_hosts = os.path.expanduser(p.known_hosts)
    key_file = os.path.expanduser(p.key_file) if p.key_file else None
    client = paramiko.SSHClient()
    if os.path.exists(known_hosts):
        client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(_Policy(p, known_hosts, location))
    try:
        client.connect(
            p.host, port=p.port, username=p.user, key_filename=key_file,
            passphrase=p.key_passphrase, timeout=p.connect_timeout,
            banner_timeout=p.connect_timeout, auth_timeout=p.connect_timeout,
            allow_agent=key_file is None, look_for_keys=key_file is None,
        )
    except paramiko.BadHostKeyException as e:
        client.close()
        raise HostKeyError(
            f"{location}: the host key of {p.host} has CHANGED "
            f"(got {e.key.get_name()} {e.key.get_fingerprint().hex()}); refusing to connect",
            hint=f"if the server was really re-keyed, remove its old line from "
            f"{known_hosts} (ssh-keygen -R {p.host}) and verify the new key",
        ) from None
    except HostKeyError:
        client.close()
        raise
    except paramiko.AuthenticationException as e:
        client.close()
        raise StorageError(
            f"{location}: authentication as {p.user or 'the current user'} failed: {e}",
            hint="check the key_file in the plan and the server's authorized_keys",
        ) from None
    except paramiko.PasswordRequiredException:
        client.close()
        raise StorageError(f"{location}: the key file {key_file} is encrypted",
                           hint="give key_passphrase: ${env:...} in the plan") from None
    except (OSError, paramiko.SSHException, EOFError) as e:
        client.close()
        # paramiko's "no address answered" error reads "[Errno None] Unable to connect ...":
        # its strerror alone is the sentence
        why = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise StorageError(f"{location}: cannot connect: {why}") from e
    transport = client.get_transport()
    if transport is not None and p.keepalive:
        transport.set_keepalive(p.keepalive)
    return client


class _Policy:
    """Missing host key: refuse, or record it when the plan allows accept-new."""

    def __init__(self, p: SSHParams, known_hosts: str, location: str) -> None:
        self.p = p
        self.known_hosts = known_hosts
        self.location = location

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        fp = f"{key.get_name()} SHA256-hex:{key.get_fingerprint().hex()}"
        if not self.p.accept_new_host_key:
            raise HostKeyError(
                f"{self.location}: the host key of {hostname} ({fp}) is not in "
                f"{self.known_hosts}; refusing to connect to an unverified host",
                hint=f"add it (ssh-keyscan -p {self.p.port} {self.p.host} >> {self.known_hosts}"
                ", then verify the fingerprint), or set accept_new_host_key: true to trust it "
                "on first use",
            )
        client.get_host_keys().add(hostname, key.get_name(), key)
        Path(self.known_hosts).parent.mkdir(parents=True, exist_ok=True)
        client.save_host_keys(self.known_hosts)
        log.warning("recorded the new host key of %s (%s) in %s", hostname, fp,
                    self.known_hosts)
