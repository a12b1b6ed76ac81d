#!/usr/bin/python3
"""fake_openai.py MFASERVE CASE: runs `MFASERVE bench serve` against a fake
OpenAI-compatible server (in this process) whose delays are known, and
checks the report: TTFT / ITL / TPOT / E2EL medians near the injected delays
(bounds are generous: this checks arithmetic, not speed), counts add up,
failures are counted with their reason, the request bodies are what vLLM's
client sends. The fake streams /v1/completions as SSE over chunked HTTP/1.1,
one TCP write per event with TCP_NODELAY, so chunk times are the sleeps.

Cases: timing failures nousage allfail flags prefix rate concurrency."""
import http.server
import json
import os
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time

MODEL = "fake-model"


class State:
    def __init__(self, ttft=0.05, itl=0.01, usage=True, fail=None):
        self.ttft, self.itl, self.usage = ttft, itl, usage
        self.fail = fail or (lambda n: None)  # seq -> None | "500" | "drop"
        self.lock = threading.Lock()
        self.bodies, self.arrivals = [], []
        self.seq = 0
        self.inflight = self.peak = 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *a):
        pass

    def send_json(self, code, obj):
        b = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def do_GET(self):
        if self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        else:
            self.send_json(404, {"error": {"message": "no such route"}})

    def do_POST(self):
        st = self.server.state
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with st.lock:
            seq = st.seq
            st.seq += 1
            st.bodies.append(body)
            st.arrivals.append(time.monotonic())
            st.inflight += 1
            st.peak = max(st.peak, st.inflight)
        try:
            self.complete(st, seq, body)
        finally:
            with st.lock:
                st.inflight -= 1

    def complete(self, st, seq, body):
        mode = st.fail(seq)
        if mode == "500":
            time.sleep(st.ttft)
            self.send_json(500, {"error": {"message": "injected failure", "type": "InternalServerError", "code": 500}})
            return
        n = body["max_tokens"]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def event(obj):
            data = b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        head = {"id": "cmpl-%d" % seq, "object": "text_completion", "created": 0, "model": MODEL}
        time.sleep(st.ttft)
        for i in range(n):
            if i:
                time.sleep(st.itl)
            fin = "length" if i == n - 1 else None
            event(dict(head, choices=[{"index": 0, "text": " t%d" % i, "logprobs": None, "finish_reason": fin}]))
            if mode == "drop" and i == 1:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
        if st.usage:
            plen = len(body["prompt"]) if not isinstance(body["prompt"][0], list) else len(body["prompt"][0])
            event(dict(head, choices=[], usage={"prompt_tokens": plen, "completion_tokens": n, "total_tokens": plen + n}))
        event(b"[DONE]")
        self.wfile.write(b"0\r\n\r\n")


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILS.append(what)


def run(binary, st, args, expect_rc=0):
    srv = Server(("127.0.0.1", 0), Handler)
    srv.state = st
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "r.json")
        cmd = [binary, "bench", "serve", "--base-url", "http://127.0.0.1:%d" % srv.server_address[1],
               "--json", out] + args
        print("$ " + " ".join(cmd))
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=100)
        srv.shutdown()
        srv.server_close()
        print(p.stdout + p.stderr)
        check(p.returncode == expect_rc, "exit status %d (want %d)" % (p.returncode, expect_rc))
        r = json.load(open(out)) if os.path.exists(out) else None
    return r, p


FIELDS = ["duration", "completed", "failed", "total_input_tokens", "total_output_tokens", "request_throughput",
          "request_goodput", "output_throughput", "total_token_throughput", "model_id", "num_prompts",
          "request_rate", "burstiness", "max_concurrency", "input_lens", "output_lens", "ttfts", "itls", "e2els",
          "errors"] + ["%s_%s_ms" % (s, m) for m in ("ttft", "tpot", "itl", "e2el") for s in ("mean", "median", "std", "p99")]


def within(r, key, lo, hi):
    check(lo <= r[key] <= hi, "%s = %.2f in [%g, %g]" % (key, r[key], lo, hi))


