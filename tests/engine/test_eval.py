#!/usr/bin/python3
"""test_eval.py: `mfaserve eval` against an independent computation of
tools/train/train.py's load_corpus + encode_stream + evaluate with the float64
reference (tests/reference/mfa_ref.py), on a random MFA-KR model
(tools/make_model.py) with the server tests' tiny byte-level BPE tokenizer
(tests/server/make_tokenizer.py; its <|endoftext|> is 297, its eos_token
<|im_end|> 299: the separator must be <|endoftext|>, as in train.py).

The texts hold several documents, empty ones, extra newlines around the
separators, CRLF line ends (Python's text mode reads them as "\\n"), a lone
"\\r", multi-byte UTF-8 and a special token written inside a document.
Documents are split here in Python as train.py does and tokenized one by one
with `mfaserve tokenize` (the tokenizer itself is checked against Hugging Face
elsewhere); each window of --ctx tokens goes through mfa_ref.logits on its own.
Checks (f32 KV): tokens, bytes, nats within a relative 1e-4 per file and
pooled, loss and bpb from them, for --ctx 64 (several windows, a short last
one) with the default batching and --batch 1 --threads 1, and --ctx 50 with
--max-tokens (nats of the first N scored tokens); the default f16 KV within
1e-3. Bad input exits 2 with a message: a missing file, an empty file, a file
of separators only, ill-formed UTF-8, --ctx 0, --ctx past the model's context,
no file, an unknown --kv-cache-dtype."""
import math
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import engine_util as U  # noqa: E402
from engine_util import R  # noqa: E402

SEP = "<|endoftext|>"
EOS = 297
REL = 1e-4
REL_KV16 = 1e-3

TEXT_A = (
    "\n\nhello world, the cat sat on the mat.\nIt is a fine day in the world.\n"
    "\n" + SEP + "\n"
    "\n" + SEP + "\n"                                      # an empty document, dropped
    "Caf\u00e9 cr\u00e8me \u2014 na\u00efve r\u00e9sum\u00e9 \u65e5\u672c\u8a9e \U0001F600 done.\r\n"
    "Second line with CRLF\r\nand a lone CR\rhere.\n\n"
    "\n" + SEP + "\n"
    "the end of the world is <|im_end|> not here; hello again, hello there, the world at large. " * 3 +
    "\n" + SEP + "\n"
    "short"
)
TEXT_B = (
    "in the beginning there was the text, and the text was long enough to fill a window or two. " * 4 +
    "\n" + SEP + "\n\n\n"
    "Numbers: 0123456789 and symbols !@#$%^&*() {}[] <> ~ \\ | \t tabs\n"
)


