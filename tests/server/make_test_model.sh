#!/bin/sh
# make_test_model.sh SRC_DIR OUT_DIR: the server tests' model: a random
# MFA-KR checkpoint (vocab 300) with a tiny byte-level BPE tokenizer whose
# <|im_end|> (id 299) is the EOS and <|endoftext|> (297) the BOS.
set -e
src=${1:?usage: make_test_model.sh SRC_DIR OUT_DIR}
out=${2:?usage: make_test_model.sh SRC_DIR OUT_DIR}
py=/usr/bin/python3
[ -x $py ] || py=python3
rm -rf "$out"
$py "$src/tools/make_model.py" --attention mfa-kr --dtype f32 --hidden-size 64 --layers 2 --heads 4 \
  --head-dim 16 --vocab 300 --max-pos 4096 --out "$out" >/dev/null
$py "$src/tests/server/make_tokenizer.py" "$out"
$py - "$out/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["eos_token_id"] = 299
c["bos_token_id"] = 297
json.dump(c, open(p, "w"), indent=2)
PY
echo "wrote $out"
