/* cmd_eval.c: `mfaserve eval`: held-out loss and bits per byte of text
 * files, computed as tools/train/train.py's load_corpus + encode_stream +
 * evaluate do:
 * - a file is read as Python's text mode reads it (UTF-8, "\r\n" and lone
 *   "\r" become "\n"; ill-formed UTF-8 is an error), split into documents
 *   on "\n<|endoftext|>\n", each stripped of leading and trailing "\n",
 *   empty ones dropped;
 * - the stream is [eos] doc1 [eos] doc2 [eos] ..., each document tokenized
 *   on its own with the model's tokenizer.json (special-token text becomes
 *   its id, as Hugging Face tokenizers' encode does; no BOS), eos being the
 *   id of <|endoftext|> (else the tokenizer's or the model's eos);
 * - every token after the first is scored, in non-overlapping windows of
 *   --ctx tokens: window s predicts ids[s+1..s+m] from ids[s..s+m-1] as a
 *   sequence of its own (empty cache); nats = -sum log_softmax (double);
 * - loss = nats / tokens, bpb = nats / ln 2 / bytes, bytes being the UTF-8
 *   bytes of the documents (separators and stripped newlines not counted).
 * Several windows (of every file) run as separate sequences of one engine
 * step; the log-softmax of their rows is spread over the --threads. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "common.h"
#include "session.h"
#include "tokenizer.h"

#define SEP "<|endoftext|>"

typedef struct ev_file {
  const char *path;
  int32_t *ids;     /* the stream */
  size_t n_ids;
  size_t n_pred;    /* tokens scored: n_ids - 1, or --max-tokens */
  uint64_t bytes;   /* UTF-8 bytes of the documents (of the scored part with --max-tokens) */
  int truncated;
  double nats;
  size_t done;      /* tokens scored so far */
} ev_file;

typedef struct ev_window {
  int file;
  size_t start; /* ids[start..start+len-1] in, ids[start+1..start+len] scored */
  int len;
} ev_window;

/* Reads a whole file. 0, or 2 after printing why. */
static int read_file(const char *path, char **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "mfaserve eval: cannot open %s: %s\n", path, strerror(errno));
    return 2;
  }
  size_t cap = 1 << 16, n = 0, r;
  char *b = malloc(cap + 1);
  while (b && (r = fread(b + n, 1, cap - n, f)) > 0) {
    n += r;
    if (n == cap) {
      char *nb = realloc(b, (cap *= 2) + 1);
      if (!nb) free(b);
      b = nb;
    }
  }
  int err = ferror(f) ? errno : 0;
  fclose(f);
  if (!b || err) {
    fprintf(stderr, "mfaserve eval: cannot read %s: %s\n", path, b ? strerror(err) : "out of memory");
    free(b);
    return b ? 2 : 1;
  }
  b[n] = 0;
  *out = b;
  *len = n;
  return 0;
}

/* Python's universal newlines, in place: "\r\n" and "\r" become "\n". */
static size_t universal_newlines(char *s, size_t n) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '\r') {
      s[o++] = '\n';
      if (i + 1 < n && s[i + 1] == '\n') i++;
    } else {
      s[o++] = s[i];
    }
  }
  return o;
}

/* Splits, tokenizes and builds the stream of one file. 0, 2 (bad input:
 * message printed) or 1. */
