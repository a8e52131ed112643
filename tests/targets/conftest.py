"""Fixtures of the target-kind conformance suite."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory):
    """A PostgreSQL server of this suite's own (never the machine's): a pg_dumpall target
    dumps every database of its server, and a shared one holds other tests' databases,
    which come and go meanwhile."""
    from tests.services import start_postgres

    dsn, stop = start_postgres(tmp_path_factory.mktemp("pgcluster"), force_new=True)
    yield dsn
    stop()
