"""Telling people: the plan's `notify:` entries, fired at the end of each acting run.

Events: `failure` (the run failed or was partial), `success`, `recovered` (a success after a
failure of the same command), `objective_breach` (verify found RPO or RTO exceeded). Formats:
a generic JSON webhook, Slack-compatible `{"text": ...}`, PagerDuty Events v2 and Zenduty
(trigger on failure, resolve on recovery, a stable dedup key per plan and target), and
healthchecks-style pings (`/start` when the run begins, the URL on success, `/fail`).

Delivery is retried (3 attempts; 5xx and connection errors only), never fails the run, and
each delivery is a ledger phase. Webhook URLs often carry tokens: logs and the ledger only
show their scheme and host.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tenacity import (
    RetryError,
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from restorer import __version__, clock
from restorer.errors import PlanError
from restorer.ledger import RunRecorder
from restorer.plan import models
from restorer.plan.load import LoadedPlan

log = logging.getLogger("restorer.notify")
ATTEMPTS = 3


@dataclass
class Event:
    kind: str  # failure | success | recovered | objective_breach
    plan: str
    command: str
    target: str | None
    run_id: str
    message: str

    @property
    def dedup_key(self) -> str:
        """Stable per plan, command and target, so a resolve closes the incident its
        trigger opened (and a verify's success never closes a backup's incident)."""
        return f"restorer/{self.plan}/{self.command}" + (f"/{self.target}" if self.target
                                                         else "")

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, "plan": self.plan, "command": self.command,
                "target": self.target, "run_id": self.run_id, "message": self.message,
                "error": self.message if self.kind == "failure" else None,
                "time": clock.iso(), "host": socket.gethostname(), "tool": "restorer",
                "version": __version__}


def shown(url: str) -> str:
    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname}{':' + str(u.port) if u.port else ''}/..."


class _Transient(Exception):
    pass


def _post(url: str, body: dict[str, Any] | None, timeout: float = 10.0) -> int:
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "User-Agent": f"restorer/{__version__}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        if e.code >= 500 or e.code == 429:
            raise _Transient(f"HTTP {e.code}") from None
        raise RuntimeError(f"HTTP {e.code} (not retried)") from None
    except (urllib.error.URLError, OSError) as e:
        raise _Transient(str(getattr(e, "reason", e))) from None


def _deliver(url: str, body: dict[str, Any] | None, wait: float) -> None:
    @retry(stop=stop_after_attempt(ATTEMPTS), wait=wait_exponential(multiplier=wait, max=10),
           retry=retry_if_exception(lambda e: isinstance(e, _Transient)), reraise=True)
    def go() -> None:
        _post(url, body)

    go()


def _body(fmt: str, ev: Event, action: str, routing_key: str | None) -> dict[str, Any]:
    summary = (f"restorer: plan {ev.plan}: {ev.command}"
               + (f" of {ev.target}" if ev.target else "") + f": {ev.kind}: {ev.message}")
    if fmt == "slack":
        icon = {"failure": ":red_circle:", "objective_breach": ":warning:",
                "recovered": ":large_green_circle:"}.get(ev.kind, ":white_check_mark:")
        return {"text": f"{icon} {summary} (host {socket.gethostname()}, run {ev.run_id[:8]})"}
    if fmt == "pagerduty":
        body: dict[str, Any] = {"routing_key": routing_key, "event_action": action,
                                "dedup_key": ev.dedup_key}
        if action == "trigger":
            body["payload"] = {
                "summary": summary[:1024], "source": socket.gethostname(),
                "severity": "critical" if ev.kind == "failure" else "warning",
                "component": ev.target or ev.command, "group": ev.plan, "class": ev.command,
                "custom_details": ev.to_json()}
        return body
    if fmt == "zenduty":
        return {"alert_type": "critical" if action == "trigger" else "resolved",
                "message": summary[:250], "summary": summary, "entity_id": ev.dedup_key,
                "payload": ev.to_json()}
    return ev.to_json()


def _events(lp: LoadedPlan, run: RunRecorder, outcome: str, error: str | None,
            previous: str | None) -> list[Event]:
    def mk(kind: str, target: str | None, msg: str) -> Event:
        return Event(kind, lp.name, run.command, target, run.run_id, msg)

    out: list[Event] = []
    if outcome in ("failed", "partial", "terminated"):
        failed: dict[str, str] = {}
        for p in run.phases:
            if p.get("target") and p.get("outcome") == "failed":
                failed.setdefault(p["target"], p.get("error") or p.get("detail") or error
                                  or f"{run.command} failed")
        if failed:
            out += [mk("failure", t, msg) for t, msg in sorted(failed.items())]
        else:
            out.append(mk("failure", None, error or f"{run.command} failed"))
    elif outcome == "ok":
        out.append(mk("success", None, f"{run.command} succeeded"))
        if previous in ("failed", "partial", "interrupted", "terminated"):
            out.append(mk("recovered", None, f"{run.command} succeeded again after a "
                          f"{previous} run"))
    out += [mk(kind, target, msg) for kind, target, msg in run.events]
    return out


def ping_start(lp: LoadedPlan, run: RunRecorder) -> None:
    for i, n in enumerate(lp.plan.notify):
        if n.ping is not None and {"success", "failure"} & set(n.on):
            _send(lp, run, i, n, _url(lp, n, i, "ping") + "/start", None, "start")


def _url(lp: LoadedPlan, n: models.Notify, i: int, key: str) -> str:
    return lp.secret(getattr(n, key), f"notify[{i}].{key}") or ""


def _send(lp: LoadedPlan, run: RunRecorder, i: int, n: models.Notify, url: str,
          body: dict[str, Any] | None, what: str, wait: float = 1.0) -> None:
    t0 = time.monotonic()
    try:
        _deliver(url, body, wait)
        outcome, err = "ok", None
    except (_Transient, RuntimeError, RetryError) as e:
        outcome, err = "failed", str(e)
        log.error("notify[%d] %s to %s failed after %d attempt(s): %s", i, what, shown(url),
                  ATTEMPTS if isinstance(e, _Transient) else 1, err)
    run.record_phase("notify", time.monotonic() - t0, destination=shown(url), event=what,
                     format=n.format if n.webhook is not None else "ping", outcome=outcome,
                     error=err)


def send(lp: LoadedPlan, run: RunRecorder, outcome: str, error: str | None,
         previous: str | None, wait: float = 1.0) -> None:
    """Deliver the run's events to every notify entry that wants them."""
    if not lp.plan.notify:
        return
    events = _events(lp, run, outcome, error, previous)
    for i, n in enumerate(lp.plan.notify):
        try:
            if n.ping is not None:
                base = _url(lp, n, i, "ping")
                if outcome == "ok" and "success" in n.on:
                    _send(lp, run, i, n, base, None, "success", wait)
                elif outcome in ("failed", "partial", "terminated") and "failure" in n.on:
                    _send(lp, run, i, n, base + "/fail", None, "failure", wait)
                continue
            url = _url(lp, n, i, "webhook")
            key = lp.secret(n.routing_key, f"notify[{i}].routing_key")
            for ev in events:
                incident = n.format in ("pagerduty", "zenduty")
                if ev.kind == "recovered" and incident:
                    # close what failures of this plan opened: per target and run-level
                    if "recovered" not in n.on and "failure" not in n.on:
                        continue
                    for target in [*(t.name for t in lp.plan.targets), None]:
                        closing = Event("recovered", ev.plan, ev.command, target, ev.run_id,
                                        ev.message)
                        _send(lp, run, i, n, url, _body(n.format, closing, "resolve", key),
                              f"resolve {closing.dedup_key}", wait)
                    continue
                if ev.kind not in n.on:
                    continue
                action = "trigger" if incident else "event"
                _send(lp, run, i, n, url, _body(n.format, ev, action, key),
                      f"{ev.kind}" + (f" {ev.target}" if ev.target else ""), wait)
        except PlanError as e:  # a secret that does not resolve: say so, keep going
            log.error("notify[%d]: %s", i, e.message)
            run.record_phase("notify", 0.0, destination=f"notify[{i}]", outcome="failed",
                             error=e.message)
