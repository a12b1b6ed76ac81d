/* cmd_bench_mask.c: `mfaserve bench mask`: the time to compute one token
 * mask, per token, on a real tokenizer (issue 14 item 3; as MaskBench
 * measures it: no model involved).
 *
 * For each schema of a JSON-lines file (tools/bench/mask/schemas.jsonl:
 * {"name", "strict", "schema", "instances": [text, ...]}) the schema is
 * compiled once (timed: "compile"); each instance text (the compact JSON
 * the grammar writes) is tokenized without BOS, and a matcher walks it:
 * per token, gr_matcher_mask (timed), a check that the token is allowed by
 * that mask, then gr_matcher_accept_token (timed apart); at the end one
 * more mask (timed too: the step where EOS is sampled), a check that EOS
 * is allowed and that the matcher is complete. Two passes:
 *  - fresh: a new gr_index per (schema, instance): every mask a state
 *    needs is computed, unless the same state recurs within the instance;
 *  - warm: one gr_index per schema for all its instances, as the server
 *    keeps compiled grammars and their index by schema text.
 * Reported per pass: mean, p50, p99, max of the per-token mask time (us),
 * masks computed vs served from the index's cache (gr_index_stats), and
 * the mean time of the computed ones.
 *
 * A token its mask does not allow, an instance the grammar rejects, a
 * missing EOS or an incomplete end is a bug (or a bad instance): each is
 * printed with the schema, instance and position, and the exit status is
 * 1 (also when a mask call fails: MFS_ENOMEM, MFS_ERANGE). Exit 2: bad flags
 * or input files. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "common.h"
#include "grammar.h"
#include "tokenizer.h"

typedef struct {
  double *v; /* samples, us */
  size_t n, cap;
} samples;

static int samples_add(samples *s, double x) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 1024;
    double *v = realloc(s->v, cap * sizeof *v);
    if (!v) return -1;
    s->v = v;
    s->cap = cap;
  }
  s->v[s->n++] = x;
  return 0;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct {
  double mean, p50, p99, max;
  size_t n;
} dist;

/* Nearest-rank percentiles; sorts s. */
static dist dist_of(samples *s) {
  dist d = {0};
  d.n = s->n;
  if (!s->n) return d;
  qsort(s->v, s->n, sizeof *s->v, cmp_d);
  double sum = 0;
  for (size_t i = 0; i < s->n; i++) sum += s->v[i];
  d.mean = sum / (double)s->n;
  d.p50 = s->v[(size_t)ceil(0.50 * (double)s->n) - 1];
  d.p99 = s->v[(size_t)ceil(0.99 * (double)s->n) - 1];
  d.max = s->v[s->n - 1];
  return d;
}

/* One pass's figures (fresh or warm), for a schema or for all. */
typedef struct {
  samples mask, computed, accept;
  int64_t n_computed, n_cached;
} pass_acc;

static void pass_free(pass_acc *p) {
  free(p->mask.v);
  free(p->computed.v);
  free(p->accept.v);
}

typedef struct {
  const tok_tokenizer *tok;
  const gr_vocab *voc;
  int V;
  int32_t eos;
  uint32_t *mask; /* [ceil(V/32)] */
  int bugs;
  int oom;    /* out of memory in the tool itself */
  int failed; /* a mask call failed (message printed) */
} bench;

static int bit(const uint32_t *m, int32_t t) { return (int)(m[t >> 5] >> (t & 31) & 1); }

static void print_bytes(FILE *f, const char *s, size_t n) {
  fputc('"', f);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c < 0x20 || c >= 0x7f) fprintf(f, "\\x%02x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

/* Walks one instance's tokens on a matcher of ix; adds samples to each of
 * the accumulators in acc[0..nacc) (the schema's and the total). */
static void pause_for(int ms) {
  if (ms > 0) nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000L}, NULL);
}

