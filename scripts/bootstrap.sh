#!/usr/bin/env bash
# Create .venv (Python 3.11) and install lazystream with the exact versions of requirements-test.lock (runtime + test).
# Idempotent and quick when nothing changed (a stamp records the lock file's hash).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${LAZYSTREAM_VENV:-$ROOT/.venv}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$PY" -c 'import sys; assert sys.version_info[:2] >= (3, 11), "lazystream needs Python 3.11+"'
STAMP=$VENV/.lazystream-lock
WANT=$(cat "$ROOT/requirements-test.lock" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/lazystream" ]; then exit 0; fi
echo "==> installing Python dependencies into $VENV" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements-test.lock"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$ROOT"
"$VENV/bin/python" -m pip check >&2
echo "$WANT" > "$STAMP"
