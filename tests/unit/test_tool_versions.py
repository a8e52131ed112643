"""Dump tools older than (or of another flavour than) the server are refused."""

from __future__ import annotations

import pytest

from restorer.errors import SourceError
from restorer.sources.mysql import check_versions


@pytest.mark.parametrize(("client", "server"), [
    ("mysqldump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu", "10.11.19-MariaDB-0"),
    ("mariadb-dump  Ver 10.19 Distrib 11.4.2-MariaDB, for Linux", "10.11.19-MariaDB"),
    ("mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)", "8.0.35"),
    ("mysqldump  Ver 10.13 Distrib 5.7.44, for Linux (x86_64)", "5.7.44-log"),
])
def test_matching_or_newer_tools_pass(client: str, server: str) -> None:
    check_versions(client, server, "target 'db'")


@pytest.mark.parametrize(("client", "server", "words"), [
    ("mysqldump  Ver 10.19 Distrib 10.5.1-MariaDB, for Linux", "10.11.19-MariaDB",
     "MariaDB 10.5"),
    ("mysqldump  Ver 8.0.36 for Linux on x86_64", "10.11.19-MariaDB", "MySQL 8.0"),
    ("mysqldump  Ver 10.13 Distrib 5.7.44, for Linux", "8.0.36", "MySQL 5.7"),
])
def test_older_or_foreign_tools_are_refused(client: str, server: str, words: str) -> None:
    with pytest.raises(SourceError) as e:
        check_versions(client, server, "target 'db'")
    assert words in e.value.message and "target 'db'" in e.value.message
