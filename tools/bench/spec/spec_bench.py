#!/usr/bin/env python3
"""Speculative decoding's effect at batch 1 (issue 17 item 2): two servers on the same model, one
with --speculative ngram and one without, driven alternately, one request at a time:
  rewrite  "Copy the passage below exactly" + a passage of real prose (paragraphs of the GPL-3
           text Debian ships in /usr/share/common-licenses) + its first words: the output repeats
           the prompt, where prompt lookup has drafts to offer;
  free     an open-ended prompt: little to look up.
Greedy and temperature 0.8 (seeded); max_tokens 128, ignore_eos. Prints per task and setting the
median decode rate (completion tokens / (request time - TTFT) from a streamed request) over the
requests, the ratio spec/plain, and the servers' acceptance counters, and writes JSON with --json.
usage: spec_bench.py --plain URL --spec URL [--rounds 3] [--json OUT]"""
import argparse, json, re, statistics, time, urllib.request

FREE = ["In the beginning", "The history of the free software movement", "To open a file in Python, you",
        "The quick brown fox", "Once upon a time there was a", "SELECT name FROM users WHERE",
        "The Debian project was founded", "A good manual page says"]


def passages(n):
    t = open("/usr/share/common-licenses/GPL-3").read()
    paras = [re.sub(r"\s+", " ", p).strip() for p in t.split("\n\n")]
    paras = [p for p in paras if 300 <= len(p) <= 700]
    return paras[:n]


def stream(base, body):
    req = urllib.request.Request(base + "/v1/completions", data=json.dumps(dict(body, stream=True)).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.time()
    first, n, text = None, 0, ""
    with urllib.request.urlopen(req) as r:
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev.get("choices") and ev["choices"][0].get("text"):
                if first is None:
                    first = time.time()
                text += ev["choices"][0]["text"]
    t1 = time.time()
    return first - t0, t1 - first, text


def metrics(base):
    t = urllib.request.urlopen(base + "/metrics").read().decode()
    out = {}
    for k in ("spec_decode_num_drafts_total", "spec_decode_num_draft_tokens_total", "spec_decode_num_accepted_tokens_total"):
        m = re.search(r"^mfaserve:%s\{[^}]*\} (\S+)" % k, t, re.M)
        out[k] = float(m.group(1)) if m else 0.0
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plain", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--json")
    a = ap.parse_args()
    tasks = {"rewrite": ["Copy the passage below exactly.\n\nPassage: %s\n\nCopy: %s" % (p, " ".join(p.split()[:6]))
                         for p in passages(8)],
             "free": FREE}
    res = {}
    m0 = metrics(a.spec)
    for task, prompts in tasks.items():
        for temp in (0.0, 0.8):
            key = "%s/t=%g" % (task, temp)
            rates = {"plain": [], "spec": []}
            same = 0
            for rnd in range(a.rounds):
                for i, p in enumerate(prompts):
                    body = dict(prompt=p, max_tokens=a.max_tokens, temperature=temp, ignore_eos=True, seed=100 + i)
                    texts = {}
                    order = ("plain", "spec") if (rnd + i) % 2 == 0 else ("spec", "plain")
                    for which in order:
                        base = a.plain if which == "plain" else a.spec
                        ttft, dec, text = stream(base, body)
                        rates[which].append((a.max_tokens - 1) / dec)
                        texts[which] = text
                    same += texts["plain"] == texts["spec"]
            med = {k: statistics.median(v) for k, v in rates.items()}
            res[key] = dict(plain_tok_s=med["plain"], spec_tok_s=med["spec"], ratio=med["spec"] / med["plain"],
                            requests=len(rates["plain"]), identical_texts=same)
            m1 = metrics(a.spec)
            d = {k: m1[k] - m0[k] for k in m1}
            m0 = m1
            res[key].update(drafts=d["spec_decode_num_drafts_total"], draft_tokens=d["spec_decode_num_draft_tokens_total"],
                            accepted=d["spec_decode_num_accepted_tokens_total"])
            r = res[key]
            print("%-14s plain %7.1f tok/s  spec %7.1f tok/s  x%.2f  (%d requests, %d identical; %d drafts, %d/%d accepted)"
                  % (key, r["plain_tok_s"], r["spec_tok_s"], r["ratio"], r["requests"], r["identical_texts"],
                     r["drafts"], r["accepted"], r["draft_tokens"]), flush=True)
    if a.json:
        json.dump(res, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