def case_timing(b):
    # 16 requests, 4 at a time, TTFT 50 ms, ITL 10 ms, 8 tokens: E2EL = 50 + 7*10 = 120 ms.
    st = State(ttft=0.05, itl=0.01)
    r, p = run(b, st, ["--num-prompts", "16", "--max-concurrency", "4", "--random-input-len", "32",
                       "--random-output-len", "8", "--warmup", "2", "--seed", "3", "--goodput", "ttft:1000",
                       "tpot:1000", "--metric-percentiles", "50,90,99"])
    for f in FIELDS + ["p50_ttft_ms", "p90_itl_ms"]:
        check(f in r, "JSON has %s" % f)
    check(r["completed"] == 16 and r["failed"] == 0, "16 completed, 0 failed")
    check(r["total_output_tokens"] == 16 * 8, "output tokens 128")
    check(r["total_input_tokens"] == 16 * 32 and r["input_lens"] == [32] * 16, "input tokens 16 x 32")
    check(all(len(x) == 7 for x in r["itls"]), "7 gaps per request")
    check(r["model_id"] == MODEL, "model from /v1/models")
    within(r, "median_ttft_ms", 45, 150)
    within(r, "median_itl_ms", 8, 40)
    within(r, "median_tpot_ms", 8, 40)
    within(r, "median_e2el_ms", 115, 300)
    within(r, "mean_itl_ms", 8, 40)
    # the table and the JSON agree; the relations between metrics hold per request
    tp = [(e - t) / 7 for e, t in zip(r["e2els"], r["ttfts"])]
    check(abs(sorted(tp)[7] * 500 + sorted(tp)[8] * 500 - r["median_tpot_ms"]) < 1e-6, "median TPOT = (e2el-ttft)/7")
    check(all(abs(sum(i) - (e - t)) < 1e-6 for i, e, t in zip(r["itls"], r["e2els"], r["ttfts"])), "sum(ITL) = e2el - ttft")
    within(r, "request_goodput", r["request_throughput"] * 0.999, r["request_throughput"] * 1.001)
    check(abs(r["request_throughput"] - 16 / r["duration"]) < 1e-6, "request throughput = completed / duration")
    check(abs(r["total_token_throughput"] - (16 * 40) / r["duration"]) < 1e-6, "total token throughput")
    check("Median TTFT (ms):" in p.stdout and "P90 ITL (ms):" in p.stdout, "table printed")
    check(len(st.bodies) == 18, "2 warm-up + 16 requests reached the server")
    bd = st.bodies[-1]
    check(bd["stream"] is True and bd["stream_options"] == {"include_usage": True}, "stream with include_usage")
    check(bd["ignore_eos"] is True and bd["max_tokens"] == 8 and bd["model"] == MODEL, "ignore_eos, max_tokens, model")
    check(all(isinstance(x, int) and 1000 <= x < 4000 for x in bd["prompt"]), "prompt is [ids] in 1000:4000")
    check(st.peak <= 4, "at most 4 in flight (saw %d)" % st.peak)
    # a tight TTFT SLO makes no request good
    r, p = run(b, State(ttft=0.05, itl=0.01), ["--num-prompts", "4", "--random-input-len", "8", "--random-output-len",
                                               "4", "--goodput", "ttft:10", "--quiet"])
    check(r["request_goodput"] == 0 and r["completed"] == 4, "goodput 0 under a 10 ms TTFT SLO")


def case_failures(b):
    # every 3rd request answers 500; request 4 drops the connection mid-stream
    st = State(ttft=0.02, itl=0.005, fail=lambda n: "500" if n % 3 == 2 else "drop" if n == 4 else None)
    r, p = run(b, st, ["--num-prompts", "12", "--random-input-len", "8", "--random-output-len", "6",
                       "--max-concurrency", "1"])
    check(r["completed"] == 7 and r["failed"] == 5, "7 completed, 5 failed (got %d, %d)" % (r["completed"], r["failed"]))
    errs = [e for e in r["errors"] if e]
    check(sum("HTTP 500" in e and "injected failure" in e for e in errs) == 4, "4 HTTP 500 errors with the body")
    check(sum(e.startswith("transport") for e in errs) == 1, "1 transport error (dropped stream)")
    check(r["total_output_tokens"] == 7 * 6, "only successful requests count tokens")
    check("failed x4: HTTP 500" in p.stdout, "reasons summarised")


def case_nousage(b):
    st = State(ttft=0.01, itl=0.005, usage=False)
    r, p = run(b, st, ["--num-prompts", "5", "--random-input-len", "8", "--random-output-len", "5", "--prompt-format",
                       "nested", "--ignore-eos=false"])
    check(r["completed"] == 5 and r["total_output_tokens"] == 25, "tokens counted from chunks without usage")
    check(isinstance(st.bodies[0]["prompt"][0], list) and "ignore_eos" not in st.bodies[0], "nested prompt, no ignore_eos")


