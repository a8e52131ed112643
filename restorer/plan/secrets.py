"""Secret references (`${env:NAME}`, `${file:PATH}`), resolved at run time, never logged.

Plans never hold secrets in clear text: a field typed `SecretRef` must be made only of
references (optionally with literal text around them, as in a DSN). Resolution happens when
an action needs the value, so `validate` can report a missing secret and `schema` never sees one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import PlainValidator, WithJsonSchema

from restorer.errors import PlanError

REF = re.compile(r"\$\{(env|file):([^}]+)\}")


class SecretRef(str):
    """A string holding secret references; its repr never shows resolved values."""

    __slots__ = ()

    def references(self) -> list[tuple[str, str]]:
        return [(m.group(1), m.group(2)) for m in REF.finditer(self)]


def _validate(value: Any) -> SecretRef:
    if not isinstance(value, str):
        raise ValueError("expected a secret reference such as '${env:NAME}' or '${file:PATH}'")
    if not REF.search(value):
        raise ValueError(
            "secrets are not written in plans in clear text; reference one instead: "
            "'${env:NAME}' (an environment variable) or '${file:/path/to/file}'"
        )
    return SecretRef(value)


Secret = Annotated[
    str,
    PlainValidator(_validate),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"\$\{(env|file):[^}]+\}",
            "description": "a secret reference: '${env:NAME}' or '${file:PATH}'",
        }
    ),
]


def resolve_secret(ref: str, base_dir: Path, where: str) -> str:
    """The value of `ref` with every reference substituted; PlanError names a missing one."""

    def sub(m: re.Match[str]) -> str:
        kind, name = m.group(1), m.group(2).strip()
        if kind == "env":
            if name not in os.environ:
                raise PlanError(
                    f"{where}: the secret reference '${{env:{name}}}' cannot be resolved: "
                    f"environment variable {name} is not set",
                    hint=f"export {name}=... before running restorer, or use ${{file:PATH}}",
                )
            return os.environ[name]
        path = Path(os.path.expanduser(name))
        if not path.is_absolute():
            path = base_dir / path
        try:
            return path.read_text().rstrip("\r\n")
        except OSError as e:
            raise PlanError(
                f"{where}: the secret reference '${{file:{name}}}' cannot be resolved: "
                f"{path}: {e.strerror}",
                hint="create the file (mode 0600) or point the reference at the right path",
            ) from None

    return REF.sub(sub, ref)