static int load_stream(ev_file *f, const tok_tokenizer *tk, int32_t eos, size_t max_tokens) {
  char *text;
  size_t len;
  int rc = read_file(f->path, &text, &len);
  if (rc) return rc;
  size_t ok = tok_utf8_valid_prefix(text, len);
  if (ok != len) {
    fprintf(stderr, "mfaserve eval: %s is not UTF-8 text: ill-formed byte at offset %zu\n", f->path, ok);
    free(text);
    return 2;
  }
  len = universal_newlines(text, len);
  text[len] = 0;
  static const char sep[] = "\n" SEP "\n";
  const size_t seplen = sizeof sep - 1;
  size_t cap = 4096, n = 0, ndocs = 0;
  int32_t *ids = malloc(cap * sizeof *ids);
  /* per document, for the bytes of a cut stream: its length and where its tokens end */
  size_t dcap = 64;
  size_t *dend = malloc(dcap * sizeof *dend); /* ids index of the eos after it */
  size_t *dlen = malloc(dcap * sizeof *dlen);
  if (!ids || !dend || !dlen) goto oom;
  ids[n++] = eos;
  f->bytes = 0;
  for (const char *p = text, *end = text + len; p <= end;) {
    const char *q = memmem(p, (size_t)(end - p), sep, seplen);
    const char *e = q ? q : end, *s = p;
    while (s < e && *s == '\n') s++;
    while (e > s && e[-1] == '\n') e--;
    if (e > s) {
      int32_t *di;
      size_t dn;
      if (tok_encode(tk, s, (size_t)(e - s), TOK_PARSE_SPECIAL, &di, &dn)) goto oom;
      if (n + dn + 1 > cap) {
        while (n + dn + 1 > cap) cap *= 2;
        int32_t *ni = realloc(ids, cap * sizeof *ids);
        if (!ni) {
          free(di);
          goto oom;
        }
        ids = ni;
      }
      memcpy(ids + n, di, dn * sizeof *ids);
      free(di);
      n += dn;
      ids[n++] = eos;
      if (ndocs == dcap) {
        dcap *= 2;
        size_t *a = realloc(dend, dcap * sizeof *dend);
        if (a) dend = a;
        size_t *c = realloc(dlen, dcap * sizeof *dlen);
        if (c) dlen = c;
        if (!a || !c) goto oom;
      }
      dlen[ndocs] = (size_t)(e - s);
      dend[ndocs++] = n - 1;
      f->bytes += (uint64_t)(e - s);
    }
    if (!q) break;
    p = q + seplen;
  }
  if (ndocs == 0) {
    fprintf(stderr, "mfaserve eval: %s has no text to score (%s)\n", f->path,
            len ? "only newlines and " SEP " separators" : "the file is empty");
    free(text), free(ids), free(dend), free(dlen);
    return 2;
  }
  f->ids = ids;
  f->n_ids = n;
  f->n_pred = n - 1;
  if (max_tokens > 0 && max_tokens < f->n_pred) {
    /* Scored: ids[1..max_tokens]. Bytes: the documents wholly inside, and
     * the decoded length of the part of the cut document's tokens that is
     * scored (a character split by the cut counts as U+FFFD's 3 bytes). */
    f->n_pred = max_tokens;
    f->truncated = 1;
    f->bytes = 0;
    size_t first = 1; /* ids index of the current document's first token */
    for (size_t d = 0; d < ndocs; d++) {
      if (dend[d] <= max_tokens) {
        f->bytes += dlen[d];
      } else {
        if (max_tokens >= first) {
          char *out;
          size_t ol;
          if (tok_decode(tk, ids + first, max_tokens - first + 1, 0, &out, &ol)) goto oom;
          f->bytes += MFS_MIN(ol, dlen[d]);
          free(out);
        }
        break;
      }
      first = dend[d] + 1;
    }
  }
  free(text), free(dend), free(dlen);
  return 0;
oom:
  fprintf(stderr, "mfaserve eval: out of memory tokenizing %s\n", f->path);
  free(text), free(ids), free(dend), free(dlen);
  return 1;
}

/* -log_softmax(row)[target] in double, over rows [r0, r1) of a step */
typedef struct ev_job {
  const float *logits;
  const int32_t *targets;
  double *nll;
  int V, r0, r1;
} ev_job;

static void *nll_rows(void *arg) {
  ev_job *j = arg;
  for (int r = j->r0; r < j->r1; r++) {
    const float *z = j->logits + (size_t)r * j->V;
    float mx = -INFINITY;
    for (int i = 0; i < j->V; i++) mx = z[i] > mx ? z[i] : mx;
    double sum = 0;
    for (int i = 0; i < j->V; i++) sum += exp((double)z[i] - (double)mx);
    j->nll[r] = -((double)z[j->targets[r]] - (double)mx - log(sum));
  }
  return NULL;
}

