"""The status table of ``kdp up`` and ``kdp status``, rendered from the status document.

One row per revision, newest first within its service::

    SERVICE        REVISION     TRAFFIC  PODS  MODE   PANIC  CONC   RPS    STATUS
    default/hello  hello-00002  100%     2/2   serve  -      3.10   41.0
                   hello-00001  0%       0/0   proxy  -      0.00   0.0

``PODS`` is ready/desired; ``CONC`` and ``RPS`` are what the autoscaler observed over its
stable window (whole revision); ``STATUS`` says why a revision is failing, or its last event.

Pure: no I/O, no clock.
"""
from __future__ import annotations

from typing import Any

__all__ = ["render", "summary_line"]

_HEADER = ("SERVICE", "REVISION", "TRAFFIC", "PODS", "MODE", "PANIC", "CONC", "RPS", "STATUS")


def _rows(status: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for svc in status.get("services", []):
        first = True
        for rev in svc.get("revisions", []):
            a = rev.get("autoscaler") or {}
            state = rev.get("failure") or ""
            if not state and rev.get("pending"):
                state = f"{rev['pending']} starting"
            if not state and rev.get("terminating"):
                state = f"{rev['terminating']} draining"
            if not state and rev.get("restarts"):
                state = f"{rev['restarts']} restarts"
            rows.append((
                f"{svc['namespace']}/{svc['name']}" if first else "",
                rev["name"],
                f"{rev.get('traffic', 0)}%",
                f"{rev.get('ready', 0)}/{rev.get('desired', 0)}",
                a.get("mode", "") or "-",
                "yes" if a.get("in_panic") else "-",
                f"{a['stable_concurrency']:.2f}" if "stable_concurrency" in a else "-",
                f"{a['rps']:.1f}" if "rps" in a else "-",
                state,
            ))
            first = False
    return rows


def render(status: dict[str, Any], *, width: int = 120) -> str:
    """The whole screen: a header with the ingress and services' URLs, then the table."""
    lines = []
    ingress = status.get("ingress", "")
    if ingress:
        lines.append(f"kdp up: ingress {ingress}, domain {status.get('domain', '')}")
    procs = status.get("processes") or {}
    a = status.get("autoscaler") or {}
    parts = [f"{name} {state}" for name, state in sorted(procs.items())]
    parts.append("autoscaler link " + ("up" if a.get("connected") else "down"))
    lines.append("  ".join(parts))
    for svc in status.get("services", []):
        for route in svc.get("routes", []):
            host = f"{route['host']}.{svc['namespace']}.{status.get('domain', '')}"
            lines.append(f"  curl -H 'Host: {host}' {ingress or 'http://127.0.0.1:8080'}/")
    lines.append("")
    rows = [_HEADER, *_rows(status)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER) - 1)]
    for r in rows:
        text = "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]
        lines.append(text.rstrip()[:width])
    if len(rows) == 1:
        lines.append("(no services)")
    for msg in status.get("messages", [])[-5:]:
        lines.append(msg[:width])
    return "\n".join(lines)


def summary_line(status: dict[str, Any]) -> str:
    """One line for logs and non-terminal output: ``hello-00001 2/2 serve c=3.10 rps=41.0; ...``."""
    parts = []
    for row in _rows(status):
        _, rev, traffic, pods, mode, panic, conc, rps, state = row
        text = f"{rev} {traffic} {pods} {mode} c={conc} rps={rps}" + (" panic" if panic == "yes" else "")
        parts.append(text + (f" [{state}]" if state else ""))
    return "; ".join(parts) or "(no services)"
