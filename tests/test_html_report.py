"""`codeweaver-telemetry report --html FILE`: one self-contained page, checked by parsing it
with html.parser: the charts' bars match the report, each payload's JSON reads back as the
raw log line, hostile payload text stays text, and nothing refers outside the file."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeweaver_telemetry import TelemetryClient
from codeweaver_telemetry._html import (
    REPORT_CSP,
    STYLE,
    render_report_html,
    report_payloads,
)
from codeweaver_telemetry.cli import EXIT_OK, main
from codeweaver_telemetry.report import LATENCY_BUCKETS_MS, summarize
from tests.test_report import DAY_LOG, payload, raw_payloads, run_sessions, write_log

NOW = dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.timezone.utc)
# What the page itself is made of; anything else would come from a payload.
PAGE_TAGS = {
    "html", "head", "meta", "title", "style", "body", "main", "header", "h1", "h2", "h3",
    "p", "a", "dl", "dt", "dd", "ul", "li", "b", "span", "code", "time", "section", "div",
    "table", "thead", "tbody", "tr", "th", "td", "figure", "figcaption", "svg", "rect",
    "text", "line", "details", "summary", "pre",
}  # fmt: skip


class Page(HTMLParser):
    """The parts of a page the tests look at."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.figures: list[dict[str, Any]] = []
        self.pres: list[str] = []
        self.style = ""
        self._in: str | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append((tag, values))
        if tag == "figure":
            self.figures.append({**values, "rects": 0, "text": ""})
        elif tag == "rect" and self.figures:
            self.figures[-1]["rects"] += 1
        elif tag in ("pre", "style"):
            self._in = tag
            if tag == "pre":
                self.pres.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "pre":
            self.pres[-1] += data
        elif self._in == "style":
            self.style += data
        if self.figures:
            self.figures[-1]["text"] += data

    def chart(self, name: str) -> dict[str, Any]:
        found = [f for f in self.figures if f.get("data-chart") == name]
        assert len(found) == 1, name
        return found[0]

    def attr(self, name: str) -> list[str]:
        return [values[name] for _, values in self.tags if name in values]


def html_report(path: Path, *argv: str) -> tuple[dict[str, Any], str]:
    out = io.StringIO()
    assert main(["report", *argv, "--html", str(path), "--json"], out=out) == EXIT_OK
    return json.loads(out.getvalue()), path.read_text(encoding="utf-8")


def assert_no_external_reference(text: str, page: Page) -> None:
    for value in page.attr("src") + page.attr("href"):
        assert value.startswith("#"), value
    lowered = page.style.lower()
    for bad in ("http:", "https:", "//", "@import", "url("):
        assert bad not in lowered
    csp = [v["content"] for t, v in page.tags if v.get("http-equiv") == "Content-Security-Policy"]
    assert csp == [REPORT_CSP]
    assert "default-src 'none'" in csp[0]
    assert "script-src" not in csp[0]
    assert not any(tag in ("script", "img", "iframe", "link", "object") for tag, _ in page.tags)
    assert "<script" not in text.lower()


