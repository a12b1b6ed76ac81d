#!/usr/bin/python3
"""real_server.py MFASERVE MODEL_DIR: starts `MFASERVE serve` on a free
loopback port with the tiny random model and runs `bench serve` against it
briefly (8 prompts, twice: all at once under a cap with warm-up, then Poisson
arrivals with a shared prefix), checking every request succeeds and the JSON
has the report's fields and the server's first-token phases. This is what CI runs to show the tool works; the
figures themselves mean nothing on a 131k-parameter model."""
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

FIELDS = ["duration", "completed", "failed", "total_input_tokens", "total_output_tokens", "request_throughput",
          "request_goodput", "output_throughput", "total_token_throughput", "max_concurrent_requests", "model_id",
          "input_lens", "output_lens", "ttfts", "itls", "e2els", "errors"] + [
          "%s_%s_ms" % (s, m) for m in ("ttft", "tpot", "itl", "e2el") for s in ("mean", "median", "std", "p99")]
PHASES = ["arrival_to_tokenized", "tokenized_to_submitted", "submitted_to_scheduled", "scheduled_to_first_token",
          "first_token_to_first_byte", "arrival_to_first_byte"]  # the last spans the others
FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILS.append(what)


def main():
    binary, model = sys.argv[1], sys.argv[2]
    srv = subprocess.Popen([binary, "serve", "--model", model, "--host", "127.0.0.1", "--port", "0", "--threads", "1",
                            "--served-model-name", "tiny"], stderr=subprocess.PIPE, text=True)
    found = threading.Event()
    port = []

    def drain():  # the server's log, echoed; the pipe must not fill
        for line in srv.stderr:
            sys.stderr.write("serve: " + line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m and not port:
                port.append(int(m.group(1)))
                found.set()
        found.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        deadline = time.time() + 60
        found.wait(60)
        port = port[0] if port else None
        check(port is not None, "server listening")
        if port is None:
            return
        base = "http://127.0.0.1:%d" % port
        while time.time() < deadline:  # ready once the model is loaded
            try:
                if urllib.request.urlopen(base + "/v1/models", timeout=5).status == 200:
                    break
            except Exception:
                pass
            time.sleep(0.2)
        runs = [["--num-prompts", "8", "--max-concurrency", "4", "--warmup", "2", "--random-input-len", "32",
                 "--random-output-len", "16", "--goodput", "ttft:60000", "tpot:60000", "--metric-percentiles", "50,99"],
                ["--num-prompts", "8", "--request-rate", "40", "--seed", "5", "--random-prefix-len", "32",
                 "--random-input-len", "16", "--random-range-ratio", "0.5", "--random-output-len", "8"]]
        for args in runs:
            with tempfile.TemporaryDirectory() as d:
                out = os.path.join(d, "r.json")
                cmd = [binary, "bench", "serve", "--base-url", base, "--vocab-range", "3:297", "--json", out] + args
                print("$ " + " ".join(cmd))
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
                print(p.stdout + p.stderr)
                check(p.returncode == 0, "exit status 0 (%d)" % p.returncode)
                r = json.load(open(out)) if os.path.exists(out) else {}
            check(all(f in r for f in FIELDS), "JSON has the fields (missing %s)" % [f for f in FIELDS if f not in r])
            check(r.get("completed") == 8 and r.get("failed") == 0, "8 succeeded, none failed")
            check(r.get("model_id") == "tiny", "model from /v1/models")
            outs = [int(args[args.index("--random-output-len") + 1])] if "--random-range-ratio" not in args else None
            if outs:
                check(r.get("total_output_tokens") == 8 * outs[0], "ignore_eos: every request made %d tokens" % outs[0])
            check(r.get("total_input_tokens") == sum(r.get("input_lens", [])), "input tokens add up")
            check(all(t > 0 for t in r.get("ttfts", [0])), "TTFTs positive")
            check(r.get("median_e2el_ms", -1) >= r.get("median_ttft_ms", 0), "E2EL >= TTFT")
            # the server's first-token phases, from its /metrics before and after the run
            ph = r.get("server_phases_ms", {})
            check(sorted(ph) == sorted(PHASES), "server_phases_ms has the phases (%s)" % sorted(ph))
            check(all(v >= 0 for v in ph.values()), "phases non-negative")
            parts = sum(ph.get(k, 0) for k in PHASES[:-1])
            check(0 < parts <= ph.get(PHASES[-1], 0) + 0.01, "phases (%.3f ms) within arrival -> first byte (%.3f ms)"
                  % (parts, ph.get(PHASES[-1], 0)))
            check(ph.get(PHASES[-1], 1e9) <= r.get("mean_ttft_ms", 0),
                  "the server's arrival -> first byte is within the client's TTFT")
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


if __name__ == "__main__":
    main()
    print("%d failed checks" % len(FAILS) if FAILS else "all checks passed")
    sys.exit(1 if FAILS else 0)
