#!/usr/bin/env python3
"""Train the bundled MFA-KR model: tokenizer, tokenization, training, evaluation, export.

Usage (GPU machine, see README.md):
  python3 tools/train/train.py --corpus .corpus/transport/corpus.tar.xz --out $OUT --budget 540

Steps:
 1. unpack the corpus (text/<source>.train.txt, .heldout.txt, outside-*.txt)
 2. train a byte-level BPE tokenizer (HF tokenizers; vocab 8192; <|endoftext|> = id 0 is
    EOS and document separator) on the train parts, or load --tokenizer
 3. tokenize: each split is EOS doc EOS doc ... EOS
 4. train MFA-KR (model.py) with AdamW + warmup + cosine (schedule by elapsed time, so the
    run ends inside --budget seconds), bf16 autocast, random 1025-token windows sampled per
    source with --weights
 5. evaluate held-out loss per source and bits per byte every --eval-every seconds; keep
    the best weights by total held-out loss (all training sources' held-out tails);
    export the best so far to --out whenever it improves (a timeout still leaves a model)
 6. final: reload the exported bf16 weights, evaluate them in float32, write samples,
    the model card and tests/data/bundled_logits.json content (export.py)

The paper replication (docs/paper-replication.md, replicate_device.sh) uses the same file
with --kind (mha, gqa, mqa, mla, mfa, mfa-kr), --match-params (the FFN width that gives a
parameter count), a step-based schedule whose length is agreed between runs sharing the GPU
(--sync-dir: every run gets the same token count), evaluations at fixed fractions of it,
history.json / final.json written to --out as it goes, and --export 0 (the final evaluation
runs the bf16-rounded best weights in float32 as above, without writing a model directory).
"""
import argparse
import contextlib
import io
import json
import math
import os
import shutil
import sys
import tarfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import MFAForCausalLM, count_params, kv_bytes_per_token, kv_elements  # noqa: E402
import export as exporter  # noqa: E402

SEP = "<|endoftext|>"
T0 = time.time()
LOG = None


def log(*a):
    s = f"[{time.time() - T0:7.1f}s] " + " ".join(str(x) for x in a)
    print(s, flush=True)
    if LOG:
        LOG.write(s + "\n")
        LOG.flush()


def load_corpus(path):
    """-> {name: (docs list)} for train/heldout/outside."""
    files = {}
    if os.path.isdir(path):
        for fn in os.listdir(path):
            if fn.endswith(".txt"):
                with open(os.path.join(path, fn), encoding="utf-8") as f:
                    files[fn] = f.read()
    else:
        with tarfile.open(path, "r:*") as tf:
            for m in tf.getmembers():
                if m.isfile() and m.name.endswith(".txt"):
                    files[os.path.basename(m.name)] = tf.extractfile(m).read().decode("utf-8")
    train, held, outside = {}, {}, {}
    for fn, text in sorted(files.items()):
        docs = [d.strip("\n") for d in text.split("\n" + SEP + "\n")]
        docs = [d for d in docs if d]
        if fn.endswith(".train.txt"):
            train[fn[:-10]] = docs
        elif fn.endswith(".heldout.txt"):
            held[fn[:-12]] = docs
        elif fn.startswith("outside-"):
            outside[fn[:-4]] = docs
    return train, held, outside


def train_tokenizer(train_docs, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[SEP],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)

    def it():
        for docs in train_docs.values():
            for d in docs:
                yield d
    tok.train_from_iterator(it(), trainer=trainer)
    return tok


def encode_stream(tok, docs, eos):
    out = [eos]
    for enc in tok.encode_batch(docs):
        out.extend(enc.ids)
        out.append(eos)
    return out