def test_html_report_of_a_real_log(
    clean_env: Path, tmp_path: Path, make_client: Callable[..., TelemetryClient]
) -> None:
    """A real client's sessions: the page has the four charts with one bar per day, event
    name, latency bucket and usage label, and every payload's JSON, newest first."""
    client = make_client()
    run_sessions(client)
    assert client.flush(10)
    client.shutdown(timeout=5)
    raw = raw_payloads(clean_env)
    document, text = html_report(tmp_path / "report.html")
    assert document["html"] == str(tmp_path / "report.html")
    assert text.startswith("<!doctype html>")
    page = Page(text)
    assert page.chart("days")["rects"] == len(document["days"]) == 1
    assert page.chart("events")["rects"] == len(document["events"]) >= 4
    assert page.chart("latency")["rects"] == len(LATENCY_BUCKETS_MS) + 1
    assert page.chart("usage")["rects"] == len(document["usage"]) == 2
    for figure in page.figures:
        assert "data-empty" not in figure
    for name, count in document["events"].items():
        assert f"{name}: {count:,}" in page.chart("events")["text"]
    assert "reindex: 6" in page.chart("usage")["text"]
    assert "\u22641 ms" in page.chart("latency")["text"]
    assert "> 10 s" in page.chart("latency")["text"]
    svgs = [values for tag, values in page.tags if tag == "svg"]
    assert len(svgs) == 4
    assert all(s["role"] == "img" and s["width"] == "100%" and s["viewbox"] for s in svgs)
    assert [json.loads(pre) for pre in page.pres] == raw[::-1]
    assert "What this tool sent: a report of the local telemetry log" in text
    assert str(clean_env / "telemetry" / "events.jsonl") in text
    assert "everything in the log" in text
    assert "left out" not in text
    assert_no_external_reference(text, page)


def test_since_until_limit_and_order(clean_env: Path, tmp_path: Path) -> None:
    """--since/--until with --html: only the payloads in range, newest first; a days chart
    bar per day, the "unknown" day last; past max_payloads the older ones are left out."""
    write_log(clean_env, DAY_LOG)
    document, text = html_report(tmp_path / "r.html", "--since", "2026-12-01")
    page = Page(text)
    assert [json.loads(pre) for pre in page.pres] == DAY_LOG[1:][::-1]
    assert page.chart("days")["rects"] == len(document["days"]) == 2
    assert "from 2026-12-01T00:00:00+00:00 (inclusive) until now" in text
    write_log(clean_env, [*DAY_LOG, payload("no_time", "not a time")])
    payloads = report_payloads(
        [*raw_payloads(clean_env), "not a payload"],  # type: ignore[list-item]
        since=None,
        until=None,
    )
    assert len(payloads) == 6
    report = summarize(payloads)
    page = Page(render_report_html(report, payloads, log_file="l", generated_at=NOW))
    days = page.chart("days")
    assert days["rects"] == 4
    assert days["text"].index("unknown") > days["text"].index("2026-12-02")
    text = render_report_html(report, payloads, log_file="l", generated_at=NOW, max_payloads=2)
    page = Page(text)
    assert [json.loads(pre)["event"] for pre in page.pres] == ["no_time", "codeweaver_error"]
    assert page.attr("data-left-out") == ["4"]
    assert "4 older payloads left out" in text


def test_payloads_option_sets_how_many_the_page_holds(clean_env: Path, tmp_path: Path) -> None:
    """--payloads N keeps the newest N (0: none; the default 200); a negative or non-number
    is a usage error (exit 2)."""
    write_log(clean_env, DAY_LOG)
    _, text = html_report(tmp_path / "r.html", "--payloads", "2")
    page = Page(text)
    assert [json.loads(pre) for pre in page.pres] == DAY_LOG[::-1][:2]
    assert page.attr("data-left-out") == [str(len(DAY_LOG) - 2)]
    _, text = html_report(tmp_path / "r.html", "--payloads", "0")
    assert Page(text).pres == []
    _, text = html_report(tmp_path / "r.html")
    assert len(Page(text).pres) == len(DAY_LOG)  # under the default of 200
    for bad in ("-1", "two"):
        with pytest.raises(SystemExit) as exited:
            main(["report", "--html", str(tmp_path / "x.html"), "--payloads", bad])
        assert exited.value.code == 2
    assert not (tmp_path / "x.html").exists()


def test_the_page_is_private_and_replaces_a_planted_link(clean_env: Path, tmp_path: Path) -> None:
    """The page holds the payloads' text: it is written 0600, like the log, and a link at
    its name is replaced, never written through."""
    write_log(clean_env, DAY_LOG)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me", encoding="utf-8")
    page = tmp_path / "r.html"
    page.symlink_to(victim)
    html_report(page)
    assert not page.is_symlink()
    assert victim.read_text(encoding="utf-8") == "keep me"
    assert page.stat().st_mode & 0o777 == 0o600


