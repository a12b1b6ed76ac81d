"""engine_util.py: shared helpers for the engine tests: running the mfaserve
binary, reading its logits files, and a small PASS/FAIL recorder. The tests
import the float64 reference (tests/reference/mfa_ref.py) and the checkpoint
writer (tools/make_model.py) through the paths set up here."""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import make_model as MM  # noqa: E402,F401
import mfa_ref as R  # noqa: E402,F401


def parse_args(extra=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "mfaserve"), help="the mfaserve binary")
    ap.add_argument("--keep", action="store_true", help="keep the temporary models")
    if extra:
        extra(ap)
    return ap.parse_args()


def tmpdir(prefix):
    return tempfile.mkdtemp(prefix=prefix)


# A cross-built binary runs through an emulator: MFS_TEST_EMULATOR is its
# command line, e.g. "qemu-aarch64" (a CTest run of a build configured with
# cmake/aarch64-linux-gnu.cmake sets it from CMAKE_CROSSCOMPILING_EMULATOR).
EMULATOR = shlex.split(os.environ.get("MFS_TEST_EMULATOR", ""))


def run(binary, args, timeout=120):
    """Runs mfaserve; returns CompletedProcess (text). A timeout becomes rc -999."""
    try:
        return subprocess.run(EMULATOR + [binary] + [str(a) for a in args], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(e.cmd, -999, e.stdout or "", "timeout after %ss" % timeout)


def ids_arg(ids):
    return ",".join(str(int(t)) for t in ids)


def engine_logits(binary, model, ids, out, extra=()):
    """Returns (array [T, V] float64 or None, error string)."""
    if os.path.exists(out):
        os.unlink(out)
    p = run(binary, ["logits", "--model", model, "--prompt-ids", ids_arg(ids), "--out", out] + list(extra))
    if p.returncode != 0:
        return None, "rc=%d stderr=%s" % (p.returncode, p.stderr.strip()[-300:])
    try:
        raw = np.fromfile(out, dtype="<f4")
    except OSError as e:
        return None, "no output file: %s" % e
    if raw.size % len(ids):
        return None, "output has %d floats, not a multiple of T=%d" % (raw.size, len(ids))
    return raw.reshape(len(ids), -1).astype(np.float64), ""


def parse_json_stdout(s):
    s = s.strip()
    try:
        return json.loads(s)
    except ValueError:
        pass
    for line in reversed(s.splitlines()):  # tolerate log lines before the object
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    i = s.find("{")
    return json.loads(s[i:]) if i >= 0 else None


class Recorder:
    def __init__(self):
        self.fails = []
        self.n = 0

    def check(self, name, ok, detail=""):
        self.n += 1
        print("%s  %s  %s" % ("PASS" if ok else "FAIL", name, detail), flush=True)
        if not ok:
            self.fails.append(name)
        return ok

    def note(self, msg):
        print("NOTE  " + msg, flush=True)

    def finish(self):
        print("%d checks, %d failed" % (self.n, len(self.fails)))
        for f in self.fails:
            print("  failed: " + f)
        return 1 if self.fails else 0
