"""Every script in examples/ runs and shows scrubbed output (in CI and out of it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("ci", [False, True], ids=["enabled", "in_ci"])
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_and_leaks_nothing(script: Path, ci: bool, tmp_path: Path) -> None:
    """The example exits 0; what it shows as sent carries markers, never the raw secrets."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), CODEWEAVER_HOME=str(tmp_path))
    if ci:
        env["CI"] = "true"
    out = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "codeweaver_search" in out.stdout
    sent = out.stdout.split("== 3.", 1)[-1]
    assert "alice@example.com" not in sent
    assert "/home/alice" not in sent
    assert "<path>" in sent
    if ci:
        assert "running in CI" in out.stdout
    assert not list(tmp_path.rglob("state.json")), "the examples never touch the real home"
