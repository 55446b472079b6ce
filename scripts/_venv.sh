# Sourced by the scripts in this folder: make sure the venv exists and matches pyproject.toml.
# Needs only a Python >= 3.10 with pip and venv on PATH (python3, or $PYTHON). With $PYTHON
# set to another interpreter, its venv is .venv-<major.minor>, so several live side by side.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -n "${PYTHON:-}" ]; then
  PY="$PYTHON"
  VENV="$ROOT/.venv-$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
else
  PY=python3
  VENV="$ROOT/.venv"
fi
STAMP="$VENV/.installed-from"
want="$(cat pyproject.toml | "$PY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "setting up $VENV (first run, or pyproject.toml changed)..." >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[dev]" >&2
  echo "$want" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