@torch.no_grad()
def evaluate(model, streams, nbytes, device, seq=1024, batch=32, dtype=torch.bfloat16, explicit=False):
    """Sum of nats over every token after the first of each stream, in windows of seq."""
    model.eval()
    res = {}
    for name, ids in streams.items():
        ids = torch.as_tensor(ids, dtype=torch.long)
        n = len(ids) - 1
        starts = list(range(0, n, seq))
        tot = 0.0
        cnt = 0
        for b in range(0, len(starts), batch):
            chunk = starts[b:b + batch]
            L = max(min(seq, n - s) for s in chunk)
            x = torch.zeros(len(chunk), L, dtype=torch.long)
            y = torch.full((len(chunk), L), -100, dtype=torch.long)
            for i, s in enumerate(chunk):
                m = min(seq, n - s)
                x[i, :m] = ids[s:s + m]
                y[i, :m] = ids[s + 1:s + 1 + m]
            x, y = x.to(device), y.to(device)
            ctx = (torch.autocast(device_type=device.type, dtype=dtype) if dtype != torch.float32
                   else contextlib.nullcontext())
            with ctx:
                logits = model(x, explicit=explicit)
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.view(-1),
                                   ignore_index=-100, reduction="sum")
            tot += loss.item()
            cnt += int((y != -100).sum())
        res[name] = dict(loss=tot / cnt, nats=tot, tokens=cnt, bytes=nbytes[name],
                         bpb=tot / math.log(2) / nbytes[name])
    model.train()
    return res


def summarize(res, names):
    """Pooled loss/bpb over the named held-out texts, and the macro mean of their losses
    (each source counts the same; this is the early-stopping criterion)."""
    nats = sum(res[n]["nats"] for n in names)
    toks = sum(res[n]["tokens"] for n in names)
    byts = sum(res[n]["bytes"] for n in names)
    return dict(loss=nats / toks, bpb=nats / math.log(2) / byts, tokens=toks, bytes=byts,
                macro_loss=sum(res[n]["loss"] for n in names) / len(names),
                macro_bpb=sum(res[n]["bpb"] for n in names) / len(names))


