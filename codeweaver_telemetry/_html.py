# SPDX-License-Identifier: MIT OR Apache-2.0
"""The local-log report as one self-contained HTML page (``report --html FILE``).

Standard library only, and no JavaScript: the page is the CSS in :data:`STYLE`, inline SVG
charts and the payloads as text. It loads nothing: :data:`REPORT_CSP` (in a ``<meta>``)
allows no script and no connection, and no element refers to anything outside the file.
Every value taken from the log or the report is escaped with :func:`html.escape` (quotes
included), in text and in attributes alike, so a payload's text can never become markup.

The fragments (:func:`summary_html`, :func:`charts_html`, :func:`payloads_html`) and the
document shell (:func:`page_html`) are public so that other pages can reuse them; the
output depends only on the input (the same report and payloads give the same bytes).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from codeweaver_telemetry.report import (
    LATENCY_BUCKETS_MS,
    UNKNOWN_DAY,
    Report,
    _in_range,
    payload_size,
)

__all__ = [
    "REPORT_CSP",
    "STYLE",
    "charts_html",
    "page_html",
    "payloads_html",
    "render_report_html",
    "report_payloads",
    "summary_html",
]

REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'"
)
"""The report page's Content Security Policy: no script, no connection, inline CSS only."""

STYLE = """\
:root{--fg:#1c1e21;--muted:#5f6670;--bg:#fff;--panel:#f5f6f8;--line:#d8dce1;\
--bar:#3567c5;--bar2:#2f8f6a;--warn:#b3261e;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--fg:#e6e8eb;--muted:#9aa3ad;--bg:#16181b;\
--panel:#202328;--line:#363b42;--bar:#7aa7ff;--bar2:#5cc59b;--warn:#ff8a80}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);line-height:1.45;\
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:960px;margin:0 auto;padding:16px}
h1{font-size:1.4rem;margin:.2em 0 .4em}
h2{font-size:1.15rem;margin:1.6em 0 .5em;padding-bottom:.2em;border-bottom:1px solid var(--line)}
h3{font-size:1rem;margin:1.2em 0 .4em}
p,dd,summary{overflow-wrap:anywhere}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",\
monospace;font-size:.86em}
.muted{color:var(--muted)}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.2em .8em;margin:0}
dl.meta dt{color:var(--muted)}
dl.meta dd{margin:0;min-width:0}
.stats{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px;\
margin:0;padding:0;list-style:none}
.stats li{background:var(--panel);border:1px solid var(--line);border-radius:6px;\
padding:8px 10px;min-width:0}
.stats b{display:block;font-size:1.2rem;overflow-wrap:anywhere}
.stats span{color:var(--muted);font-size:.85rem}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;min-width:50%;font-size:.92rem}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:16px}
figure{margin:0;background:var(--panel);border:1px solid var(--line);border-radius:6px;\
padding:10px;min-width:0}
figcaption{font-weight:600;margin-bottom:6px}
svg{display:block;width:100%;height:auto;font-family:inherit}
svg text{fill:var(--fg);font-size:12px}
svg .axis{stroke:var(--line);stroke-width:1}
svg .bar{fill:var(--bar)}
svg .bar2{fill:var(--bar2)}
svg .v{fill:var(--muted);font-size:11px}
details.payload{border:1px solid var(--line);border-radius:6px;margin:6px 0;\
background:var(--panel)}
details.payload>summary{cursor:pointer;padding:6px 10px;display:flex;flex-wrap:wrap;\
gap:.2em .8em}
details.payload>summary code{font-weight:600}
details.numbers>summary{cursor:pointer;color:var(--muted);font-size:.9rem}
pre{margin:0;padding:8px 10px;white-space:pre-wrap;overflow-wrap:anywhere;\
border-top:1px solid var(--line);background:var(--bg)}
.warn{color:var(--warn)}
"""
"""The page's CSS (system fonts, light with a dark variant; nothing loaded from anywhere)."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_LABEL_CHARS = 24  # longer labels of the bar charts are cut, with an ellipsis
_MAX_DAY_LABELS = 16  # a days chart labels at most about this many of its bars


def _e(value: object) -> str:
    """``value`` as text, escaped for HTML text and (double- or single-quoted) attributes.

    A lone surrogate (which UTF-8 cannot hold) shows as U+FFFD.
    """
    return html.escape(_SURROGATE.sub("\ufffd", str(value)), quote=True)


def _text(value: str) -> str:
    """``value`` escaped for element text only (``&``, ``<``, ``>``): quotes need no escape
    there, and leaving them keeps the payloads' JSON about a fifth smaller. Never for an
    attribute."""
    return html.escape(_SURROGATE.sub("\ufffd", value), quote=False)


def _int(value: int) -> str:
    return f"{value:,}"


def _num(value: float | None, unit: str = "") -> str:
    """Up to 3 decimals, with thousands separators; ``-`` when there is no value."""
    if value is None:
        return "-"
    text = f"{value:,.3f}".rstrip("0").rstrip(".")
    return f"{text} {unit}" if unit else text


def _bytes(size: int) -> str:
    if size < 1024:
        return f"{_int(size)} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:,.1f} KiB"
    return f"{size / (1024 * 1024):,.1f} MiB"


def _iso(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat()


def _short(label: str, limit: int = _LABEL_CHARS) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "\u2026"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table in a horizontally scrolling box; cells are HTML already (escape them first)."""
    cls = [' class="n"' if i in numeric else "" for i in range(len(head))]
    parts = ['<div class="scroll"><table><thead><tr>']
    parts += [f"<th{cls[i]}>{cell}</th>" for i, cell in enumerate(head)]
    parts.append("</tr></thead><tbody>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td{cls[i]}>{c}</td>" for i, c in enumerate(row)))
        parts.append("</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def report_payloads(
    payloads: Iterable[Mapping[str, Any]], *, since: dt.datetime | None, until: dt.datetime | None
) -> list[Mapping[str, Any]]:
    """The payloads the report counts: those in ``[since, until)``, in their order.

    The rule is the report's own (:func:`codeweaver_telemetry.report.summarize`): with no
    bounds every payload; with a bound, only payloads whose timestamp reads and is in range.
    Anything that is not a mapping is left out, as the report skips it.

    Args:
        payloads: payload dicts, as ``read_log`` yields them (oldest first).
        since: keep payloads at or after this instant (aware; inclusive).
        until: keep payloads before this instant (aware; exclusive).
    """
    return [p for p in payloads if isinstance(p, Mapping) and _in_range(p, since, until)]