def load_docs(path):
    """train.py's load_corpus for one file."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    docs = [d.strip("\n") for d in text.split("\n" + SEP + "\n")]
    return [d for d in docs if d]


def tokenize(binary, model, doc):
    p = subprocess.run(U.EMULATOR + [binary, "tokenize", "--model", model, "--add-bos", "false"],
                       input=doc.encode("utf-8"), capture_output=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("tokenize failed: %s" % p.stderr.decode(errors="replace"))
    return [int(x) for x in p.stdout.decode().strip().strip("[]").split(",") if x]


def ref_nll(m, ids, ctx, cache):
    """Per-token nats of every token after the first, in windows of ctx."""
    n = len(ids) - 1
    out = []
    for s in range(0, n, ctx):
        k = min(ctx, n - s)
        key = tuple(ids[s:s + k + 1])
        if key not in cache:
            lp = R.log_softmax(R.logits(m, ids[s:s + k]))
            cache[key] = -lp[np.arange(k), ids[s + 1:s + k + 1]]
        out.append(cache[key])
    return np.concatenate(out)


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def main():
    a = U.parse_args()
    rec = U.Recorder()
    tmp = U.tmpdir("mfs-eval-")
    try:
        model = os.path.join(tmp, "model")
        subprocess.run([sys.executable, os.path.join(U.ROOT, "tools", "make_model.py"), "--attention", "mfa-kr",
                        "--dtype", "f32", "--hidden-size", "64", "--layers", "2", "--heads", "4", "--head-dim", "16",
                        "--vocab", "300", "--max-pos", "256", "--seed", "7", "--out", model],
                       check=True, capture_output=True)
        subprocess.run([sys.executable, os.path.join(U.ROOT, "tests", "server", "make_tokenizer.py"), model],
                       check=True, capture_output=True)
        m = R.load_model(model)
        files = {}
        for name, text in (("a.txt", TEXT_A), ("b.txt", TEXT_B)):
            p = os.path.join(tmp, name)
            with open(p, "wb") as f:
                f.write(text.encode("utf-8"))
            files[p] = text
        # the independent stream: train.py's encode_stream
        streams, nbytes = {}, {}
        for p in files:
            docs = load_docs(p)
            ids = [EOS]
            for d in docs:
                ids += tokenize(a.bin, model, d) + [EOS]
            streams[p], nbytes[p] = ids, sum(len(d.encode("utf-8")) for d in docs)
        rec.note("streams: %s tokens, %s bytes" % ([len(s) - 1 for s in streams.values()], list(nbytes.values())))
        cache = {}

        def check_run(label, args, ctx, max_tokens=0, tol=REL):
            p = U.run(a.bin, ["eval", "--model", model, "--json", "--ctx", ctx] + args + list(files))
            if not rec.check("%s: exit 0" % label, p.returncode == 0, p.stderr.strip()[-400:]):
                return
            js = U.parse_json_stdout(p.stdout)
            tn = tt = tb = 0
            for f, p in zip(js["files"], files):  # noqa: B020
                ids = streams[p]
                if max_tokens:
                    ids = ids[:max_tokens + 1]
                nll = ref_nll(m, ids, ctx, cache)
                want = float(nll.sum())
                tn, tt = tn + want, tt + len(nll)
                full = not max_tokens or max_tokens >= len(streams[p]) - 1
                if full:
                    tb += nbytes[p]
                ok = (f["name"] == p and f["tokens"] == len(nll) and rel(f["nats"], want) <= tol and
                      rel(f["loss"], f["nats"] / f["tokens"]) <= 1e-12 and
                      (f["bytes"] == nbytes[p] if full else 0 < f["bytes"] < nbytes[p]) and
                      rel(f["bpb"], f["nats"] / math.log(2) / f["bytes"]) <= 1e-12)
                rec.check("%s: %s" % (label, os.path.basename(p)), ok,
                          "tokens %d (want %d), bytes %d (want %d), nats %.9g (ref %.9g, rel %.1e, tol %.0e)"
                          % (f["tokens"], len(nll), f["bytes"], nbytes[p], f["nats"], want, rel(f["nats"], want),
                             tol))
            t = js["total"]
            ok = t["tokens"] == tt and rel(t["nats"], tn) <= tol and (max_tokens or t["bytes"] == tb)
            rec.check("%s: pooled" % label, ok, "tokens %d (want %d), nats %.9g (ref %.9g)"
                      % (t["tokens"], tt, t["nats"], tn))
            return js

        f32 = ["--kv-cache-dtype", "f32"]
        check_run("ctx 64", f32, 64)
        check_run("ctx 64, --batch 1 --threads 1", f32 + ["--batch", "1", "--threads", "1"], 64)
        check_run("ctx 50, --max-tokens 120, --block-size 4", f32 + ["--max-tokens", "120", "--block-size", "4"],
                  50, max_tokens=120)
        check_run("ctx 64, f16 KV (default)", [], 64, tol=REL_KV16)
        # the text table
        p = U.run(a.bin, ["eval", "--model", model, "--ctx", "64"] + list(files))
        rec.check("text output names every file and the pooled line", p.returncode == 0 and
                  all(f in p.stdout for f in files) and "pooled" in p.stdout, p.stdout[-400:] + p.stderr[-400:])

        # bad input: exit 2 and a message saying what is wrong
        empty = os.path.join(tmp, "empty.txt")
        open(empty, "w").close()
        seps = os.path.join(tmp, "seps.txt")
        with open(seps, "w") as f:
            f.write("\n\n" + SEP + "\n\n" + SEP + "\n")
        badutf = os.path.join(tmp, "bad.txt")
        with open(badutf, "wb") as f:
            f.write(b"fine text\xc3(then not)")
        missing = os.path.join(tmp, "no-such-file.txt")
        a_txt = list(files)[0]
        for label, args, want in (
                ("missing file", [a_txt, missing], missing),
                ("empty file", [empty], "empty"),
                ("separators only", [seps], "no text"),
                ("ill-formed UTF-8", [badutf], "offset 9"),
                ("--ctx 0", ["--ctx", "0", a_txt], "--ctx"),
                ("--ctx past the model's context", ["--ctx", "300", a_txt], "max_position_embeddings 256"),
                ("no file", [], "no text files"),
                ("unknown --kv-cache-dtype", ["--kv-cache-dtype", "f8", a_txt], "f8"),
                ("--max-tokens -1", ["--max-tokens", "-1", a_txt], "--max-tokens")):
            p = U.run(a.bin, ["eval", "--model", model] + args)
            rec.check("bad input: %s -> exit 2" % label, p.returncode == 2 and want in p.stderr and
                      not p.stdout.strip(), "rc=%d stderr=%s" % (p.returncode, p.stderr.strip()[-300:]))
        os.environ.pop("MFASERVE_MODEL", None)
        p = U.run(a.bin, ["eval", a_txt], timeout=60)
        rec.check("no --model -> exit 2", p.returncode == 2 and "--model" in p.stderr,
                  "rc=%d stderr=%s" % (p.returncode, p.stderr.strip()[-300:]))
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return rec.finish()


if __name__ == "__main__":
    sys.exit(main())