def make_cfg(args, V, eos, inter):
    """The config.json of each attention kind; everything but attention is shared."""
    common = dict(hidden_size=args.d, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                  intermediate_size=inter, vocab_size=V, rms_norm_eps=1e-5, rope_theta=10000.0,
                  max_position_embeddings=max(2048, args.seq), tie_word_embeddings=True,
                  bos_token_id=eos, eos_token_id=eos, torch_dtype="bfloat16")
    k = args.kind
    if k in ("mfa-kr", "mfa"):
        return dict(architectures=["MFAForCausalLM"], model_type="mfa", head_dim=args.head_dim,
                    share_q_dim=args.q_rank, num_attention_groups=1, key_reuse=k == "mfa-kr", **common)
    if k in ("mha", "gqa", "mqa"):
        kv = {"mha": args.heads, "gqa": args.kv_heads or args.heads // 4, "mqa": 1}[k]
        return dict(architectures=["LlamaForCausalLM"], model_type="llama", head_dim=args.head_dim,
                    num_key_value_heads=kv, attention_bias=False, **common)
    if k == "mla":
        qr = args.q_rank if args.mla_q_rank < 0 else args.mla_q_rank
        return dict(architectures=["DeepseekV2ForCausalLM"], model_type="deepseek_v2",
                    num_key_value_heads=args.heads, q_lora_rank=qr or None, kv_lora_rank=args.kv_rank,
                    qk_nope_head_dim=args.head_dim, qk_rope_head_dim=args.rope_dim, v_head_dim=args.head_dim,
                    n_routed_experts=None, attention_bias=False, **common)
    raise ValueError(k)


def main():
    global LOG
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True, help=".tar.xz from gather.py, or its text/ folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer", default=None, help="reuse this tokenizer.json instead of training one")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--q-rank", type=int, default=256)
    ap.add_argument("--inter", type=int, default=1408)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--warmup-frac", type=float, default=0.03)
    ap.add_argument("--budget", type=float, default=540, help="seconds from start to the end of everything")
    ap.add_argument("--final-reserve", type=float, default=45, help="seconds kept for the final eval/export")
    ap.add_argument("--eval-every", type=float, default=25, help="seconds between evaluations")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (smoke tests)")
    ap.add_argument("--weights", default="gcide=0.5", help="per-source sampling weight multipliers")
    ap.add_argument("--compile", type=int, default=1)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--name", default=None, help="model directory name (default mfa-kr-<N>m)")
    ap.add_argument("--max-docs", type=int, default=0, help="use at most N docs per source (smoke tests)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--work", default="/tmp/mfa_train_work", help="scratch dir (full model dir lives here)")
    # ---- paper replication (docs/paper-replication.md); the defaults keep the bundled model's run
    ap.add_argument("--kind", default="mfa-kr", choices=["mfa-kr", "mfa", "mha", "gqa", "mqa", "mla"])
    ap.add_argument("--kv-heads", type=int, default=0, help="gqa: KV heads (default heads/4)")
    ap.add_argument("--kv-rank", type=int, default=256, help="mla: kv_lora_rank (the cached latent)")
    ap.add_argument("--rope-dim", type=int, default=32, help="mla: qk_rope_head_dim (the cached shared key)")
    ap.add_argument("--mla-q-rank", type=int, default=-1, help="mla: q_lora_rank (-1: --q-rank; 0: plain q_proj)")
    ap.add_argument("--match-params", type=int, default=0,
                    help="set --inter (a multiple of 8) so the parameter count is closest to this")
    ap.add_argument("--accum", type=int, default=1, help="micro-batches per step (batch = micro-batch * accum)")
    ap.add_argument("--data-seed", type=int, default=-1, help="seed of the window sampler (-1: --seed)")
    ap.add_argument("--total-steps", type=int, default=0, help="step-based schedule of this many steps")
    ap.add_argument("--sync-dir", default="", help="agree on --total-steps with the runs sharing the GPU")
    ap.add_argument("--sync-n", type=int, default=1, help="how many runs share --sync-dir")
    ap.add_argument("--deadline", type=float, default=0, help="unix time by which training must end")
    ap.add_argument("--warmup-steps", type=int, default=100, help="warmup of the step-based schedule")
    ap.add_argument("--eval-frac", type=float, default=0.05, help="step-based: evaluate every this fraction")
    ap.add_argument("--export", type=int, default=1, help="0: no model directory, samples or logits")
    ap.add_argument("--cache", default="", help="tokenized corpus cache (.pt): read if there, else written")
    ap.add_argument("--prepare-only", type=int, default=0, help="write --cache and stop")
    ap.add_argument("--eval-cap", type=int, default=0, help="evaluate at most N tokens per text (CPU smoke tests)")
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    LOG = open(os.path.join(args.out, "train.log"), "a")
    torch.manual_seed(args.seed)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    log("args", vars(args), "device", dev, "torch", torch.__version__)

    if args.cache and os.path.exists(args.cache):
        c = torch.load(args.cache)
        train_streams, eval_streams, nbytes, src_names, eos, V = (
            c["train"], c["eval"], c["nbytes"], c["src_names"], c["eos"], c["V"])
        tok_path = c["tok_path"]
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(tok_path)
        log("tokenized corpus from cache", args.cache, "train tokens", sum(len(v) for v in train_streams.values()))
    else:
        train_docs, held_docs, out_docs = load_corpus(args.corpus)
        if args.max_docs:
            train_docs = {k: v[:args.max_docs] for k, v in train_docs.items()}
            held_docs = {k: v[:max(1, args.max_docs // 10)] for k, v in held_docs.items()}
            out_docs = {k: v[:max(1, args.max_docs // 10)] for k, v in out_docs.items()}
        log("corpus", {k: (len(v), sum(len(d) for d in v)) for k, v in train_docs.items()})

        from tokenizers import Tokenizer
        if args.tokenizer:
            tok = Tokenizer.from_file(args.tokenizer)
            log("tokenizer loaded", args.tokenizer)
        else:
            tok = train_tokenizer(train_docs, args.vocab)
            log("tokenizer trained")
        eos = tok.token_to_id(SEP)
        assert eos is not None
        os.makedirs(args.work, exist_ok=True)
        tok_path = os.path.join(args.work, "tokenizer.json")
        tok.save(tok_path)
        V = tok.get_vocab_size()

        train_streams = {k: encode_stream(tok, v, eos) for k, v in train_docs.items()}
        eval_streams = {k: encode_stream(tok, v, eos) for k, v in held_docs.items()}
        eval_streams.update({k: encode_stream(tok, v, eos) for k, v in out_docs.items()})
        nbytes = {k: sum(len(d.encode("utf-8")) for d in v) for k, v in list(held_docs.items()) + list(out_docs.items())}
        src_names = sorted(held_docs)
        log("tokens train", {k: len(v) for k, v in train_streams.items()}, "total", sum(len(v) for v in train_streams.values()))
        log("tokens eval", {k: len(v) for k, v in eval_streams.items()})
        log("bytes/token train", sum(sum(len(d.encode()) for d in v) for v in train_docs.values()) / sum(len(v) for v in train_streams.values()))
        if args.cache:  # int32 tensors: a pickled list of 51M ints loads slowly
            train_streams = {k: torch.tensor(v, dtype=torch.int32) for k, v in train_streams.items()}
            eval_streams = {k: torch.tensor(v, dtype=torch.int32) for k, v in eval_streams.items()}
            torch.save(dict(train=train_streams, eval=eval_streams, nbytes=nbytes, src_names=src_names,
                            eos=eos, V=V, tok_path=tok_path), args.cache + ".tmp")
            os.replace(args.cache + ".tmp", args.cache)
            log("wrote", args.cache)
    if args.prepare_only:
        return
    if args.eval_cap:
        nbytes = {k: v * min(1.0, args.eval_cap / len(eval_streams[k])) for k, v in nbytes.items()}  # rough
        eval_streams = {k: v[:args.eval_cap] for k, v in eval_streams.items()}

    # ---- data on device: one concatenated stream, per-source sampling
    names = sorted(train_streams)
    wmul = {kv.split("=")[0]: float(kv.split("=")[1]) for kv in args.weights.split(",") if kv}
    seq = args.seq
    starts, lens, w = [], [], []
    allids = []
    off = 0
    for n in names:
        s = train_streams[n]
        if len(s) <= seq + 1:
            continue
        allids.append(torch.as_tensor(s, dtype=torch.int32))
        starts.append(off)
        lens.append(len(s))
        w.append(len(s) * wmul.get(n, 1.0))
        off += len(s)
    data = torch.cat(allids).to(dev)
    starts_t = torch.tensor(starts, dtype=torch.long, device=dev)
    lens_t = torch.tensor(lens, dtype=torch.long, device=dev)
    probs = torch.tensor(w, dtype=torch.float, device=dev)
    probs = probs / probs.sum()
    ar = torch.arange(seq + 1, device=dev)

    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed if args.data_seed < 0 else args.data_seed)  # same windows for every kind

    def batch():
        src = torch.multinomial(probs, args.batch, replacement=True, generator=gen)
        o = (torch.rand(args.batch, device=dev, generator=gen) * (lens_t[src] - seq - 1).float()).long() + starts_t[src]
        xy = data[o[:, None] + ar[None, :]].long()
        return xy[:, :-1], xy[:, 1:]

    cfg = make_cfg(args, V, eos, args.inter)
    if args.match_params:
        p0 = count_params(MFAForCausalLM(make_cfg(args, V, eos, 8)))
        p1 = count_params(MFAForCausalLM(make_cfg(args, V, eos, 16)))  # linear in the FFN width
        inter = max(8, 8 * round((args.match_params - p0) / (p1 - p0) + 1))
        cfg = make_cfg(args, V, eos, inter)
        log("match-params", args.match_params, "-> intermediate_size", inter)
    torch.manual_seed(args.seed)  # the same init draws whatever was built above
    model = MFAForCausalLM(cfg, dropout=args.dropout).to(dev)
    nparam = count_params(model)
    name = args.name or f"{args.kind}-{round(nparam / 1e6)}m"
    attn_params = sum(p.numel() for n, p in model.named_parameters() if ".self_attn." in n)
    meta = dict(kind=args.kind, name=name, params=nparam, attention_params=attn_params,
                ffn_params=sum(p.numel() for n, p in model.named_parameters() if ".mlp." in n),
                intermediate_size=cfg["intermediate_size"], kv_elements_per_layer=sum(kv_elements(cfg)),
                kv_bytes_f16=kv_bytes_per_token(cfg, "f16"), kv_bytes_int8=kv_bytes_per_token(cfg, "int8"),
                seed=args.seed, cfg=cfg)
    log("model", name, "params", nparam, "cfg", cfg)
    log("META", json.dumps(meta))
    mdir = os.path.join(args.work, name)

    def publish(extra=None):
        """$OUT gets the shards (one folder) and one meta.tar: at most 8 files come back.
        Written beside and renamed into place, so a copy taken at any moment (device_job.sh
        polls $OUT while training runs) finds whole files."""
        od = os.path.join(args.out, name)
        tmp, old = od + ".new", od + ".old"
        for d in (tmp, old):
            shutil.rmtree(d, ignore_errors=True)
        os.makedirs(tmp)
        for fn in sorted(os.listdir(mdir)):
            if fn.endswith(".safetensors"):
                shutil.copyfile(os.path.join(mdir, fn), os.path.join(tmp, fn))
        with tarfile.open(os.path.join(args.out, "meta.tar.new"), "w") as tf:
            for fn in sorted(os.listdir(mdir)):
                if not fn.endswith(".safetensors"):
                    tf.add(os.path.join(mdir, fn), arcname=fn)
            for p in extra or []:
                tf.add(p, arcname=os.path.basename(p))
        if os.path.isdir(od):
            os.rename(od, old)
        os.rename(tmp, od)
        os.replace(os.path.join(args.out, "meta.tar.new"), os.path.join(args.out, "meta.tar"))
        shutil.rmtree(old, ignore_errors=True)

    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt_kw = dict(lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    if dev.type == "cuda":
        opt_kw["fused"] = True
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}], **opt_kw)

    fmodel = model
    if args.compile and hasattr(torch, "compile") and dev.type == "cuda":
        fmodel = torch.compile(model)

    def loss_fn(x, y):
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits = fmodel(x)
        return F.cross_entropy(logits.float().view(-1, V), y.reshape(-1))

    train_end = T0 + args.budget - args.final_reserve
    if args.deadline:
        train_end = min(train_end, args.deadline)
    step_sched = bool(args.total_steps or args.sync_dir)
    total = args.total_steps  # 0 until agreed (sync)
    micro = args.batch // args.accum
    assert micro * args.accum == args.batch
    t_start = None
    step, tokens_seen = 0, 0
    best = dict(loss=float("inf"))  # loss = macro mean of per-source held-out losses
    best_state = None
    history = []
    last_eval = 0.0
    last_export = 0.0
    next_eval = max(1, round(total * args.eval_frac)) if total else 0
    cut_short = False
    cal = None

    def save_json(fn, obj):
        with open(os.path.join(args.out, fn + ".tmp"), "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(os.path.join(args.out, fn + ".tmp"), os.path.join(args.out, fn))

    def agree_steps():
        """Every run writes its step rate; the first to see all N (or after 150 s, those
        there are) fixes total = slowest rate * time left * 0.8 for all (O_EXCL file; the
        margin pays for the evaluations, which the rate leaves out)."""
        rate = (step - cal[0]) / (time.time() - cal[1])
        with open(os.path.join(args.sync_dir, f"rate.{os.getpid()}"), "w") as f:
            f.write(str(rate))
        dec = os.path.join(args.sync_dir, "total_steps")
        t_wait = time.time()
        while not os.path.exists(dec):
            rates = [float(open(os.path.join(args.sync_dir, fn)).read() or "nan")
                     for fn in os.listdir(args.sync_dir) if fn.startswith("rate.")]
            if len(rates) >= args.sync_n or time.time() - t_wait > 150:
                tot = int(min(rates) * (train_end - time.time()) * 0.8) + step
                try:
                    fd = os.open(dec, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                    os.write(fd, json.dumps(dict(total_steps=tot, rates=rates, at=time.time())).encode())
                    os.close(fd)
                except FileExistsError:
                    pass
                break
            time.sleep(0.5)
        while True:
            try:
                return json.load(open(dec))["total_steps"]
            except (ValueError, OSError):
                time.sleep(0.2)

    while True:
        now = time.time()
        if t_start is None:
            t_start = now
        if step_sched:
            if (total and step >= total) or (args.max_steps and step >= args.max_steps):
                break
            if now >= train_end:
                cut_short = True
                log(f"deadline reached at step {step} of {total}: schedule cut short")
                break
            if step < args.warmup_steps:
                lr = args.lr * max(0.02, (step + 1) / args.warmup_steps)
            elif not total:
                lr = args.lr
            else:
                pr = min(1.0, (step - args.warmup_steps) / max(1, total - args.warmup_steps))
                lr = args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * pr)))
        else:
            frac = (now - t_start) / max(1e-6, train_end - t_start)
            if frac >= 1.0 or (args.max_steps and step >= args.max_steps):
                break
            if frac < args.warmup_frac:
                lr = args.lr * max(0.02, frac / args.warmup_frac)
            else:
                pr = (frac - args.warmup_frac) / (1 - args.warmup_frac)
                lr = args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * pr)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch()
        opt.zero_grad(set_to_none=True)
        for a in range(args.accum):
            loss = loss_fn(x[a * micro:(a + 1) * micro], y[a * micro:(a + 1) * micro]) / args.accum
            loss.backward()
        loss = loss * args.accum  # the last micro-batch's loss, for the log
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens_seen += x.numel()
        if step == 1:
            log("first step done (compile)", f"loss {loss.item():.3f}")
            if args.sync_dir:  # measure the step rate only once every run has compiled
                open(os.path.join(args.sync_dir, f"ready.{os.getpid()}"), "w").close()
                t_wait = time.time()
                while (sum(fn.startswith("ready.") for fn in os.listdir(args.sync_dir)) < args.sync_n
                       and time.time() - t_wait < 300):
                    time.sleep(0.5)
                log("all runs compiled, waited", round(time.time() - t_wait, 1), "s")
            t_start = time.time()  # schedule measured from after compilation
            tok_t0, tok_c0 = time.time(), tokens_seen
        if args.sync_dir and not total:
            if cal is None and step >= 5:
                torch.cuda.synchronize() if dev.type == "cuda" else None
                cal = (step, time.time())
            elif cal is not None and time.time() - cal[1] >= 30 and step - cal[0] >= 10:
                torch.cuda.synchronize() if dev.type == "cuda" else None
                total = agree_steps()
                every = max(1, round(total * args.eval_frac))
                next_eval = every * (step // every + 1)  # the same evaluation steps in every run
                log(f"total steps agreed: {total} ({total * args.batch * seq / 1e6:.1f}M tokens)")
        if step_sched:
            last_step = bool((total and step >= total) or (args.max_steps and step >= args.max_steps)
                             or time.time() >= train_end)
        else:
            last_step = (args.max_steps and step >= args.max_steps) or time.time() >= train_end
        if step % 50 == 0 or last_step:
            rate = (tokens_seen - tok_c0) / max(1e-6, time.time() - tok_t0)
            log(f"step {step} loss {loss.item():.4f} gnorm {gn.item():.3f} lr {lr:.2e} "
                f"tok {tokens_seen / 1e6:.1f}M ({tokens_seen / data.numel():.2f} ep) {rate / 1e3:.0f}k tok/s")
        if step_sched:
            due = step == 1 or last_step or (total and step >= next_eval)
        else:
            due = time.time() - last_eval >= args.eval_every or last_step
        if due:
            last_eval = time.time()
            if total:
                while next_eval <= step:
                    next_eval += max(1, round(total * args.eval_frac))
            res = evaluate(model, eval_streams, nbytes, dev, seq=seq,  # bf16 autocast crawls on a CPU
                           dtype=torch.bfloat16 if dev.type == "cuda" else torch.float32)
            tot = summarize(res, src_names)
            entry = dict(step=step, tokens=tokens_seen, epochs=tokens_seen / data.numel(), heldout=tot,
                         seconds=round(time.time() - T0, 1), lr=lr, total_steps=total,
                         per_source={k: (round(v["loss"], 4), round(v["bpb"], 4)) for k, v in res.items()})
            history.append(entry)
            log(f"EVAL step {step} heldout macro loss {tot['macro_loss']:.4f} pooled loss {tot['loss']:.4f} "
                f"bpb {tot['bpb']:.4f} | " + " ".join(f"{k}={v['loss']:.3f}/{v['bpb']:.3f}" for k, v in res.items()))
            if tot["macro_loss"] < best["loss"]:
                best = dict(loss=tot["macro_loss"], bpb=tot["bpb"], step=step, tokens=tokens_seen)
                best_state = {k: v.detach().to("cpu", torch.bfloat16, copy=True) for k, v in model.export_state().items()}
                if args.export and time.time() - last_export > 90 and not last_step:
                    last_export = time.time()
                    exporter.write_model_dir(mdir, best_state, cfg, tok_path, nshards=args.shards, card=None)
                    publish()
                    log("exported best so far (step", step, ")")
            elif history and len(history) > 4 and all(h["heldout"]["macro_loss"] > best["loss"] + 0.02 for h in history[-4:]):
                log("early stop: held-out loss rose for 4 evaluations")
                break
            save_json("history.json", dict(meta=meta, history=history, best=best))
    log("training done", step, "steps", tokens_seen, "tokens; best", best)
    if best_state is None:  # no evaluation happened (a deadline before the first step)
        best_state = {k: v.detach().to("cpu", torch.bfloat16, copy=True) for k, v in model.export_state().items()}

    # ---- final: export best (bf16), reload it, evaluate in float32, samples, card, logits
    if args.export:
        exporter.write_model_dir(mdir, best_state, cfg, tok_path, nshards=args.shards, card=None)
        sd = exporter.read_model_dir(mdir)
    else:  # the same bf16-rounded tensors, without the files
        sd = best_state
    fmodel32 = MFAForCausalLM(cfg).to(dev)
    missing = fmodel32.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    log("reload", missing)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    res = evaluate(fmodel32, eval_streams, nbytes, dev, seq=seq, dtype=torch.float32)
    final = dict(per_source={k: dict(loss=v["loss"], bpb=v["bpb"], tokens=v["tokens"], bytes=v["bytes"]) for k, v in res.items()},
                 heldout_all_sources=summarize(res, src_names),
                 best_step=best.get("step"), tokens_at_best=best.get("tokens"),
                 steps=step, tokens_seen=tokens_seen, train_tokens=int(data.numel()),
                 train_seconds=time.time() - t_start)
    log("FINAL (exported bf16 weights, fp32 compute)", json.dumps(final))
    save_json("history.json", dict(meta=meta, history=history, best=best))
    save_json("final.json", dict(final, meta=meta, cut_short=cut_short, total_steps=total, batch=args.batch, seq=seq))
    if not args.export:
        log("all done", round(time.time() - T0, 1), "s")
        return
    samples = exporter.make_samples(fmodel32, tok, eos)
    cpu32 = fmodel32.to("cpu").float()
    for s in samples:
        log("SAMPLE", json.dumps(s))
    ref = exporter.make_reference_logits(cpu32, tok, mdir)
    with open(os.path.join(args.out, "bundled_logits.json"), "w") as f:
        json.dump(ref, f, separators=(",", ":"))
    sources_meta = None
    for cand in [os.path.join(os.path.dirname(args.corpus), "..", "text", "SOURCES.json"), "SOURCES.json"]:
        if os.path.exists(cand):
            with open(cand) as f:
                sources_meta = json.load(f)
            break
    if sources_meta is None and os.path.isfile(args.corpus):
        with tarfile.open(args.corpus, "r:*") as tf:
            for m in tf.getmembers():
                if m.name.endswith("SOURCES.json"):
                    sources_meta = json.load(tf.extractfile(m))
    # the card describes the bundled MFA-KR model; the replication's other kinds get none
    card = exporter.model_card(name, cfg, nparam, final, samples, sources_meta, history, vars(args)) if cfg.get("key_reuse") else None
    exporter.write_model_dir(mdir, best_state, cfg, tok_path, nshards=args.shards, card=card)
    hpath = os.path.join(args.work, "history.json")
    with open(hpath, "w") as f:
        json.dump(dict(history=history, final=final, samples=samples), f, indent=1)
    publish([hpath])
    log("all done", round(time.time() - T0, 1), "s")


if __name__ == "__main__":
    main()
