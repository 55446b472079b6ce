"""Every script in examples/ runs, shows only scrubbed data as sent, and stays off in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))
MARKER = "== recorded for sending"
OFF_LINE = "nothing was recorded for sending (0 events in the local log)"

# Where each example's "what is sent" part starts: the shared marker, or its own.
OWN_MARKERS = {"demo.py": "== 3."}

# What each example must show after its marker, in a run with telemetry on: the event
# names it sends, and the scrubber markers that replaced the personal data in its input.
SHOWN: dict[str, tuple[str, ...]] = {
    "demo.py": ("codeweaver_search", "index_built", "codeweaver_session", "<path>"),
    "basic_session.py": (
        "index_built",
        "settings_changed",
        "codeweaver_session",
        "<path>",
        "<email>",
    ),
    "search_events.py": ("codeweaver_search", "codeweaver_session", "<email>", "<path>"),
    "custom_model_rules.py": ("index_job", "reindex_finished"),
    "feature_flag_ab.py": (
        "codeweaver_search",
        "codeweaver_session",
        '"$feature/new_reranker": "test"',
    ),
    "own_posthog_host.py": ("configured_by", '"how": "environment"', '"how": "code"', "<email>"),
    "long_running_service.py": ("codeweaver_error", "codeweaver_session"),
    "async_app.py": ("codeweaver_search", "codeweaver_error", "codeweaver_session"),
    "web_dashboard.py": (
        "codeweaver_search",
        "settings_page_viewed",
        "codeweaver_session",
        "<email>",
        "<path>",
    ),
}
RAW_PERSONAL_DATA = ("alice@example.com", "/home/alice")


def run_example(script: Path, tmp_path: Path, *, ci: bool) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with its home, temp dir, state and working dir inside ``tmp_path``."""
    home, temp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    temp.mkdir()
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        CODEWEAVER_HOME=str(tmp_path),
        HOME=str(home),
        TMPDIR=str(temp),
    )
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )


def assert_nothing_left(tmp_path: Path) -> None:
    """No telemetry state or log survives, and nothing else was written outside the
    example's own temporary directory, which it removed."""
    assert not list(tmp_path.rglob("events.jsonl")), "an event log was left behind"
    assert not list(tmp_path.rglob("state.json")), "a state file was left behind"
    files = [p for p in tmp_path.rglob("*") if not p.is_dir()]
    assert not files, f"files left behind: {files}"
    assert not list((tmp_path / "tmp").iterdir()), "the example did not remove its temp dir"


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_shows_what_it_sends_without_personal_data(script: Path, tmp_path: Path) -> None:
    """With telemetry on, the example exits 0 and prints what it recorded for sending: its
    events by name, with the scrubber's markers and never the raw e-mail or home path."""
    assert script.name in SHOWN, f"add {script.name} and what it shows to SHOWN"
    out = run_example(script, tmp_path, ci=False)
    assert out.returncode == 0, out.stderr
    marker = OWN_MARKERS.get(script.name, MARKER)
    assert marker in out.stdout, out.stdout
    sent = out.stdout.split(marker, 1)[1]
    for expected in SHOWN[script.name]:
        assert expected in sent, f"{expected!r} missing from:\n{sent}"
    for raw in RAW_PERSONAL_DATA:
        assert raw not in sent, f"{raw!r} shown as sent"
    assert_nothing_left(tmp_path)


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_in_ci_records_nothing(script: Path, tmp_path: Path) -> None:
    """With CI=true the example still exits 0, says telemetry is off because it runs in CI,
    records nothing (no event log, no state file anywhere) and shows nothing as sent."""
    out = run_example(script, tmp_path, ci=True)
    assert out.returncode == 0, out.stderr
    assert "running in CI (CI is set)" in out.stdout, out.stdout
    if script.name not in OWN_MARKERS:
        assert "telemetry is off (ci: running in CI" in out.stdout, out.stdout
        assert OFF_LINE in out.stdout, out.stdout
        assert MARKER not in out.stdout
    assert_nothing_left(tmp_path)


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_listed_in_readme(script: Path) -> None:
    """The README lists every example, on a line that mentions ``examples/<name>``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    mention = f"examples/{script.name}"
    assert any(mention in line for line in readme.splitlines()), f"README lacks {mention}"