def test_an_empty_log_renders_a_small_page(clean_env: Path, tmp_path: Path) -> None:
    """No log at all: the page still renders, every chart says it has no data, and the
    page is small."""
    document, text = html_report(tmp_path / "empty.html")
    assert document["payloads"] == 0
    page = Page(text)
    assert len(page.figures) == 4
    assert all(f.get("data-empty") == "true" for f in page.figures)
    assert text.count("No data in this range") == 4
    assert not page.pres
    assert len(text.encode()) < 15_000
    assert_no_external_reference(text, page)
    assert "@media (prefers-color-scheme:dark)" in STYLE


def test_output_is_deterministic_and_long_names_are_cut() -> None:
    """The same input gives the same page; a long event name is cut with an ellipsis in
    its label and kept whole in the bar's tooltip."""
    long_name = "an_event_name_" + "x" * 80
    payloads = [payload(long_name, "2026-12-01T00:00:00+00:00")]
    report = summarize(payloads)
    first = render_report_html(report, payloads, log_file="l", generated_at=NOW)
    assert first == render_report_html(report, payloads, log_file="l", generated_at=NOW)
    events = Page(first).chart("events")["text"]
    assert f"{long_name}: 1" in events
    assert "an_event_name_xxxxxxxxx\u2026" in events


def test_a_lone_surrogate_reads_back(tmp_path: Path) -> None:
    """A lone surrogate (which json can read from a log line) cannot be written as UTF-8:
    it is kept as its \\u escape in the JSON, which reads back as the same payload."""
    payloads = [payload("e\ud800", "2026-12-01T00:00:00+00:00", text="a\udfffb")]
    text = render_report_html(summarize(payloads), payloads, log_file="l", generated_at=NOW)
    text.encode("utf-8")
    assert [json.loads(pre) for pre in Page(text).pres] == payloads


CHARS = ["<", ">", "&", '"', "'", "/", "=", " ", "a", "\u00e9", "\u2026"]
BITS = ["]]>", "<script>", "</script>", "</pre>", "<svg", "onerror=", "&lt;", "<!--", "-->", "//"]
hostile = st.lists(st.sampled_from([*CHARS, *BITS]), max_size=12).map("".join)
attacks = st.sampled_from(
    [
        "</pre><script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "\"'><svg onload=alert(1)>",
        "]]></title><script>x</script>",
        "<!-- --><style>@import 'https://evil.example/x.css'</style>",
    ]
)


@settings(max_examples=60, deadline=None)
@given(words=st.lists(st.one_of(hostile, attacks), min_size=1, max_size=4))
def test_hostile_payload_text_stays_text(words: list[str]) -> None:
    """Markup in event names, flag keys and values, fingerprints, usage labels, properties
    and the deny lists never becomes a tag or an attribute; the JSON still reads back."""
    payloads: list[dict[str, Any]] = []
    for i, word in enumerate(words):
        when = f"2026-12-0{1 + i % 3}T00:00:00+00:00"
        payloads += [
            payload(word, when, **{f"$feature/{word}": word, "url": f"https://x/{word}"}),
            payload("codeweaver_error", when, fingerprint=word, type=word),
            payload("codeweaver_session", when, usage={word: 1}, duration_seconds=1.0),
            payload("$feature_flag_called", when, **{"$feature_flag": word}),
        ]
    report = summarize(payloads, deny_events=words, deny_properties=words)
    text = render_report_html(report, payloads, log_file=words[0], generated_at=NOW)
    page = Page(text)
    for tag, values in page.tags:
        assert tag in PAGE_TAGS, tag
        assert not any(name.startswith("on") for name in values), (tag, values)
    assert [json.loads(pre) for pre in page.pres] == payloads[::-1]
    assert_no_external_reference(text, page)