static void walk(bench *b, gr_index *ix, const char *name, int inst, const int32_t *ids, size_t n,
                 pass_acc **acc, int nacc, const char *pass) {
  gr_matcher m;
  gr_matcher_init(&m, ix);
  size_t off = 0; /* byte offset of the token in the instance text */
  for (size_t i = 0; i <= n; i++) {
    gr_index_stats s0, s1;
    gr_index_stats_get(ix, &s0);
    double t0 = mfs_now();
    int cnt = gr_matcher_mask(&m, b->mask);
    double t1 = mfs_now();
    gr_index_stats_get(ix, &s1);
    if (cnt < 0) { /* MFS_ENOMEM, or MFS_ERANGE: too many parse stacks at once */
      fprintf(stderr, "mfaserve bench mask: %s instance %d (%s): gr_matcher_mask at token %zu: %s\n", name, inst,
              pass, i, mfs_strerror(cnt));
      b->failed = 1;
      return;
    }
    double us = (t1 - t0) * 1e6;
    int computed = s1.masks_computed > s0.masks_computed;
    for (int a = 0; a < nacc; a++) {
      if (samples_add(&acc[a]->mask, us) || (computed && samples_add(&acc[a]->computed, us))) b->oom = 1;
      acc[a]->n_computed += s1.masks_computed - s0.masks_computed;
      acc[a]->n_cached += s1.masks_cached - s0.masks_cached;
    }
    if (i == n) { /* the end: EOS must be allowed, the match complete */
      if (b->eos >= 0 && !bit(b->mask, b->eos)) {
        fprintf(stderr, "BUG: %s instance %d (%s): EOS (id %d) not allowed at the end (%d tokens allowed)\n", name,
                inst, pass, b->eos, cnt);
        b->bugs++;
      }
      if (!gr_matcher_complete(&m)) {
        fprintf(stderr, "BUG: %s instance %d (%s): the matcher is not complete at the end\n", name, inst, pass);
        b->bugs++;
      }
      return;
    }
    size_t tl = 0;
    const char *tb = tok_token_bytes(b->tok, ids[i], &tl);
    if (!bit(b->mask, ids[i])) {
      fprintf(stderr, "BUG: %s instance %d (%s): token %zu (id %d, bytes ", name, inst, pass, i, ids[i]);
      print_bytes(stderr, tb ? tb : "", tb ? tl : 0);
      fprintf(stderr, ") at byte %zu is not allowed by its mask (%d tokens allowed)\n", off, cnt);
      b->bugs++;
      return;
    }
    t0 = mfs_now();
    int rc = gr_matcher_accept_token(&m, ids[i]);
    t1 = mfs_now();
    if (rc) {
      fprintf(stderr, "BUG: %s instance %d (%s): token %zu (id %d, bytes ", name, inst, pass, i, ids[i]);
      print_bytes(stderr, tb ? tb : "", tb ? tl : 0);
      fprintf(stderr, ") at byte %zu is allowed by its mask but gr_matcher_accept_token says %s\n", off,
              mfs_strerror(rc));
      b->bugs++;
      return;
    }
    for (int a = 0; a < nacc; a++)
      if (samples_add(&acc[a]->accept, (t1 - t0) * 1e6)) b->oom = 1;
    off += tl;
  }
}

typedef struct {
  char *name;
  int strict, n_inst;
  char *schema;          /* compact text (what is compiled) */
  char **texts;          /* [n_inst] */
  int32_t **ids;         /* [n_inst] tokens */
  size_t *n_ids;
  int rules, elems, classes;
  samples compile_us, index_us;
  pass_acc fresh, warm;
  int64_t states_warm;
  size_t bytes_warm;
} sch;

static void sch_free(sch *s) {
  free(s->name);
  free(s->schema);
  for (int i = 0; i < s->n_inst; i++) {
    free(s->texts[i]);
    free(s->ids[i]);
  }
  free(s->texts);
  free(s->ids);
  free(s->n_ids);
  free(s->compile_us.v);
  free(s->index_us.v);
  pass_free(&s->fresh);
  pass_free(&s->warm);
}

