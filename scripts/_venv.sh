# Sourced by scripts/*: make sure .venv exists with the project installed (EXTRAS=dev for tests).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
extras="${EXTRAS:-}"
stamp="$VENV/.installed${extras:+-$extras}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating $VENV ..." >&2
  "$PY" -m venv "$VENV"
fi
# Reinstall when pyproject.toml changed since the last install.
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  echo "Installing integration-hub${extras:+[$extras]} into $VENV ..." >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT${extras:+[$extras]}" >&2
  touch "$stamp"
fi
