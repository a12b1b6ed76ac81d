#!/usr/bin/env python3
"""Closed-loop streaming load, measured the way issue 17 compared mfaserve
with llama-server: N concurrent clients, each sending one streamed
/v1/completions request after another (temperature 0, ignore_eos,
max_tokens 64) for D seconds; generated tokens/s, time to first token
(mean, median, p99) and mean request time, as JSON.

Python standard library only: asyncio and raw HTTP/1.1 on keep-alive
connections (one per client), so the client costs little CPU beside the
server on a small machine. Works against any OpenAI-compatible server that
streams Server-Sent Events (mfaserve, llama-server, vLLM).

Definitions:
- TTFT: from just before the request is written to the arrival of the
  first `data:` event that carries a choice (the first token's chunk).
- request time: from the same start to the end of the response.
- generated tokens: usage.completion_tokens of the final chunk
  (stream_options.include_usage), else the number of chunks with a choice.
- generated tok/s: tokens of the requests that started within D seconds,
  over the time from the start to the end of the last of them (clients
  start no request after D and finish the ones running).
- prompts: a window of ~--prompt-tokens tokens of English text (the GPL-3
  text Debian ships, or --text FILE) starting at a random word for every
  request, so no two prompts share a prefix the server could cache. The
  words per token are measured once through the server's /tokenize when
  it has one, else 0.75 words per token is assumed; the mean prompt length
  the server reports (usage.prompt_tokens) is in the result.
- server phases: when the server's /metrics has mfaserve's first-token
  phase histograms, their means over the run (from the _sum and _count
  differences) are reported under "server_phases_ms".

    python3 tools/bench/ttft/load.py --url http://127.0.0.1:8000 --clients 16 --duration 60 --json out.json
"""
import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import time
import urllib.request

DEFAULT_TEXTS = ["/usr/share/common-licenses/GPL-3",
                 os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "README.md")]

PHASES = [  # (key, metric name without prefix)
    ("arrival_to_tokenized", "request_tokenize_time_seconds"),
    ("tokenized_to_submitted", "request_submit_wait_time_seconds"),
    ("submitted_to_scheduled", "request_queue_time_seconds"),
    ("scheduled_to_first_token", "request_prefill_time_seconds"),
    ("first_token_to_first_byte", "request_first_byte_time_seconds"),
    ("arrival_to_first_byte", "http_time_to_first_token_seconds"),
]