static int name_listed(const char *list, const char *name) {
  size_t n = strlen(name);
  for (const char *p = list; *p;) {
    const char *e = strchr(p, ',');
    size_t k = e ? (size_t)(e - p) : strlen(p);
    if (k == n && !strncmp(p, name, n)) return 1;
    if (!e) break;
    p = e + 1;
  }
  return 0;
}

/* Reads the schema file; 0, or 2 after printing why. */
static int load_schemas(const char *path, const char *only, const tok_tokenizer *tok, sch **out, int *nout) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "mfaserve bench mask: cannot open %s (run from the repository root or pass --schemas)\n", path);
    return 2;
  }
  sch *v = NULL;
  int n = 0, rc = 0, lineno = 0;
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  while (!rc && (len = getline(&line, &cap, f)) > 0) {
    lineno++;
    if (len <= 1) continue;
    cJSON *j = cJSON_ParseWithLength(line, (size_t)len);
    const char *name = j ? cJSON_GetStringValue(cJSON_GetObjectItem(j, "name")) : NULL;
    cJSON *schema = j ? cJSON_GetObjectItem(j, "schema") : NULL, *inst = j ? cJSON_GetObjectItem(j, "instances") : NULL;
    if (!name || !schema || !cJSON_IsArray(inst)) {
      fprintf(stderr, "mfaserve bench mask: %s:%d: expected {\"name\", \"schema\", \"instances\": [text...]}\n", path,
              lineno);
      rc = 2;
    } else if (!only || name_listed(only, name)) {
      sch *nv = realloc(v, (size_t)(n + 1) * sizeof *v);
      if (!nv) {
        rc = 1;
      } else {
        v = nv;
        sch *s = &v[n++];
        memset(s, 0, sizeof *s);
        s->name = strdup(name);
        s->strict = cJSON_IsTrue(cJSON_GetObjectItem(j, "strict"));
        s->schema = cJSON_PrintUnformatted(schema);
        int k = cJSON_GetArraySize(inst);
        s->texts = calloc((size_t)(k ? k : 1), sizeof *s->texts);
        s->ids = calloc((size_t)(k ? k : 1), sizeof *s->ids);
        s->n_ids = calloc((size_t)(k ? k : 1), sizeof *s->n_ids);
        if (!s->name || !s->schema || !s->texts || !s->ids || !s->n_ids) rc = 1;
        for (int i = 0; i < k && !rc; i++) {
          const char *t = cJSON_GetStringValue(cJSON_GetArrayItem(inst, i));
          if (!t) {
            fprintf(stderr, "mfaserve bench mask: %s:%d: instance %d is not a string (the exact text)\n", path,
                    lineno, i);
            rc = 2;
            break;
          }
          s->texts[i] = strdup(t);
          s->n_inst = i + 1;
          if (!s->texts[i] || tok_encode(tok, t, strlen(t), 0, &s->ids[i], &s->n_ids[i])) rc = 1;
          /* the tokens must spell the text: a mask walk follows their bytes */
          size_t off = 0, tl = strlen(t);
          for (size_t q = 0; !rc && q < s->n_ids[i]; q++) {
            size_t bl = 0;
            const char *bb = tok_token_bytes(tok, s->ids[i][q], &bl);
            if (!bb || off + bl > tl || memcmp(t + off, bb, bl)) {
              fprintf(stderr, "mfaserve bench mask: %s instance %d: the tokens do not spell the text (token %zu)\n",
                      name, i, q);
              rc = 2;
            }
            off += bl;
          }
          if (!rc && off != tl) {
            fprintf(stderr, "mfaserve bench mask: %s instance %d: the tokens spell %zu of %zu bytes\n", name, i, off,
                    tl);
            rc = 2;
          }
        }
      }
    }
    cJSON_Delete(j);
  }
  free(line);
  fclose(f);
  if (rc == 1) fprintf(stderr, "mfaserve bench mask: out of memory reading %s\n", path);
  if (!rc && !n) {
    fprintf(stderr, "mfaserve bench mask: no schemas in %s%s%s\n", path, only ? " named in --only " : "",
            only ? only : "");
    rc = 2;
  }
  *out = v;
  *nout = n;
  return rc;
}

