#!/usr/bin/env bash
# Set up livewhisper in ./.venv, with the system libraries it needs.
#
#   scripts/setup.sh          the tool: PortAudio, the package, the embedded models
#   scripts/setup.sh --test   also what the tests need: a private PulseAudio for the
#                             virtual microphone, headless Chromium, the test tools,
#                             a third-party engine in ./.venv-engine
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[[ "${1:-}" == "--test" ]] && want_tests=1

packages=(libportaudio2)
if (( want_tests )); then
    packages+=(pulseaudio pulseaudio-utils libasound2-plugins chromium openssl)
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
    if command -v apt-get >/dev/null; then
        sudo=""
        (( EUID == 0 )) || sudo="sudo"
        echo "setup: installing ${missing[*]}" >&2
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "setup: install these system packages first: ${missing[*]}" >&2
        exit 1
    fi
fi

python="${PYTHON:-python3}"
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
extras="base"
(( want_tests )) && extras="base,test"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[$extras]"
(( want_tests )) && scripts/setup-engine.sh  # a third-party engine for the --engine tests
echo "setup: ready: .venv/bin/livewhisper" >&2
