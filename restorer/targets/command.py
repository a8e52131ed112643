"""command: any program's stdout is the backup, and the restore command reads it back on
stdin (with the destination as $RESTORER_TO), here or over via_ssh."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, BinaryIO

from restorer.errors import RestoreError
from restorer.plan import models
from restorer.repo.snapshot import Snapshot
from restorer.sources.process import feed, output_of
from restorer.sources.remote import q, remote_feed, remote_output, ssh_session
from restorer.targets.base import RestoreRequest, TargetContext, can, cannot
from restorer.targets.stream import StreamKind


class CommandKind(StreamKind):
    name = "command"
    model = models.CommandTarget
    what = "any program's stdout (backup) and stdin (restore)"
    capabilities = {
        "backup": can("the backup command's stdout, streamed"),
        "restore": can("feeds the snapshot to the restore command, with RESTORER_TO set"),
        "verify": cannot("restorer cannot know where a command's restore lands to check it; "
                         "verify the system it restores into with a target of its own kind"),
        "rollback": cannot("a command has no live state restorer could swap"),
        "prune": can("as files"),
    }

    def open_dump(self, ctx: TargetContext, t: models.CommandTarget
                  ) -> AbstractContextManager[BinaryIO]:
        what = f"target '{t.name}'"
        if t.via_ssh is None:
            return output_of(t.backup, what=what, timeout=t.timeout)  # type: ignore[return-value]
        return _remote_output(ctx, t, what)

    def restore_into(self, ctx: TargetContext, t: Any | None, snap: Snapshot,
                     chunks: Iterator[bytes], req: RestoreRequest, what: str) -> None:
        if not isinstance(t, models.CommandTarget):
            raise RestoreError(f"the plan has no command target '{snap.target}' to say how "
                               "to restore this snapshot")
        if t.via_ssh is not None:
            params = ctx.ssh(t.via_ssh, f"targets.{t.name}.via_ssh")
            with ssh_session(params, what) as client:
                remote_feed(client, f"RESTORER_TO={q(req.dest)}; export RESTORER_TO; "
                            f"{t.restore}", chunks, what=what, timeout=t.timeout)
        else:
            env = {**os.environ, "RESTORER_TO": req.dest}
            feed(t.restore, chunks, what=what, env=env, timeout=t.timeout)


@contextmanager
def _remote_output(ctx: TargetContext, t: models.CommandTarget, what: str
                   ) -> Iterator[BinaryIO]:
    assert t.via_ssh is not None
    with ssh_session(ctx.ssh(t.via_ssh, f"targets.{t.name}.via_ssh"), what) as client, \
            remote_output(client, t.backup, what=what, timeout=t.timeout) as out:
        yield out


KIND = CommandKind()