static void print_dist_json(const char *key, samples *s) {
  dist d = dist_of(s);
  printf("\"%s\":{\"n\":%zu,\"mean_us\":%.3f,\"p50_us\":%.3f,\"p99_us\":%.3f,\"max_us\":%.3f}", key, d.n, d.mean,
         d.p50, d.p99, d.max);
}

static void print_pass_json(const char *key, pass_acc *p) {
  printf("\"%s\":{", key);
  print_dist_json("mask", &p->mask);
  printf(",");
  print_dist_json("computed", &p->computed);
  printf(",");
  print_dist_json("accept", &p->accept);
  printf(",\"masks_computed\":%lld,\"masks_cached\":%lld}", (long long)p->n_computed, (long long)p->n_cached);
}

static double median_of(samples *s) { return dist_of(s).p50; }

int cmd_bench_mask(int argc, char **argv) {
  const char *tokdir = cli_default_model(), *schemas = "tools/bench/mask/schemas.jsonl", *only = NULL;
  int reps = 1, json = 0, pause_ms = 0;
  cli_flag flags[] = {
      {"tokenizer", "MFASERVE_MODEL", CLI_STR, &tokdir,
       "folder with tokenizer.json (and tokenizer_config.json, for EOS): a model directory or "
       "tools/bench/mask/fetch_qwen3.sh's output"},
      {"schemas", NULL, CLI_STR, &schemas, "JSON lines: {\"name\", \"strict\", \"schema\", \"instances\": [text...]}"},
      {"only", NULL, CLI_STR, &only, "comma-separated schema names to run (default: all)"},
      {"reps", NULL, CLI_INT, &reps, "passes over the whole set (samples of all are pooled)"},
      {"pause-ms", NULL, CLI_INT, &pause_ms,
       "sleep this long after each instance's walk (untimed): keeps a run under a real-time class (chrt -f) inside the "
       "kernel's RT throttling budget"},
      {"json", NULL, CLI_BOOL, &json, "print one JSON object"},
  };
  int rc = cli_parse("bench mask",
                     "Time to compute one token mask per token of valid JSON instances of each schema (no model):\n"
                     "a fresh index per instance, and warm (one index per schema, as the server caches it).",
                     flags, sizeof flags / sizeof flags[0], argc, argv, NULL, NULL);
  if (rc) return rc == CLI_HELP ? 0 : 2;
  if (!tokdir || reps < 1 || pause_ms < 0) {
    fprintf(stderr, "mfaserve bench mask: pass --tokenizer DIR; --reps must be >= 1, --pause-ms >= 0\n");
    return 2;
  }
  tok_tokenizer *tok = NULL;
  char err[512];
  if ((rc = tok_new(tokdir, &tok, err, sizeof err))) {
    fprintf(stderr, "mfaserve bench mask: %s\n", err);
    return 2;
  }
  int V = tok_vocab_size(tok);
  const char **bp = calloc((size_t)V, sizeof *bp);
  uint32_t *lens = calloc((size_t)V, sizeof *lens);
  bench b = {.tok = tok, .V = V, .eos = tok_eos(tok)};
  b.mask = calloc(((size_t)V + 31) / 32, sizeof *b.mask);
  sch *S = NULL;
  int nS = 0, ret = 1;
  gr_vocab *voc = NULL;
  pass_acc all_fresh = {0}, all_warm = {0};
  samples all_compile = {0};
  if (!bp || !lens || !b.mask) goto oom;
  for (int32_t id = 0; id < V; id++) {
    size_t l = 0;
    bp[id] = tok_is_special(tok, id) ? NULL : tok_token_bytes(tok, id, &l);
    lens[id] = bp[id] ? (uint32_t)l : 0;
  }
  double tv0 = mfs_now();
  if (gr_vocab_new(V, bp, lens, &b.eos, b.eos >= 0, &voc)) goto oom;
  double vocab_ms = (mfs_now() - tv0) * 1e3;
  b.voc = voc;
  if (b.eos < 0) fprintf(stderr, "mfaserve bench mask: warning: the tokenizer has no EOS; the end is not checked for it\n");
  if ((rc = load_schemas(schemas, only, tok, &S, &nS))) {
    ret = rc;
    goto out;
  }
  size_t n_tokens = 0;
  int n_inst = 0;
  for (int si = 0; si < nS; si++) {
    n_inst += S[si].n_inst;
    for (int i = 0; i < S[si].n_inst; i++) n_tokens += S[si].n_ids[i];
  }
  if (!json)
    printf("bench mask: %s (%d ids, EOS %d), %d schemas, %d instances, %zu tokens, %d rep%s\n", tokdir, V, b.eos, nS,
           n_inst, n_tokens, reps, reps > 1 ? "s" : "");
  for (int r = 0; r < reps && !b.oom && !b.failed; r++)
    for (int si = 0; si < nS && !b.oom && !b.failed; si++) {
      sch *s = &S[si];
      gr_grammar *g = NULL;
      gr_error ge;
      memset(&ge, 0, sizeof ge);
      double t0 = mfs_now();
      rc = gr_compile_json_schema(s->schema, strlen(s->schema), s->strict ? GR_SCHEMA_STRICT_OBJECTS : 0, &g, &ge);
      double t1 = mfs_now();
      if (rc) {
        fprintf(stderr, "mfaserve bench mask: %s: the schema does not compile: %s (%s)\n", s->name, ge.msg,
                mfs_strerror(rc));
        ret = 2;
        goto out;
      }
      if (samples_add(&s->compile_us, (t1 - t0) * 1e6) || samples_add(&all_compile, (t1 - t0) * 1e6)) goto oom_g;
      gr_grammar_size(g, &s->rules, &s->elems, &s->classes);
      /* fresh: an index per instance */
      for (int i = 0; i < s->n_inst && !b.oom; i++) {
        gr_index *ix = NULL;
        t0 = mfs_now();
        if (gr_index_new(g, voc, &ix)) goto oom_g;
        t1 = mfs_now();
        if (samples_add(&s->index_us, (t1 - t0) * 1e6)) b.oom = 1;
        pass_acc *acc[2] = {&s->fresh, &all_fresh};
        walk(&b, ix, s->name, i, s->ids[i], s->n_ids[i], acc, 2, "fresh");
        pause_for(pause_ms);
        gr_index_free(ix);
      }
      /* warm: one index for the schema's instances */
      gr_index *ix = NULL;
      if (gr_index_new(g, voc, &ix)) goto oom_g;
      for (int i = 0; i < s->n_inst && !b.oom; i++) {
        pass_acc *acc[2] = {&s->warm, &all_warm};
        walk(&b, ix, s->name, i, s->ids[i], s->n_ids[i], acc, 2, "warm");
        pause_for(pause_ms);
      }
      gr_index_stats st;
      gr_index_stats_get(ix, &st);
      s->states_warm = st.states;
      s->bytes_warm = st.bytes;
      gr_index_free(ix);
      gr_grammar_unref(g);
      continue;
    oom_g:
      gr_grammar_unref(g);
      goto oom;
    }
  if (b.oom) goto oom;
  if (b.failed) {
    ret = 1;
    goto out;
  }
  if (json) {
    printf("{\"tokenizer\":\"%s\",\"vocab\":%d,\"eos\":%d,\"vocab_build_ms\":%.2f,\"schemas\":%d,\"instances\":%d,"
           "\"tokens\":%zu,\"reps\":%d,",
           tokdir, V, b.eos, vocab_ms, nS, n_inst, n_tokens, reps);
    print_pass_json("fresh", &all_fresh);
    printf(",");
    print_pass_json("warm", &all_warm);
    printf(",");
    print_dist_json("compile", &all_compile);
    printf(",\"bugs\":%d,\"per_schema\":[", b.bugs);
    for (int si = 0; si < nS; si++) {
      sch *s = &S[si];
      size_t nt = 0;
      for (int i = 0; i < s->n_inst; i++) nt += s->n_ids[i];
      printf("%s{\"name\":\"%s\",\"strict\":%s,\"instances\":%d,\"tokens\":%zu,\"rules\":%d,\"elems\":%d,"
             "\"classes\":%d,\"compile_us\":%.1f,\"index_new_us\":%.1f,\"warm_states\":%lld,\"warm_index_bytes\":%zu,",
             si ? "," : "", s->name, s->strict ? "true" : "false", s->n_inst, nt, s->rules, s->elems, s->classes,
             median_of(&s->compile_us), median_of(&s->index_us), (long long)s->states_warm, s->bytes_warm);
      print_pass_json("fresh", &s->fresh);
      printf(",");
      print_pass_json("warm", &s->warm);
      printf("}");
    }
    printf("]}\n");
  } else {
    printf("vocabulary trie built in %.1f ms\n\n", vocab_ms);
    printf("%-18s %4s %6s %9s | %-27s %9s | %-27s %9s\n", "schema", "inst", "tokens", "compile", "fresh mask us",
           "computed", "warm mask us", "computed");
    printf("%-18s %4s %6s %9s | %8s %8s %9s %9s | %8s %8s %9s %9s\n", "", "", "", "ms", "mean", "p99", "max", "/cached",
           "mean", "p99", "max", "/cached");
    for (int si = 0; si < nS; si++) {
      sch *s = &S[si];
      size_t nt = 0;
      for (int i = 0; i < s->n_inst; i++) nt += s->n_ids[i];
      double cm = median_of(&s->compile_us) / 1e3;
      dist f = dist_of(&s->fresh.mask), w = dist_of(&s->warm.mask);
      char fc[32], wc[32];
      snprintf(fc, sizeof fc, "%lld/%lld", (long long)s->fresh.n_computed, (long long)s->fresh.n_cached);
      snprintf(wc, sizeof wc, "%lld/%lld", (long long)s->warm.n_computed, (long long)s->warm.n_cached);
      printf("%-18s %4d %6zu %9.2f | %8.1f %8.1f %9.1f %9s | %8.1f %8.1f %9.1f %9s\n", s->name, s->n_inst, nt, cm,
             f.mean, f.p99, f.max, fc, w.mean, w.p99, w.max, wc);
    }
    for (int k = 0; k < 2; k++) {
      pass_acc *p = k ? &all_warm : &all_fresh;
      dist d = dist_of(&p->mask), c = dist_of(&p->computed), a = dist_of(&p->accept);
      printf("\n%s index: %zu masks: mean %.1f us, p50 %.1f, p99 %.1f, max %.1f; computed %lld (mean %.1f us, p99 "
             "%.1f), cached %lld; accept_token mean %.2f us",
             k ? "warm " : "fresh", d.n, d.mean, d.p50, d.p99, d.max, (long long)p->n_computed, c.mean, c.p99,
             (long long)p->n_cached, a.mean);
    }
    dist cd = dist_of(&all_compile);
    printf("\ncompile: mean %.2f ms, p50 %.2f, max %.2f per schema\n", cd.mean / 1e3, cd.p50 / 1e3, cd.max / 1e3);
    if (b.bugs) printf("%d BUGS (see stderr)\n", b.bugs);
  }
  ret = b.bugs ? 1 : 0;
  goto out;
oom:
  fprintf(stderr, "mfaserve bench mask: out of memory\n");
  ret = 1;
out:
  for (int si = 0; si < nS; si++) sch_free(&S[si]);
  free(S);
  pass_free(&all_fresh);
  pass_free(&all_warm);
  free(all_compile.v);
  gr_vocab_free(voc);
  free(bp);
  free(lens);
  free(b.mask);
  tok_free(tok);
  return ret;
}
