"""Renderings of report data (restorer.actions.report builds it from the ledger): HTML for
people and printers, JUnit XML for CI dashboards, Markdown for tickets, JSON as is.

Every rendering is a pure function of the data, and embeds the parameters it was made from,
so `restorer report --verify FILE` can build the same file again from the ledger and compare
it byte for byte.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

PARAMS_KEYS = ("plan_files", "period", "generated_at")
FORMATS = ("html", "json", "junit", "md")


def params_of(data: dict[str, Any], fmt: str) -> str:
    extra = {"options": data["options"]} if data.get("options") else {}
    return json.dumps({"format": fmt, **{k: data[k] for k in PARAMS_KEYS}, **extra},
                      sort_keys=True)


def render(data: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True) + "\n"
    if fmt == "html":
        from restorer.report.html import render_html

        return render_html(data, params_of(data, fmt))
    if fmt == "junit":
        from restorer.report.junit import render_junit

        return render_junit(data, params_of(data, fmt))
    if fmt == "md":
        from restorer.report.markdown import render_markdown

        return render_markdown(data, params_of(data, fmt))
    raise ValueError(fmt)


_EMBEDDED = re.compile(r"restorer-report-params[^{]*(\{.*?\})\s*(?:-->|</script>|[\"']/>)",
                       re.S)


def find_params(text: str) -> dict[str, Any] | None:
    """The parameters a rendered report was made from (any format)."""
    try:
        data = json.loads(text)
        if isinstance(data, dict) and data.get("schema", "").startswith("restorer-report/"):
            return {"format": "json", **{k: data[k] for k in PARAMS_KEYS},
                    **({"options": data["options"]} if data.get("options") else {})}
    except ValueError:
        pass
    m = _EMBEDDED.search(text)
    if not m:
        return None
    raw = html.unescape(m.group(1))
    try:
        return json.loads(raw)
    except ValueError:
        return None
