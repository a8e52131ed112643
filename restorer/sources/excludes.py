"""Exclude patterns: 'name' matches at any depth, 'dir/' only directories, '/a/b' is anchored to
the backed-up path, and a pattern with an inner '/' matches the path below the backed-up path."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    dirs_only: bool
    on_path: bool  # match the relative path, not just the name


class Excluder:
    def __init__(self, patterns: list[str]) -> None:
        self.rules: list[_Rule] = []
        for p in patterns:
            dirs_only = p.endswith("/")
            body = p.rstrip("/")
            anchored = body.startswith("/")
            body = body.lstrip("/")
            on_path = anchored or "/" in body
            self.rules.append(_Rule(re.compile(fnmatch.translate(body)), dirs_only, on_path))

    def excluded(self, rel: str, name: str, is_dir: bool) -> bool:
        for r in self.rules:
            if r.dirs_only and not is_dir:
                continue
            if r.regex.match(rel if r.on_path else name):
                return True
        return False
