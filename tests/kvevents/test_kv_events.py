#!/usr/bin/python3
"""test_kv_events.py: --kv-events-endpoint against the real server.

Starts `mfaserve serve` (random MFA-KR model, blocks of 4 tokens, a pool of
48 blocks) publishing KV events on a free port, subscribes with pyzmq the way
llm-d does (SUB, topic prefix "kv@"), decodes every message with msgpack as
vLLM's wire format, and drives three rounds of traffic:

  1. shared prefixes, one request at a time (prefix-cache hits);
  2. distinct long prompts, more than the pool holds (cached blocks evicted);
  3. concurrent long generations sharing a prefix (sequences preempted).

After each round, once the server is idle and no message has come for a
while, the set of hashes the events leave (BlockStored adds, BlockRemoved
removes, AllBlocksCleared empties) must be exactly the pool's set of indexed
blocks in GET /v1/cache/stats?hashes=1. Every BlockStored hash is recomputed
from its token ids and parent with docs/kv-events.md's scheme (written here
independently of the C code), and after round 1 the hashes of each prompt's
full blocks, computed from the prompt alone as a router would, must all be
announced. Sequence numbers must run without gaps; /metrics must count what
arrived; the replay socket must re-send every received batch byte for byte;
SIGTERM must end the stream with AllBlocksCleared.

  test_kv_events.py --bin build/mfaserve
Skips (77) without python3-zmq / python3-msgpack.
"""
import argparse
import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "deploy"))
from deploy_common import Server, fail, free_port, skip  # noqa: E402

try:
    import msgpack
    import zmq
except ImportError as e:
    skip("needs python3-zmq and python3-msgpack (%s)" % e)

ap = argparse.ArgumentParser()
ap.add_argument("--bin", required=True)
args = ap.parse_args()

BS = 4
M64 = (1 << 64) - 1
SEED = 0x6D66617365727665  # "mfaserve": the parent of a first block


def mix(x):  # SplitMix64's finalizer
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    x ^= x >> 31
    return x


def block_hash(parent, tokens):
    h = mix(parent ^ ((len(tokens) << 32) & M64))
    for t in tokens:
        h = (mix(h ^ (t & 0xFFFFFFFF)) + 0x9E3779B97F4A7C15) & M64
    return mix(h)


def chain(tokens):
    """Hashes of the full blocks of a token sequence, as a router computes them."""
    out, parent = [], SEED
    for i in range(len(tokens) // BS):
        parent = block_hash(parent, tokens[i * BS:(i + 1) * BS])
        out.append(parent)
    return out


errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)
        print("  not ok:", msg)
    return cond


class Replay:
    """The subscriber: applies every batch to a set of hashes."""

    def __init__(self, endpoint):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"kv@")
        self.sock.connect(endpoint)
        self.hashes = set()
        self.seqs = []
        self.payloads = {}
        self.entries = 0  # blocks stored/removed + AllBlocksCleared, as the server counts them
        self.stored = self.removed = self.cleared = 0
        self.last_cleared = False

    def apply(self, frames):
        if not check(len(frames) == 3, "message of %d frames, want [topic, seq, payload]" % len(frames)):
            return
        topic, seq, payload = frames
        check(topic == b"kv@test-pod@kvev", "topic %r" % topic)
        check(len(seq) == 8, "sequence frame of %d bytes" % len(seq))
        self.seqs.append(int.from_bytes(seq, "big"))
        self.payloads[self.seqs[-1]] = payload
        batch = msgpack.unpackb(payload, raw=False)
        if not check(isinstance(batch, list) and len(batch) == 3, "batch %r is not [ts, events, dp_rank]" % (batch,)):
            return
        ts, events, dp = batch
        check(isinstance(ts, float) and abs(ts - time.time()) < 600, "batch ts %r is not now" % (ts,))
        check(dp == 0, "data_parallel_rank %r" % (dp,))
        self.last_cleared = False
        for ev in events:
            tag = ev[0]
            if tag == "BlockStored":
                if not check(len(ev) == 8, "BlockStored has %d fields, want 8" % len(ev)):
                    continue
                hashes, parent, toks, bs, lora_id, medium, lora_name = ev[1:]
                check(bs == BS and len(toks) == BS * len(hashes) and hashes,
                      "BlockStored: block_size %r, %d tokens for %d hashes" % (bs, len(toks), len(hashes)))
                check(lora_id is None and lora_name is None and medium == "GPU",
                      "BlockStored lora_id %r medium %r lora_name %r" % (lora_id, medium, lora_name))
                if parent is not None:
                    check(parent in self.hashes, "BlockStored parent %x not announced before" % parent)
                prev = SEED if parent is None else parent
                for i, h in enumerate(hashes):
                    want = block_hash(prev, toks[i * BS:(i + 1) * BS])
                    check(h == want, "block hash %x, recomputed from its tokens %x" % (h, want))
                    check(h not in self.hashes, "hash %x stored twice" % h)
                    self.hashes.add(h)
                    prev = h
                self.stored += len(hashes)
                self.entries += len(hashes)
            elif tag == "BlockRemoved":
                if not check(len(ev) == 3 and ev[2] == "GPU", "BlockRemoved %r" % (ev,)):
                    continue
                for h in ev[1]:
                    check(h in self.hashes, "removed hash %x was not stored" % h)
                    self.hashes.discard(h)
                self.removed += len(ev[1])
                self.entries += len(ev[1])
            elif tag == "AllBlocksCleared":
                check(len(ev) == 1, "AllBlocksCleared %r" % (ev,))
                self.hashes.clear()
                self.cleared += 1
                self.entries += 1
                self.last_cleared = True
            else:
                check(False, "unknown event %r" % (ev,))

    def drain(self, quiet=0.6, limit=30):
        """Applies messages until none has come for `quiet` seconds."""
        end = time.time() + limit
        while time.time() < end and self.sock.poll(int(quiet * 1000)):
            self.apply(self.sock.recv_multipart())