static void nll_parallel(const float *logits, const int32_t *targets, double *nll, int rows, int V, int nth) {
  enum { MAXT = 256 };
  if (nth > MAXT) nth = MAXT;
  if (nth > rows) nth = rows;
  ev_job jobs[MAXT];
  pthread_t th[MAXT];
  int started[MAXT] = {0};
  for (int t = 0; t < nth; t++) {
    jobs[t] = (ev_job){logits, targets, nll, V, (int)((int64_t)rows * t / nth), (int)((int64_t)rows * (t + 1) / nth)};
    if (t > 0) started[t] = pthread_create(&th[t], NULL, nll_rows, &jobs[t]) == 0;
  }
  nll_rows(&jobs[0]);
  for (int t = 1; t < nth; t++) {
    if (started[t]) pthread_join(th[t], NULL);
    else nll_rows(&jobs[t]); /* no thread: do it here */
  }
}

static void json_str(const char *s) {
  putchar('"');
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') printf("\\%c", ch);
    else if (ch < 0x20) printf("\\u%04x", ch);
    else putchar(ch);
  }
  putchar('"');
}

/* On a terminal a line rewritten every 0.5 s; else a line every 30 s. */
static void progress(size_t done, size_t total, double t0, int final) {
  static double last;
  double now = mfs_now();
  int tty = isatty(2);
  if (!final && (done == total || now - (last > t0 ? last : t0) < (tty ? 0.5 : 30))) return;
  last = now;
  double el = now - t0, rate = el > 0 ? done / el : 0;
  fprintf(stderr, "%seval: %zu/%zu tokens (%.1f%%), %.0f tok/s, %.0f s elapsed, ~%.0f s left%s",
          tty ? "\r" : "", done, total, total ? 100.0 * done / total : 100.0, rate, el,
          rate > 0 ? (total - done) / rate : 0.0, tty && !final ? "   " : "\n");
}