def page_html(title: str, body: str, *, csp: str = REPORT_CSP, head_extra: str = "") -> str:
    """A whole HTML document: the head (charset, viewport, CSP, no referrer, :data:`STYLE`)
    and ``body`` inside ``<body><main>``.

    Args:
        title: the page title (plain text; escaped here).
        body: the body's HTML, used as it is.
        csp: the Content Security Policy for the ``<meta http-equiv>`` (escaped here).
        head_extra: more HTML for the head, used as it is.
    """
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="color-scheme" content="light dark">\n'
        f"<title>{_e(title)}</title>\n<style>\n{STYLE}</style>\n{head_extra}"
        f"</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n"
    )


def _listed(names: Sequence[str]) -> str:
    return ", ".join(f"<code>{_e(n)}</code>" for n in names) or "(none)"


def _stat(value: str, label: str) -> str:
    return f"<li><b>{value}</b><span>{label}</span></li>"


def summary_html(report: Report) -> str:
    """The report's numbers: payloads, size, sessions, searches, errors by fingerprint, the
    flags seen, and what is not in this log (deny lists, spooled events, drops)."""
    durations = report.session_duration_seconds
    latency = report.search_latency_ms
    exact = "as compact JSON"
    if report.bytes >= 1024:
        exact += f" ({_int(report.bytes)} bytes)"
    stats = [
        _stat(_int(report.payloads), "payloads"),
        _stat(_bytes(report.bytes), exact),
        _stat(_int(report.sessions), f"sessions ({_int(report.session_ids)} session ids)"),
        _stat(_num(durations.p50, "s"), "session duration p50"),
        _stat(_num(durations.p95, "s"), "session duration p95"),
        _stat(_int(latency.count), "searches"),
        _stat(_num(latency.p50, "ms"), "search latency p50"),
        _stat(_num(latency.p95, "ms"), "search latency p95"),
        _stat(_num(latency.max, "ms"), "search latency max"),
        _stat(_int(sum(g.count for g in report.errors)), "errors"),
    ]
    parts = [
        '<section id="summary">\n<h2>Summary</h2>\n<ul class="stats">',
        *stats,
        "</ul>\n",
        '<p class="muted">Percentiles are nearest-rank (always one of the values).</p>\n',
        "<h3>Errors by fingerprint</h3>\n",
    ]
    if report.errors:
        errors = (
            (
                f"<code>{_e(g.fingerprint)}</code>" if g.fingerprint else "(no fingerprint)",
                _e(g.type) if g.type is not None else "?",
                _int(g.count),
                _int(g.unhandled),
            )
            for g in report.errors
        )
        parts.append(_table(("Fingerprint", "Type", "Count", "Unhandled"), errors, (2, 3)))
    else:
        parts.append('<p class="muted">No errors in this range.</p>')
    parts.append("\n<h3>Flags seen</h3>\n")
    if report.flags:
        flags = (
            (
                f"<code>{_e(key)}</code>",
                ", ".join(f"<code>{_e(v)}</code>: {_int(n)}" for v, n in values.items()),
                ", ".join(
                    f"<code>{_e(v)}</code>: {_int(n)}"
                    for v, n in report.flag_exposures.get(key, {}).items()
                )
                or "-",
            )
            for key, values in report.flags.items()
        )
        parts.append(
            _table(("Flag", "Payloads per value", "Exposures ($feature_flag_called)"), flags)
        )
    else:
        parts.append('<p class="muted">No feature flags in this range.</p>')
    if report.dropped is None:
        dropped = (
            "not known here (the log holds only what was sent; a running client counts its "
            'drops: <code>client.stats()["dropped"]</code>)'
        )
    else:
        dropped = (
            ", ".join(f"{_e(k)}: {_int(v)}" for k, v in sorted(report.dropped.items())) or "none"
        )
    parts += [
        "\n<h3>Not in this log</h3>\n",
        '<dl class="meta">',
        f"<dt>Denied events</dt><dd>{_listed(report.deny_events)}</dd>",
        f"<dt>Denied properties</dt><dd>{_listed(report.deny_properties)}</dd>",
        f"<dt>Spooled, not sent yet</dt><dd>{_int(report.spooled)} events</dd>",
        f"<dt>Dropped</dt><dd>{dropped}</dd>",
        "</dl>\n</section>\n",
    ]
    return "".join(parts)


