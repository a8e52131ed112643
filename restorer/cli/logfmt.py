"""One shape for every machine-readable line restorer writes on stderr or into run.log
(`--log-format json`): log records, job results and fatal errors alike.

    {"time": "2026-12-01T03:00:00.123Z", "level": "info", "event": "...",
     "message": "...", "plan": ..., "target": ..., "run_id": ..., ...}

`time` is RFC 3339 in UTC; `event` names what happened (`log` for plain log lines);
`plan`, `target` and `run_id` appear where they apply.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

#: extra keys a log call may carry (`log.info(..., extra={"plan": ...})`)
CONTEXT_KEYS = ("plan", "target", "run_id", "event")


def rfc3339(ts: float | None = None) -> str:
    t = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def json_line(level: str, event: str, message: str, ts: float | None = None,
              **fields: Any) -> str:
    rec: dict[str, Any] = {"time": rfc3339(ts), "level": level, "event": event,
                           "message": message}
    rec.update({k: v for k, v in fields.items() if v is not None})
    return json.dumps(rec, default=str, sort_keys=False)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = {k: getattr(record, k) for k in CONTEXT_KEYS if hasattr(record, k)}
        event = extra.pop("event", "log")
        return json_line(record.levelname.lower(), event, record.getMessage(),
                         ts=record.created, logger=record.name, **extra)
