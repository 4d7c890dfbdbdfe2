#!/usr/bin/env bash
# Installs the official C++-based Pulsar client for Python (`pulsar-client` on PyPI) into a
# git-ignored venv under .wharf/, for the peer figure of the pulsar-async benchmark and for
# reading topics back in tests. Idempotent: does nothing when it is already there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
venv="$root/.wharf/venv-pulsar-client"
version="3.13.0"
if "$venv/bin/python" -c "import pulsar, sys; sys.exit(0 if pulsar.__version__.startswith('$version') else 1)" 2>/dev/null; then
  echo "pulsar-client $version already in $venv"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "pulsar-client==$version"
"$venv/bin/python" -c "import pulsar; print('pulsar-client', pulsar.__version__, 'installed in $venv')"