def pct(v, p):
    """numpy.percentile(v, p), linear interpolation."""
    if not v:
        return 0.0
    s = sorted(v)
    k = (len(s) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def http_post_json(url, obj, timeout=10):
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def metrics_snapshot(base):
    """{name: (sum, count)} of every *_sum / *_count series under mfaserve: or vllm:."""
    try:
        text = http_get(base + "/metrics").decode()
    except Exception:
        return {}
    out = {}
    for line in text.splitlines():
        m = re.match(r'^(?:mfaserve|vllm):(\w+)_(sum|count)\{[^}]*\} (\S+)$', line)
        if m and line.startswith("mfaserve:"):
            s, c = out.get(m.group(1), (0.0, 0.0))
            v = float(m.group(3))
            out[m.group(1)] = (v, c) if m.group(2) == "sum" else (s, v)
    return out


class Conn:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.r = self.w = None

    async def open(self):
        self.r, self.w = await asyncio.open_connection(self.host, self.port)

    def close(self):
        if self.w:
            self.w.close()
        self.r = self.w = None


async def read_headers(r):
    status = await r.readline()
    if not status:
        raise ConnectionError("connection closed before the status line")
    code = int(status.split()[1])
    hdr = {}
    while True:
        line = await r.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        hdr[k.strip().lower()] = v.strip()
    return code, hdr


async def body_pieces(r, hdr):
    """Yields the response body as it arrives (chunked, sized or until close)."""
    if hdr.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await r.readline()
            if not size_line:
                raise ConnectionError("connection closed inside a chunked body")
            n = int(size_line.split(b";")[0].strip(), 16)
            if n == 0:
                while (await r.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                return
            data = await r.readexactly(n)
            await r.readexactly(2)
            yield data
    elif "content-length" in hdr:
        left = int(hdr["content-length"])
        while left > 0:
            data = await r.read(min(left, 65536))
            if not data:
                raise ConnectionError("connection closed inside the body")
            left -= len(data)
            yield data
    else:
        while True:
            data = await r.read(65536)
            if not data:
                return
            yield data


async def one_request(conn, path, body, hostport):
    """-> dict(ok, ttft, e2e, tokens, prompt_tokens, err)"""
    if conn.w is None:
        await conn.open()
    req = (f"POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n"
           f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    t0 = time.perf_counter()
    conn.w.write(req)
    await conn.w.drain()
    code, hdr = await read_headers(conn.r)
    ttft = None
    chunks = 0
    usage_tokens = None
    prompt_tokens = None
    err = None
    pending = b""
    raw = []
    async for piece in body_pieces(conn.r, hdr):
        now = time.perf_counter()
        if code != 200:
            raw.append(piece)
            continue
        pending += piece
        while True:
            i = pending.find(b"\n\n")
            if i < 0:
                break
            ev, pending = pending[:i], pending[i + 2:]
            for line in ev.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    continue
                # parse only what matters: the first event, errors, usage
                if ttft is not None and b'"usage":{' not in data and b'"error"' not in data:
                    if b'"choices":[{' in data:
                        chunks += 1
                    continue
                try:
                    j = json.loads(data)
                except ValueError:
                    err = "unparsable event"
                    continue
                if "error" in j:
                    err = str(j["error"].get("message", "error"))[:200]
                if j.get("choices"):
                    chunks += 1
                    if ttft is None:
                        ttft = now - t0
                u = j.get("usage")
                if u:
                    usage_tokens = u.get("completion_tokens")
                    prompt_tokens = u.get("prompt_tokens")
    t1 = time.perf_counter()
    if hdr.get("connection", "").lower() == "close":
        conn.close()
    if code != 200:
        return {"ok": False, "err": f"HTTP {code}: {b''.join(raw)[:200]!r}"}
    if err or ttft is None:
        return {"ok": False, "err": err or "no output chunk"}
    return {"ok": True, "ttft": ttft, "e2e": t1 - t0, "t_end": t1,
            "tokens": usage_tokens if usage_tokens is not None else chunks, "prompt_tokens": prompt_tokens}


def make_prompts(words, per_prompt, rng):
    while True:
        i = rng.randrange(0, max(1, len(words) - per_prompt))
        yield " ".join(words[i:i + per_prompt])


async def client(k, a, model, words, wpt, t_stop, results):
    host, port = a.host, a.port
    conn = Conn(host, port)
    rng = random.Random(a.seed * 1000 + k)
    prompts = make_prompts(words, max(1, round(a.prompt_tokens * wpt)), rng)
    while time.perf_counter() < t_stop:
        body = {"model": model, "prompt": next(prompts), "max_tokens": a.max_tokens, "temperature": 0,
                "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
        try:
            res = await one_request(conn, "/v1/completions", json.dumps(body).encode(), f"{host}:{port}")
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError) as e:
            conn.close()
            res = {"ok": False, "err": f"{type(e).__name__}: {e}"}
        res["client"] = k
        results.append(res)
        if a.new_connection:
            conn.close()
    conn.close()


def words_per_token(base, words, model):
    sample = " ".join(words[:2000])
    try:
        j = http_post_json(base + "/tokenize", {"model": model, "prompt": sample})
        n = j.get("count") or len(j.get("tokens", []))
        return 2000 / n if n else 0.75
    except Exception:
        return 0.75


async def main_async(a, model, words, wpt):
    results = []
    t0 = time.perf_counter()
    t_stop = t0 + a.duration
    await asyncio.gather(*(client(k, a, model, words, wpt, t_stop, results) for k in range(a.clients)))
    return t0, results


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=60.0, help="seconds during which clients start requests")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompt-tokens", type=int, default=150, help="about this many prompt tokens per request")
    p.add_argument("--text", help="text file the prompts are cut from (default: Debian's GPL-3 text)")
    p.add_argument("--model", help="model name (default: the first of /v1/models)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--new-connection", action="store_true", help="a new connection for every request")
    p.add_argument("--json", help="write the result here too")
    p.add_argument("--label", default="")
    a = p.parse_args()
    m = re.match(r"http://([^:/]+):(\d+)/?$", a.url)
    if not m:
        sys.exit("--url must be http://HOST:PORT")
    a.host, a.port = m.group(1), int(m.group(2))
    base = a.url.rstrip("/")
    model = a.model or json.loads(http_get(base + "/v1/models"))["data"][0]["id"]
    path = a.text or next((f for f in DEFAULT_TEXTS if os.path.exists(f)), None)
    words = open(path, encoding="utf-8", errors="replace").read().split()
    wpt = words_per_token(base, words, model)
    before = metrics_snapshot(base)
    t0, results = asyncio.run(main_async(a, model, words, wpt))
    after = metrics_snapshot(base)
    ok = [r for r in results if r["ok"]]
    t_end = max((r["t_end"] for r in ok), default=t0 + a.duration)
    ttft = [r["ttft"] for r in ok]
    e2e = [r["e2e"] for r in ok]
    toks = sum(r["tokens"] for r in ok)
    pts = [r["prompt_tokens"] for r in ok if r.get("prompt_tokens")]
    out = {
        "label": a.label, "url": a.url, "model": model, "clients": a.clients, "duration_s": a.duration,
        "max_tokens": a.max_tokens, "prompt_tokens_target": a.prompt_tokens,
        "prompt_tokens_mean": statistics.mean(pts) if pts else None,
        "requests": len(ok), "failed": len(results) - len(ok),
        "errors": sorted({r["err"] for r in results if not r["ok"]})[:5],
        "wall_s": t_end - t0, "generated_tokens": toks, "gen_tok_s": toks / (t_end - t0) if ok else 0.0,
        "ttft_mean_s": statistics.mean(ttft) if ttft else 0.0, "ttft_median_s": pct(ttft, 50),
        "ttft_p99_s": pct(ttft, 99), "request_mean_s": statistics.mean(e2e) if e2e else 0.0,
        "unix_time": time.time(),
    }
    phases = {}
    for key, name in PHASES:
        if name in after:
            s = after[name][0] - before.get(name, (0.0, 0.0))[0]
            c = after[name][1] - before.get(name, (0.0, 0.0))[1]
            if c > 0:
                phases[key] = round(1e3 * s / c, 3)
    if phases:
        out["server_phases_ms"] = phases
    js = json.dumps(out, indent=1)
    print(js)
    if a.json:
        with open(a.json, "w") as f:
            f.write(js + "\n")


if __name__ == "__main__":
    main()