int cmd_eval(int argc, char **argv) {
  cli_session_opts o = {0};
  o.block_size = 16;
  const char *kv = "f16";
  int ctx = 1024, max_tokens = 0, json = 0, batch = 0;
  cli_flag flags[] = {
      {"model", "MFASERVE_MODEL", CLI_STR, &o.model, "model directory (HF layout); required"},
      {"ctx", NULL, CLI_INT, &ctx, "tokens per window (each window is a sequence of its own)"},
      {"threads", "MFASERVE_THREADS", CLI_INT, &o.threads, "worker threads (0: all cores)"},
      {"kv-cache-dtype", "MFASERVE_KV_CACHE_DTYPE", CLI_STR, &kv, "KV-cache storage (as serve's)"},
      {"block-size", "MFASERVE_BLOCK_SIZE", CLI_INT, &o.block_size, "KV-cache block size in tokens"},
      {"max-tokens", NULL, CLI_INT, &max_tokens, "score only the first N tokens of each file's stream (0: all)"},
      {"batch", NULL, CLI_INT, &batch, "windows per engine step (0: as many as make ~1024 tokens)"},
      {"json", NULL, CLI_BOOL, &json, "print one JSON object"},
      CLI_ISA_FLAG(o.isa),
      CLI_MMAP_FLAG(o.mmap),
      CLI_QUANT_FLAG(o.quantize),
  };
  char **pos = calloc((size_t)argc + 1, sizeof *pos);
  int npos = 0;
  if (!pos) return 1;
  int rc = cli_parse("eval",
                     "mfaserve eval --model DIR FILE...\n"
                     "Held-out loss and bits per byte of text files, as tools/train/train.py\n"
                     "evaluates: documents separated by \"\\n" SEP "\\n\", the stream\n"
                     "[eos] doc [eos] doc ..., every token after the first scored in\n"
                     "non-overlapping windows of --ctx tokens.",
                     flags, sizeof flags / sizeof flags[0], argc, argv, &pos, &npos);
  if (rc) {
    free(pos);
    return rc == CLI_HELP ? 0 : 2;
  }
  const char *bad = NULL;
  if (!o.model || !*o.model) bad = "no model given: pass --model DIR or set MFASERVE_MODEL";
  else if (npos < 1) bad = "no text files given: pass one or more as arguments";
  else if (ctx < 1) bad = "--ctx must be at least 1 token";
  else if (max_tokens < 0) bad = "--max-tokens must be 0 (all) or more";
  else if (batch < 0) bad = "--batch must be 0 (auto) or more";
  else if (o.block_size < 1) bad = "--block-size must be at least 1";
  if (bad) {
    fprintf(stderr, "mfaserve eval: %s\n", bad);
    free(pos);
    return 2;
  }
  if (cli_parse_kv_dtype(kv, &o.kv_dtype)) {
    fprintf(stderr, "mfaserve eval: --kv-cache-dtype '%s' is not a KV-cache dtype this build knows\n", kv);
    free(pos);
    return 2;
  }
  for (int i = 0; i < npos; i++)
    if (access(pos[i], R_OK) != 0) { /* a typo fails before anything is tokenized */
      fprintf(stderr, "mfaserve eval: cannot read %s: %s\n", pos[i], strerror(errno));
      free(pos);
      return 2;
    }

  tok_tokenizer *tk = NULL;
  char err[1024];
  if ((rc = tok_new(o.model, &tk, err, sizeof err))) {
    fprintf(stderr, "mfaserve eval: cannot load the tokenizer: %s\n", err);
    free(pos);
    return rc == MFS_ENOMEM ? 1 : 2;
  }
  ev_file *files = calloc((size_t)npos, sizeof *files);
  cli_session s;
  memset(&s, 0, sizeof s);
  float *logits = NULL;
  int32_t *toks = NULL, *targets = NULL;
  double *nll = NULL;
  ev_window *win = NULL;
  kvc_seq **seqs = NULL;
  eng_seq_step *steps = NULL;
  int status = 0;
  if (!files) {
    status = 1;
    goto out;
  }
  int32_t eos = tok_token_id(tk, SEP);
  if (eos < 0) eos = tok_eos(tk);
  if (eos < 0) {
    fprintf(stderr, "mfaserve eval: the tokenizer has no %s token and no eos_token: no document separator\n", SEP);
    status = 2;
    goto out;
  }
  /* the texts before the model: a bad file fails at once */
  size_t total = 0, nwin = 0;
  for (int i = 0; i < npos; i++) {
    files[i].path = pos[i];
    if ((status = load_stream(&files[i], tk, eos, (size_t)max_tokens))) goto out;
    total += files[i].n_pred;
    nwin += (files[i].n_pred + (size_t)ctx - 1) / (size_t)ctx;
  }

  o.quiet = json;
  o.max_ctx = ctx;
  o.chunk = ctx;
  if ((status = cli_session_open(&s, &o))) goto out;
  int V = s.info->vocab;
  if (ctx > s.info->max_pos) {
    fprintf(stderr, "mfaserve eval: --ctx %d exceeds the model's context (max_position_embeddings %d)\n", ctx,
            s.info->max_pos);
    status = 2;
    goto out;
  }
  for (int i = 0; i < npos; i++)
    for (size_t k = 0; k < files[i].n_ids; k++)
      if (files[i].ids[k] < 0 || files[i].ids[k] >= V) {
        fprintf(stderr, "mfaserve eval: %s: token id %d is outside the model's vocabulary (0..%d)\n", pos[i],
                files[i].ids[k], V - 1);
        status = 2;
        goto out;
      }
  win = malloc(nwin * sizeof *win);
  if (!win) {
    status = 1;
    goto out;
  }
  nwin = 0;
  for (int i = 0; i < npos; i++)
    for (size_t st = 0; st < files[i].n_pred; st += (size_t)ctx)
      win[nwin++] = (ev_window){i, st, (int)MFS_MIN((size_t)ctx, files[i].n_pred - st)};

  /* windows per step: ~1024 tokens (fastest measured on the bundled model,
   * 2 cores: ctx 128 x 8 3.6k tok/s vs x1 3.1k, x32 3.2k; ctx 1024 x1 2.7k,
   * x2 2.65k, x4 2.6k); logits at most ~1 GiB */
  int W = batch > 0 ? batch : MFS_MAX(1, 1024 / ctx);
  size_t row_bytes = (size_t)V * sizeof(float);
  while (W > 1 && (size_t)W * ctx * row_bytes > ((size_t)1 << 30)) W--;
  if ((size_t)W > nwin) W = (int)nwin;
  size_t T = (size_t)W * ctx;

  /* the session's context and pool are for one sequence: make ours */
  eng_ctx_free(s.c);
  s.c = NULL;
  kvc_seq_free(s.kv, s.seq);
  s.seq = NULL;
  kvc_pool_free(s.kv);
  s.kv = NULL;
  eng_ctx_opts eo = {o.threads, (int)T, W, ctx};
  if ((rc = eng_ctx_new(&s.c, s.m, &eo))) {
    fprintf(stderr, "mfaserve eval: cannot create the engine context for %d windows of %d: %s\n", W, ctx,
            mfs_strerror(rc));
    status = 1;
    goto out;
  }
  kvc_geom g;
  eng_model_kv_geom(s.m, o.block_size, o.kv_dtype, &g);
  uint64_t blocks = (uint64_t)W * ((uint64_t)(ctx + o.block_size - 1) / o.block_size + 1);
  if ((rc = kvc_pool_new(&s.kv, &g, blocks * kvc_block_bytes(&g)))) {
    fprintf(stderr, "mfaserve eval: cannot create the KV pool: %s\n", mfs_strerror(rc));
    status = 1;
    goto out;
  }
  logits = malloc(T * row_bytes);
  toks = malloc(T * sizeof *toks);
  targets = malloc(T * sizeof *targets);
  nll = malloc(T * sizeof *nll);
  seqs = calloc((size_t)W, sizeof *seqs);
  steps = calloc((size_t)W, sizeof *steps);
  if (!logits || !toks || !targets || !nll || !seqs || !steps) {
    fprintf(stderr, "mfaserve eval: out of memory for %d windows of %d tokens\n", W, ctx);
    status = 1;
    goto out;
  }
  int nth = eng_ctx_threads(s.c);
  if (!json)
    fprintf(stderr, "eval: %zu tokens in %zu windows of at most %d, %d per step, %d threads, KV %s\n", total, nwin,
            ctx, W, nth, kv);

  double t0 = mfs_now();
  size_t done = 0;
  for (size_t w0 = 0; w0 < nwin; w0 += (size_t)W) {
    int nw = (int)MFS_MIN((size_t)W, nwin - w0);
    int rows = 0;
    for (int i = 0; i < nw; i++) {
      const ev_window *w = &win[w0 + i];
      const int32_t *ids = files[w->file].ids + w->start;
      if ((rc = kvc_seq_new(s.kv, &seqs[i])) || (rc = kvc_seq_reserve(s.kv, seqs[i], w->len))) break;
      int nb;
      steps[i] = (eng_seq_step){0, w->len, kvc_seq_blocks(seqs[i], &nb), ENG_LOGITS_ALL};
      memcpy(toks + rows, ids, (size_t)w->len * sizeof *toks);
      memcpy(targets + rows, ids + 1, (size_t)w->len * sizeof *targets);
      rows += w->len;
    }
    if (!rc) {
      eng_batch b = {nw, steps, toks, s.kv, logits, NULL};
      rc = eng_forward(s.c, &b);
    }
    for (int i = 0; i < nw; i++) {
      kvc_seq_free(s.kv, seqs[i]);
      seqs[i] = NULL;
    }
    if (rc) {
      fprintf(stderr, "mfaserve eval: engine step failed: %s\n", rc > 0 ? "KV pool full" : mfs_strerror(rc));
      status = 1;
      goto out;
    }
    nll_parallel(logits, targets, nll, rows, V, nth);
    rows = 0;
    for (int i = 0; i < nw; i++) {
      const ev_window *w = &win[w0 + i];
      double sum = 0;
      for (int r = 0; r < w->len; r++) sum += nll[rows + r];
      rows += w->len;
      if (!isfinite(sum)) {
        fprintf(stderr, "mfaserve eval: %s: non-finite loss in the window at token %zu (the model's logits "
                        "overflow)\n", files[w->file].path, w->start);
        status = 1;
        goto out;
      }
      files[w->file].nats += sum;
      files[w->file].done += (size_t)w->len;
    }
    done += (size_t)rows;
    if (!json) progress(done, total, t0, 0);
  }
  double secs = mfs_now() - t0;
  if (!json) progress(done, total, t0, 1);

  double tn = 0, macro_loss = 0, macro_bpb = 0;
  size_t tt = 0;
  uint64_t tb = 0;
  for (int i = 0; i < npos; i++) {
    ev_file *f = &files[i];
    tn += f->nats;
    tt += f->n_pred;
    tb += f->bytes;
    macro_loss += f->nats / f->n_pred;
    macro_bpb += f->nats / M_LN2 / (double)f->bytes;
  }
  if (json) {
    printf("{\"model\":");
    json_str(o.model);
    printf(",\"ctx\":%d,\"kv_cache_dtype\":", ctx);
    json_str(kv);
    printf(",\"max_tokens\":%d,\"files\":[", max_tokens);
    for (int i = 0; i < npos; i++) {
      ev_file *f = &files[i];
      printf("%s{\"name\":", i ? "," : "");
      json_str(f->path);
      printf(",\"tokens\":%zu,\"nats\":%.17g,\"loss\":%.17g,\"bytes\":%llu,\"bpb\":%.17g,\"truncated\":%s}",
             f->n_pred, f->nats, f->nats / f->n_pred, (unsigned long long)f->bytes,
             f->nats / M_LN2 / (double)f->bytes, f->truncated ? "true" : "false");
    }
    printf("],\"total\":{\"tokens\":%zu,\"nats\":%.17g,\"loss\":%.17g,\"bytes\":%llu,\"bpb\":%.17g,"
           "\"macro_loss\":%.17g,\"macro_bpb\":%.17g},\"seconds\":%.3f,\"tokens_per_second\":%.1f}\n",
           tt, tn, tn / tt, (unsigned long long)tb, tn / M_LN2 / (double)tb, macro_loss / npos, macro_bpb / npos,
           secs, secs > 0 ? tt / secs : 0.0);
  } else {
    printf("%-40s %10s %12s %8s %7s\n", "file", "tokens", "bytes", "loss", "bpb");
    for (int i = 0; i < npos; i++) {
      ev_file *f = &files[i];
      printf("%-40s %10zu %12llu %8.4f %7.4f%s\n", f->path, f->n_pred, (unsigned long long)f->bytes,
             f->nats / f->n_pred, f->nats / M_LN2 / (double)f->bytes, f->truncated ? "  (cut at --max-tokens)" : "");
    }
    if (npos > 1)
      printf("%-40s %10zu %12llu %8.4f %7.4f   (mean of files: loss %.4f, bpb %.4f)\n", "pooled", tt,
             (unsigned long long)tb, tn / tt, tn / M_LN2 / (double)tb, macro_loss / npos, macro_bpb / npos);
  }

out:
  if (files)
    for (int i = 0; i < npos; i++) free(files[i].ids);
  free(files);
  free(win);
  free(logits);
  free(toks);
  free(targets);
  free(nll);
  free(seqs);
  free(steps);
  cli_session_close(&s);
  tok_free(tk);
  free(pos);
  return status;
}
