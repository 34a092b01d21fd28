# Sourced by scripts/*: make sure .venv exists with the project installed (EXTRAS=dev for tests).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
extras="${EXTRAS:-}"
stamp="$VENV/.installed${extras:+-$extras}"
# A .venv whose interpreter does not run or has no pip (an interrupted `python -m venv`, a base
# Python removed since) is never repaired by installing into it: start it again.
if [ -e "$VENV" ] && ! "$VENV/bin/python" -c 'import pip' >/dev/null 2>&1; then
  echo "Repairing $VENV (half-created or broken: its python does not run or has no pip) ..." >&2
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating $VENV ..." >&2
  "$PY" -m venv "$VENV"
fi
# Install when no install finished (the stamp is written only after pip succeeded) or when
# pyproject.toml changed since the last one.
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  echo "Installing integration-hub${extras:+[$extras]} into $VENV ..." >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT${extras:+[$extras]}" >&2
  touch "$stamp"
fi