def _figure(name: str, caption: str, svg: str | None, extra: str = "") -> str:
    if svg is None:
        return (
            f'<figure data-empty="true"><figcaption>{caption}</figcaption>'
            '<p class="muted">No data in this range.</p></figure>\n'
        )
    return f'<figure data-chart="{name}"><figcaption>{caption}</figcaption>{svg}{extra}</figure>\n'


def _svg(title: str, width: int, height: int, content: str) -> str:
    return (
        f'<svg role="img" viewBox="0 0 {width} {height}" width="100%" '
        f'preserveAspectRatio="xMidYMid meet"><title>{_e(title)}</title>{content}</svg>'
    )


def _hbars(title: str, rows: Sequence[tuple[str, int]], bar_class: str = "bar") -> str | None:
    """Horizontal bars, one row per (label, count); None when there are none."""
    if not rows:
        return None
    width, label_w, value_w, row_h = 480, 180, 64, 24
    bar_w = width - label_w - value_w - 8
    top = max((n for _, n in rows), default=0) or 1
    parts = []
    for i, (label, count) in enumerate(rows):
        y = 4 + i * row_h
        length = round(bar_w * count / top, 1) if count > 0 else 0
        tip = _e(f"{label}: {count:,}")
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">'
            f"<title>{_e(label)}</title>{_e(_short(label))}</text>"
            f'<rect class="{bar_class}" x="{label_w}" y="{y + 3}" width="{length}" '
            f'height="{row_h - 6}"><title>{tip}</title></rect>'
            f'<text class="v" x="{label_w + length + 5}" y="{y + 15}">{_int(count)}</text>'
        )
    height = 8 + len(rows) * row_h
    axis = f'<line class="axis" x1="{label_w}" y1="2" x2="{label_w}" y2="{height - 2}"/>'
    return _svg(title, width, height, axis + "".join(parts))