def case_allfail(b):
    st = State(ttft=0.0, fail=lambda n: "500")
    r, p = run(b, st, ["--num-prompts", "3", "--random-input-len", "4", "--random-output-len", "2"], expect_rc=1)
    check(r is not None and r["completed"] == 0 and r["failed"] == 3, "all failed, JSON still written")
    # nothing listening: every request fails, the run still ends
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = subprocess.run([b, "bench", "serve", "--base-url", "http://127.0.0.1:%d" % port, "--model", "m",
                        "--num-prompts", "3", "--random-input-len", "4"], capture_output=True, text=True, timeout=60)
    check(p.returncode == 1 and "Failed requests:                         3" in p.stdout, "connection refused: 3 failed, exit 1")


def case_flags(b):
    for bad in (["--num-prompts", "0"], ["--goodput", "itl:5"], ["--random-range-ratio", "1"], ["--vocab-range", "5:5"],
                ["--burstiness", "0"], ["--dataset", "sharegpt"], ["--no-such-flag"], ["--metric-percentiles", "101"]):
        p = subprocess.run([b, "bench", "serve"] + bad, capture_output=True, text=True, timeout=30)
        check(p.returncode == 2, "%s -> exit 2 (%d)" % (" ".join(bad), p.returncode))
    p = subprocess.run([b, "bench", "serve", "--help"], capture_output=True, text=True, timeout=30)
    check(p.returncode == 0 and "--request-rate" in p.stdout, "--help")


def case_prefix(b):
    st = State(ttft=0.0, itl=0.0)
    r, p = run(b, st, ["--num-prompts", "6", "--random-prefix-len", "16", "--random-input-len", "20",
                       "--random-range-ratio", "0.5", "--random-output-len", "4", "--vocab-range", "3:300", "--seed", "9"])
    pr = [bd["prompt"] for bd in st.bodies]
    check(all(x[:16] == pr[0][:16] for x in pr), "shared 16-token prefix")
    check(len(set(tuple(x[16:]) for x in pr)) == 6, "distinct suffixes")
    check(all(26 <= len(x) <= 46 for x in pr) and sorted(r["input_lens"]) == sorted(len(x) for x in pr), "lengths 16 + [10, 30]")
    check(all(3 <= t < 300 for x in pr for t in x), "ids in 3:300")
    check(all(2 <= bd["max_tokens"] <= 6 for bd in st.bodies), "output lengths in [2, 6]")


def case_rate(b):
    # 60 Poisson arrivals at 20 req/s: about 3 s; the fake answers at once
    st = State(ttft=0.0, itl=0.0)
    r, p = run(b, st, ["--num-prompts", "60", "--request-rate", "20", "--random-input-len", "4",
                       "--random-output-len", "2", "--seed", "1"])
    span = st.arrivals[-1] - st.arrivals[0]
    rate = 59 / span
    check(10 <= rate <= 40, "server saw %.1f req/s (want about 20)" % rate)
    gaps = sorted(b_ - a for a, b_ in zip(st.arrivals, st.arrivals[1:]))
    check(gaps[-1] > 3 * gaps[len(gaps) // 2], "gaps spread like exponentials")
    # burstiness 100: nearly uniform gaps of 50 ms
    st = State(ttft=0.0, itl=0.0)
    r, p = run(b, st, ["--num-prompts", "20", "--request-rate", "20", "--burstiness", "100", "--random-input-len", "4",
                       "--random-output-len", "2", "--quiet"])
    gaps = sorted(b_ - a for a, b_ in zip(st.arrivals, st.arrivals[1:]))
    check(0.035 <= gaps[len(gaps) // 2] <= 0.07, "burstiness 100: median gap %.3f s (want 0.05)" % gaps[len(gaps) // 2])


def case_concurrency(b):
    st = State(ttft=0.05, itl=0.01)
    r, p = run(b, st, ["--num-prompts", "12", "--max-concurrency", "3", "--random-input-len", "4",
                       "--random-output-len", "4"])
    check(st.peak == 3 and r["max_concurrent_requests"] == 3, "3 in flight at most (server %d)" % st.peak)
    st = State(ttft=0.2, itl=0.01)
    r, p = run(b, st, ["--num-prompts", "24", "--random-input-len", "4", "--random-output-len", "2"])
    check(st.peak >= 20, "no cap, rate inf: %d in flight at once" % st.peak)


if __name__ == "__main__":
    binary, case = sys.argv[1], sys.argv[2]
    globals()["case_" + case](binary)
    print("%d failed checks" % len(FAILS) if FAILS else "all checks passed")
    sys.exit(1 if FAILS else 0)
