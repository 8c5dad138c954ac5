#!/usr/bin/env bash
# A third-party engine for the tests of --engine: faster-whisper-server (PyPI), an
# OpenAI-compatible transcription server, in its own virtual environment
# (./.venv-engine), apart from livewhisper's so that neither pins the other.
#
#   scripts/setup-engine.sh     install it (again only if the version changed)
#
# tests/test_third_party_engine.py starts .venv-engine/bin/faster-whisper-server
# on a free port with the embedded tiny.en model.
set -euo pipefail
cd "$(dirname "$0")/.."

version="0.0.3"
venv=.venv-engine
python="${PYTHON:-python3}"

if [[ -x $venv/bin/python ]] &&
    $venv/bin/python -m pip show faster-whisper-server 2>/dev/null | grep -qx "Version: $version"; then
    exit 0
fi
[[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
$venv/bin/python -m pip install -q --upgrade pip
$venv/bin/python -m pip install -q "faster-whisper-server==$version"
echo "setup: ready: $venv/bin/faster-whisper-server $version" >&2