def _vbars(title: str, bars: Sequence[tuple[str, int]]) -> str | None:
    """Vertical bars, one per (label, count), labels slanted below; None when all are 0."""
    if not bars or not any(n > 0 for _, n in bars):
        return None
    width, left, right, top_pad, plot_h, label_h = 480, 52, 8, 18, 150, 66
    slot = (width - left - right) / len(bars)
    gap = min(slot * 0.2, 6.0)
    step = -(-len(bars) // _MAX_DAY_LABELS)  # label every step-th bar
    top = max(n for _, n in bars)
    base = top_pad + plot_h
    parts = [f'<line class="axis" x1="{left}" y1="{base}" x2="{width - right}" y2="{base}"/>']
    for i, (label, count) in enumerate(bars):
        x = left + i * slot
        h = round(plot_h * count / top, 1)
        cx = round(x + slot / 2, 1)
        parts.append(
            f'<rect class="bar" x="{round(x + gap / 2, 1)}" y="{round(base - h, 1)}" '
            f'width="{round(slot - gap, 1)}" height="{h}">'
            f"<title>{_e(f'{label}: {count:,}')}</title></rect>"
        )
        if count > 0 and len(_int(count)) * 6.5 <= slot + 2:  # the count fits above
            parts.append(
                f'<text class="v" x="{cx}" y="{round(base - h - 4, 1)}" '
                f'text-anchor="middle">{_int(count)}</text>'
            )
        if i % step == 0:
            parts.append(
                f'<text x="{cx + 4}" y="{base + 12}" text-anchor="end" '
                f'transform="rotate(-40 {cx + 4} {base + 12})">{_e(label)}</text>'
            )
    return _svg(title, width, base + label_h, "".join(parts))


def _numbers(head: Sequence[str], rows: Sequence[tuple[str, int]]) -> str:
    """The numbers behind a chart, as a table folded away under it."""
    body = [(_e(label), _int(count)) for label, count in rows]
    return (
        f'<details class="numbers"><summary>Numbers</summary>{_table(head, body, (1,))}</details>'
    )


def _latency_label(index: int) -> str:
    if index >= len(LATENCY_BUCKETS_MS):
        last = LATENCY_BUCKETS_MS[-1]
        return f"> {last / 1000:g} s" if last >= 1000 else f"> {last:g} ms"
    bound = LATENCY_BUCKETS_MS[index]
    return f"\u2264{bound / 1000:g} s" if bound >= 1000 else f"\u2264{bound:g} ms"


def charts_html(report: Report) -> str:
    """Four inline-SVG charts: payloads per UTC day, payloads per event name, the search
    latency distribution and the usage counts.

    A chart with data is a ``<figure data-chart="days|events|latency|usage">`` holding an
    ``<svg role="img">`` whose bars are ``<rect>`` elements, one per day, event name,
    latency bucket or usage label, each with a ``<title>`` giving its exact number; a chart
    without data is a ``<figure data-empty="true">`` saying so.
    """
    days = sorted(report.days.items(), key=lambda kv: (kv[0] == UNKNOWN_DAY, kv[0]))
    latency = [(_latency_label(i), n) for i, n in enumerate(report.latency_histogram)]
    events = list(report.events.items())
    usage = list(report.usage.items())
    figures = [
        _figure(
            "days",
            "Payloads per day (UTC)",
            _vbars("Payloads per UTC day", days),
            _numbers(("Day (UTC)", "Payloads"), days) if days else "",
        ),
        _figure("events", "Payloads per event name", _hbars("Payloads per event name", events)),
        _figure(
            "latency",
            "Search latency (ms)",
            _vbars("Searches per latency bucket", latency),
            _numbers(("Latency", "Searches"), latency) if latency else "",
        ),
        _figure(
            "usage",
            "Usage (summed over sessions)",
            _hbars("Usage, summed over sessions", usage, "bar bar2"),
        ),
    ]
    return (
        '<section id="charts">\n<h2>Charts</h2>\n<div class="charts">\n'
        + "".join(figures)
        + "</div>\n</section>\n"
    )


def _payload_json(payload: Mapping[str, Any]) -> str:
    """The payload as indented JSON; a lone surrogate (UTF-8 cannot hold it) as its
    ``\\uXXXX`` escape, which reads back as the same string."""
    text = json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _payload_size(payload: Mapping[str, Any]) -> int | None:
    try:
        return payload_size(payload)
    except (TypeError, ValueError):
        return None


def payloads_html(payloads: Sequence[Mapping[str, Any]], *, max_payloads: int = 500) -> str:
    """The payloads, newest first, each a ``<details class="payload">`` whose summary gives
    its time, event name and size and whose ``<pre>`` holds its exact JSON.

    Args:
        payloads: the payloads, oldest first (as the log holds them).
        max_payloads: show at most this many (the newest); the section says how many older
            ones it leaves out.
    """
    total = len(payloads)
    shown = list(reversed(payloads[max(0, total - max(0, max_payloads)) :]))
    left = total - len(shown)
    parts = [
        '<section id="payloads">\n',
        f"<h2>Payloads ({_int(total)})</h2>\n",
        '<p class="muted">Newest first. Each line is one payload exactly as the log holds it '
        "(open it to see its JSON); the size is its compact JSON in UTF-8.</p>\n",
    ]
    if left:
        noun = "payload" if left == 1 else "payloads"
        parts.append(
            f'<p class="warn" data-left-out="{left}">Showing the newest {_int(len(shown))} of '
            f"{_int(total)}; {_int(left)} older {noun} left out.</p>\n"
        )
    if not shown:
        parts.append('<p class="muted">No payloads in this range.</p>\n')
    for payload in shown:
        when = payload.get("timestamp")
        name = payload.get("event")
        size = _payload_size(payload)
        parts.append(
            '<details class="payload"><summary>'
            f'<span class="mono">{_e(when) if isinstance(when, str) else "(no time)"}</span>'
            f"<code>{_e(name)}</code>"
            f'<span class="muted">{_e(_bytes(size)) if size is not None else "? bytes"}</span>'
            f"</summary><pre>{_text(_payload_json(payload))}</pre></details>\n"
        )
    parts.append("</section>\n")
    return "".join(parts)


def render_report_html(
    report: Report,
    payloads: Sequence[Mapping[str, Any]],
    *,
    log_file: str,
    generated_at: dt.datetime,
    max_payloads: int = 500,
) -> str:
    """The whole report page: what it is, the log file, when and for which range; then
    :func:`summary_html`, :func:`charts_html` and :func:`payloads_html`.

    Args:
        report: the summary of the payloads (:func:`~codeweaver_telemetry.report.summarize`).
        payloads: the payloads in the report's range, oldest first (:func:`report_payloads`).
        log_file: the local log's path, as shown.
        generated_at: when the page is made (shown in UTC).
        max_payloads: list at most this many payloads (the newest).
    """
    if report.since is None and report.until is None:
        window = "everything in the log"
    else:
        since = _iso(report.since) if report.since is not None else "the start"
        until = _iso(report.until) if report.until is not None else "now"
        window = f"from {since} (inclusive) until {until} (exclusive)"
    generated = _iso(generated_at)
    header = (
        "<header>\n<h1>What this tool sent: a report of the local telemetry log</h1>\n"
        '<p class="muted">Made from the local log alone; this page loads nothing from the '
        "network and runs no script.</p>\n"
        '<dl class="meta">'
        f"<dt>Log file</dt><dd><code>{_e(log_file)}</code></dd>"
        f'<dt>Generated</dt><dd><time datetime="{_e(generated)}">{_e(generated)}</time></dd>'
        f"<dt>Range</dt><dd>{_e(window)}</dd>"
        "</dl>\n"
        '<p><a href="#summary">Summary</a> · <a href="#charts">Charts</a> · '
        '<a href="#payloads">Payloads</a></p>\n</header>\n'
    )
    body = (
        header
        + summary_html(report)
        + charts_html(report)
        + payloads_html(payloads, max_payloads=max_payloads)
    )
    return page_html("Telemetry report: what this tool sent", body)
