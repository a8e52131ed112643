"""One root exception with a hint; the CLI alone maps these to exit codes."""

from __future__ import annotations

from restorer.outcome import Outcome, exit_code


class Terminated(BaseException):
    """SIGTERM, SIGHUP or SIGINT arrived: the run ends, cleaning up on the way (locks
    released, the ledger told). A BaseException, like KeyboardInterrupt, so no `except
    Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"terminated by {self.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class RestorerError(Exception):
    """An error a person can act on: `message` says what happened, `hint` what to do; its
    `outcome` says how the command ended, and the exit code follows from that."""

    outcome = Outcome.FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    @property
    def exit_code(self) -> int:
        return exit_code(self.outcome)

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\nHint: {self.hint}"
        return self.message


class PlanError(RestorerError):
    """The plan is invalid, or a secret it references cannot be resolved."""

    outcome = Outcome.USAGE


class UsageError(RestorerError):
    """The command line asks for something that cannot be done as asked."""

    outcome = Outcome.USAGE


class StorageError(RestorerError):
    """A storage backend failed (after any retries)."""


class NotFoundError(StorageError):
    """A named object does not exist in the store."""


class AlreadyExistsError(StorageError):
    """A write-once object already exists."""


class RepositoryError(RestorerError):
    """The repository is missing, damaged, or does not match the plan."""


class WrongPasswordError(RepositoryError):
    """No key in the repository opens with the given password."""


class IntegrityError(RepositoryError):
    """Stored data does not match its id: damaged or tampered with."""


class LockError(RestorerError):
    """Another run holds the repository lock."""

    outcome = Outcome.LOCKED


class LockLostError(RestorerError):
    """This run's lock was taken over (it was stopped past the stale age): it commits
    nothing."""


class SourceError(RestorerError):
    """A target could not be read or written."""


class RestoreError(RestorerError):
    """A restore was refused or failed."""


class VerificationError(RestorerError):
    """A restored copy failed its checks."""


class PartialError(RestorerError):
    """Some of the work was done, some was not (exit code 3)."""

    outcome = Outcome.PARTIAL
