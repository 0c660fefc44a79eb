#!/usr/bin/env bash
# bench/setup_http.sh -- what bench/bench_http.py needs besides pyparallel.
#
#   Debian packages: wrk, nginx (nginx-light), golang-go (installed with
#                    apt-get when this runs as root, else listed as missing)
#   .venv-bench/:    a virtual environment made with the same CPython as
#                    .venv (so the Python peers run the same interpreter
#                    version as pyparallel), holding granian, uvicorn,
#                    uvloop, httptools and gunicorn from PyPI
#
# bench_http.py runs this itself when something is missing.  Safe to run
# again: it installs only what is not there.
#
#   bench/setup_http.sh                 the default: .venv's interpreter
#   bench/setup_http.sh /path/to/python another interpreter for the peers
#   BENCH_VENV=.venv-x bench/setup_http.sh
#
# Exit status: 0 when everything is there; 1 when something could not be
# installed (each missing piece is named on stderr, one line each).
set -uo pipefail
cd "$(dirname "$0")/.."
venv=${BENCH_VENV:-.venv-bench}
peers=(granian uvicorn uvloop httptools gunicorn)
missing=0

say() { printf 'setup_http: %s\n' "$*" >&2; }

# --- Debian packages: command -> package
declare -A pkg_of=([wrk]=wrk [nginx]=nginx-light [go]=golang-go)
want=()
for cmd in wrk nginx go; do
  if ! command -v "$cmd" >/dev/null 2>&1 && ! [[ $cmd == nginx && -x /usr/sbin/nginx ]]; then
    want+=("${pkg_of[$cmd]}")
  fi
done
if ((${#want[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian packages: ${want[*]}"
    if [[ ! -f /tmp/.pyparallel-apt-updated ]]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && touch /tmp/.pyparallel-apt-updated
    fi
    # one at a time, so that one package that fails does not stop the others
    for p in "${want[@]}"; do
      if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null; then
        say "MISSING: apt-get install $p failed"
        missing=1
      fi
    done
  else
    say "MISSING: Debian packages ${want[*]} (run as root, or: sudo apt-get install ${want[*]})"
    missing=1
  fi
fi

# --- the Python peers
py=${1:-}
if [[ -z $py ]]; then
  if [[ -x .venv/bin/python ]]; then
    # the interpreter .venv was made from, not .venv's own (no nesting)
    py=$(.venv/bin/python -c 'import sys; print(sys._base_executable)')
  else
    say "MISSING: .venv (run scripts/setup first), or name an interpreter: $0 /path/to/python"
    exit 1
  fi
fi
if [[ ! -x $venv/bin/python ]]; then
  say "creating $venv with $py"
  if ! "$py" -m venv "$venv"; then
    say "MISSING: $py -m venv $venv failed"
    exit 1
  fi
fi
need=()
for m in "${peers[@]}"; do
  "$venv/bin/python" -c "import $m" 2>/dev/null || need+=("$m")
done
if ((${#need[@]})); then
  say "installing into $venv: ${need[*]}"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${need[@]}" >&2 || true
  for m in "${need[@]}"; do
    if ! "$venv/bin/python" -c "import $m" 2>/dev/null; then
      say "MISSING: $m: '$venv/bin/python -m pip install $m' did not give an importable module"
      missing=1
    fi
  done
fi
exit $missing