def complete(srv, prompt, max_tokens):
    st, body = srv.post("/v1/completions", {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                                            "ignore_eos": True}, timeout=120)
    check(st == 200, "completion: HTTP %d %s" % (st, body[:200]))


def cache_stats(srv):
    st, body = srv.get("/v1/cache/stats?hashes=1")
    check(st == 200, "GET /v1/cache/stats?hashes=1: HTTP %d" % st)
    return json.loads(body)


def wait_idle(srv):
    for _ in range(600):
        s = cache_stats(srv)
        if s["requests"]["running"] == 0 and s["requests"]["waiting"] == 0:
            return
        time.sleep(0.1)
    check(False, "server not idle after 60 s")


def compare(srv, sub, name):
    wait_idle(srv)
    for _ in range(20):  # a slow (sanitizer) build may still be sending
        sub.drain()
        cache_stats(srv)  # the block snapshot is refreshed when asked: ask, then read
        time.sleep(0.3)
        s = cache_stats(srv)
        pool = {int(h, 16) for h in s["prefix_hashes"]}
        if pool == sub.hashes:
            break
    b = s["blocks"]
    print("%s: %d blocks (%d cached, %d used, %d indexed), %d distinct prefix hashes; events so far: %d stored, "
          "%d removed; %d preemptions" % (name, b["total"], b["cached"], b["used"], b["indexed"], len(pool),
                                          sub.stored, sub.removed, s["preemptions"]))
    check(len(pool) == len(s["prefix_hashes"]), "%s: prefix_hashes has duplicates" % name)
    check(b["used"] == 0 and b["cached"] == b["indexed"], "%s: idle pool: used %d, cached %d, indexed %d"
          % (name, b["used"], b["cached"], b["indexed"]))
    check(len(pool) <= b["indexed"], "%s: more hashes than indexed blocks" % name)
    check(sub.hashes == pool, "%s: replayed events give %d hashes, the pool has %d (%d missing, %d extra)"
          % (name, len(sub.hashes), len(pool), len(pool - sub.hashes), len(sub.hashes - pool)))
    return s


