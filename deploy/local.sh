#!/usr/bin/env bash
# The README's two commands: `bash deploy/local.sh demo` and `bash deploy/local.sh test`.
# On a fresh Debian machine with Python 3.11 they install what they need: Debian packages through
# apt-get (as root), Python packages into ./.venv from the pins in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
# Binaries the test suite starts for real, and the Debian packages that provide them.
TEST_TOOLS="prometheus:prometheus promtool:prometheus prometheus-alertmanager:prometheus-alertmanager
amtool:prometheus-alertmanager prometheus-pushgateway:prometheus-pushgateway age:age git:git
setpriv:util-linux mount:mount chromium:chromium jq:jq curl:curl"

# The stock mongodump/mongorestore/bsondump for the interop tests, where the shared folder has them
# (its README says how they were built); elsewhere those tests skip and say why.
STOCK_TOOLS=../shared/tools/mongodb-database-tools/bin

say() { printf '==> %s\n' "$*" >&2; }

apt_install() {
    [ "$#" -gt 0 ] || return 0
    if [ "$(id -u)" != 0 ]; then
        say "missing Debian packages: $*; install them with: sudo apt-get install -y $*"
        exit 1
    fi
    say "installing Debian packages: $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_tools() {
    local missing=() pair
    for pair in $1; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
    done
    "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    # shellcheck disable=SC2046
    apt_install $(printf '%s\n' "${missing[@]}" | sort -u)
}

ensure_venv() {
    local extra=$1 stamp
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    stamp="$VENV/.installed-$extra-$(sha256sum pyproject.toml | cut -c1-16)"
    if [ ! -e "$stamp" ]; then
        say "installing Python packages (.[$extra]) into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e ".[$extra]"
        rm -f "$VENV"/.installed-"$extra"-*
        touch "$stamp"
    fi
}

case "${1:-}" in
    demo)
        ensure_tools ""
        ensure_venv embedded
        exec "$VENV/bin/sidecar" demo
        ;;
    test)
        shift
        ensure_tools "$TEST_TOOLS"
        ensure_venv test
        if [ -d "$STOCK_TOOLS" ]; then
            PATH="$(cd "$STOCK_TOOLS" && pwd):$PATH"
            export PATH
        fi
        "$VENV/bin/ruff" check .
        exec "$VENV/bin/pytest" "$@"
        ;;
    *)
        echo "usage: bash deploy/local.sh demo|test [pytest arguments]" >&2
        exit 2
        ;;
esac
