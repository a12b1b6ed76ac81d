#!/usr/bin/env bash
# quickstart.sh: set up a fresh Debian 12 machine, build, and run mfaserve's
# main job: the server on the bundled model at 127.0.0.1:8000 (flags after
# the script name go to `mfaserve serve`). Until the server exists in this
# checkout, it generates a continuation from the bundled model instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if build/mfaserve serve --help >/dev/null 2>&1; then
  exec build/mfaserve serve "$@"
fi
exec build/mfaserve generate --prompt "${PROMPT:-Once upon a time}" --max-tokens 64 "$@"