port, rport = free_port(), free_port()
rng = random.Random(16)
with Server(args.bin, extra=["--block-size", str(BS), "--kv-cache-memory", "12K", "--max-num-seqs", "8",
                             "--max-num-batched-tokens", "64", "--kv-events-endpoint", "tcp://*:%d" % port,
                             "--kv-events-topic", "kv@test-pod@kvev",
                             "--kv-events-replay-endpoint", "tcp://*:%d" % rport]) as srv:
    sub = Replay("tcp://127.0.0.1:%d" % port)
    time.sleep(1.0)  # a SUB gets only what is sent after it has joined
    s0 = cache_stats(srv)
    check(s0["blocks"]["total"] == 48, "pool of %d blocks, want 48 (12K at 64 bytes per token)" % s0["blocks"]["total"])

    # 1. shared prefixes, one at a time
    prompts = []
    for _ in range(3):
        prefix = [rng.randrange(1, 290) for _ in range(24)]
        for _ in range(2):
            prompts.append(prefix + [rng.randrange(1, 290) for _ in range(5)])
    for p in prompts:
        complete(srv, p, 4)
    s = compare(srv, sub, "round 1 (shared prefixes)")
    check(s["prefix_cache"]["hits"] > 0, "round 1: the shared prefixes hit the cache")
    for p in prompts:
        missing = [h for h in chain(p) if h not in sub.hashes]
        check(not missing, "round 1: %d of the prompt's %d block hashes, computed from its tokens, not announced"
              % (len(missing), len(chain(p))))

    # 2. more distinct prompts than the pool holds: cached blocks are evicted
    for _ in range(8):
        complete(srv, [rng.randrange(1, 290) for _ in range(40)], 4)
    compare(srv, sub, "round 2 (eviction)")
    check(sub.removed > 0, "round 2: evictions were announced (BlockRemoved)")

    # 3. concurrent generations longer than the pool holds at once: preemption
    prefix = [rng.randrange(1, 290) for _ in range(16)]
    th = [threading.Thread(target=complete, args=(srv, prefix + [rng.randrange(1, 290) for _ in range(16)], 48))
          for _ in range(8)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    s = compare(srv, sub, "round 3 (preemption)")
    check(s["preemptions"] > 0, "round 3: sequences were preempted")

    check(sub.seqs == list(range(sub.seqs[0], sub.seqs[0] + len(sub.seqs))) if sub.seqs else False,
          "sequence numbers without gaps: %s" % sub.seqs[:20])
    check(sub.seqs and sub.seqs[0] <= 1, "the first batch after traffic is sequence %s (0 is the start-up clear)"
          % (sub.seqs[:1],))
    st, body = srv.get("/metrics")
    metrics = {}
    for ln in body.decode().splitlines():
        if ln.startswith("mfaserve:kv_events_"):
            metrics[ln.split("{")[0]] = float(ln.rsplit(" ", 1)[1])
    check(metrics.get("mfaserve:kv_events_dropped_total") == 0, "dropped events: %s" % metrics)
    # a missed sequence 0 is the one start-up AllBlocksCleared
    check(metrics.get("mfaserve:kv_events_published_total") == sub.entries + sub.seqs[0],
          "published_total %s, received %d entries after sequence %d"
          % (metrics.get("mfaserve:kv_events_published_total"), sub.entries, sub.seqs[0]))
    # the replay socket re-sends what was published, byte for byte
    dealer = sub.ctx.socket(zmq.DEALER)
    dealer.connect("tcp://127.0.0.1:%d" % rport)
    dealer.send_multipart([b"", sub.seqs[0].to_bytes(8, "big")])
    replayed = {}
    while dealer.poll(5000):
        empty, seq, payload = dealer.recv_multipart()
        if seq == b"\xff" * 8:
            check(payload == b"", "replay end marker with a payload")
            break
        replayed[int.from_bytes(seq, "big")] = payload
    else:
        check(False, "replay: no end marker within 5 s")
    check(replayed == sub.payloads, "replay from %d: %d batches, %d received (%d differ)"
          % (sub.seqs[0], len(replayed), len(sub.payloads),
             sum(1 for k in sub.payloads if replayed.get(k) != sub.payloads[k])))
    dealer.close(0)
    last = sub.seqs[-1]
    rc = srv.stop()
    check(rc == 0, "server exit code %s after SIGTERM" % rc)
    sub.drain(quiet=3)
    check(sub.seqs[-1] == last + 1 and sub.last_cleared and not sub.hashes,
          "after SIGTERM: one more batch (%s after %d) ending in AllBlocksCleared" % (sub.seqs[-1], last))
    print("%d batches, %d blocks stored, %d removed, %d cleared" % (len(sub.seqs), sub.stored, sub.removed,
                                                                     sub.cleared))
    if errors:
        srv.dump()

if errors:
    fail("%d check(s) failed" % len(errors))
print("PASS")
