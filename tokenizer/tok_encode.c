/* tok_encode.c: text -> ids, the Hugging Face pipeline in its order:
 * sanitize UTF-8, split out added tokens (longest match first), normalize
 * each remaining segment, pre-tokenize it into pieces, BPE each piece.
 *
 * All scratch memory lives in one per-call `work` struct, grown by doubling
 * and freed at the end of the call; the tokenizer itself is only read, so
 * any number of threads may encode at once. BPE merges by rank with a
 * binary heap (rank, then leftmost position, as HF does), so a long piece
 * costs O(n log n). A per-call word cache skips repeated pieces. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "common.h"
#include "tok_internal.h"

typedef struct span {
  size_t off, len;
} span;

typedef struct event {
  size_t s, e;
  int match;
} event;

typedef struct sym {
  int32_t id, prev, next; /* next -1: last; id -1: dead */
} sym;

typedef struct hent {
  int32_t rank, pos, right, lid, rid, nid;
} hent;

typedef struct cache_ent {
  uint64_t hash;
  uint32_t koff, klen; /* key bytes in cache_keys */
  uint32_t ioff, ilen; /* ids in cache_ids */
} cache_ent;

#define CACHE_SLOTS 4096 /* per call; pieces longer than CACHE_MAXKEY skip it */
#define CACHE_MAXKEY 64

typedef struct work {
  const tok_tokenizer *t;
  char *buf[2];
  size_t cap[2];
  span *sp[2];
  size_t nsp[2], capsp[2];
  event *ev;
  size_t nev, capev;
  sym *syms;
  size_t capsyms;
  hent *heap;
  size_t nheap, capheap;
  int32_t *ids;
  size_t nids, capids;
  pcre2_match_data *md;
  pcre2_match_context *mctx;
  pcre2_jit_stack *jstack;
  int oom;
  /* word cache */
  cache_ent *cache;
  char *ckeys;
  size_t nckeys, capckeys;
  int32_t *cids;
  size_t ncids, capcids;
} work;

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return 0;
  size_t c = *cap ? *cap : 64;
  while (c < need) c *= 2;
  void *np = realloc(*p, c * elem);
  if (!np) return MFS_ENOMEM;
  *p = np;
  *cap = c;
  return 0;
}

static void push_id(work *w, int32_t id) {
  if (w->nids == w->capids && grow((void **)&w->ids, &w->capids, w->nids + 1, sizeof *w->ids)) {
    w->oom = 1;
    return;
  }
  w->ids[w->nids++] = id;
}

/* ---- UTF-8 sanitizing ---- */

/* Copies s into a fresh buffer with U+FFFD for each maximal invalid subpart. */
static char *sanitize(const char *s, size_t n, size_t *outlen) {
  char *o = malloc(n * 3 + 1);
  if (!o) return NULL;
  size_t i = 0, k = 0, bad;
  while (i < n) {
    int c = tok_utf8_char((const unsigned char *)s + i, n - i, &bad);
    if (c > 0) {
      memcpy(o + k, s + i, (size_t)c);
      k += (size_t)c;
      i += (size_t)c;
    } else {
      memcpy(o + k, "\xEF\xBF\xBD", 3);
      k += 3;
      i += bad;
    }
  }
  *outlen = k;
  return o;
}

static size_t char_len(const char *s, size_t n) {
  unsigned c = (unsigned char)s[0];
  size_t l = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  return l > n ? n : l;
}

/* ---- normalizers: buf[0] -> buf[1], then swapped ---- */

static int normalize(work *w, size_t *len) {
  const tok_tokenizer *t = w->t;
  for (int i = 0; i < t->nnorms; i++) {
    const tok_norm *nm = &t->norms[i];
    size_t n = *len, k = 0;
    const char *src = w->buf[0];
    if (nm->kind == NORM_NFC) {
      size_t j = 0;
      while (j < n && !(src[j] & 0x80)) j++;
      if (j == n) continue; /* ASCII is already NFC */
      utf8proc_uint8_t *dst = NULL;
      utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)src, (utf8proc_ssize_t)n, &dst,
                                        UTF8PROC_STABLE | UTF8PROC_COMPOSE);
      if (r < 0) {
        if (r == UTF8PROC_ERROR_NOMEM) return MFS_ENOMEM;
        continue; /* cannot happen on sanitized input; keep the text as is */
      }
      if (grow((void **)&w->buf[1], &w->cap[1], (size_t)r + 1, 1)) {
        free(dst);
        return MFS_ENOMEM;
      }
      memcpy(w->buf[1], dst, (size_t)r);
      free(dst);
      k = (size_t)r;
    } else if (nm->kind == NORM_PREPEND) {
      if (!n) continue;
      if (grow((void **)&w->buf[1], &w->cap[1], n + nm->alen + 1, 1)) return MFS_ENOMEM;
      memcpy(w->buf[1], nm->a, nm->alen);
      memcpy(w->buf[1] + nm->alen, src, n);
      k = n + nm->alen;
    } else { /* replace */
      size_t most = nm->blen > nm->alen ? n / nm->alen * nm->blen + n : n;
      if (grow((void **)&w->buf[1], &w->cap[1], most + 1, 1)) return MFS_ENOMEM;
      src = w->buf[0];
      for (size_t j = 0; j < n;) {
        if (j + nm->alen <= n && !memcmp(src + j, nm->a, nm->alen)) {
          memcpy(w->buf[1] + k, nm->b, nm->blen);
          k += nm->blen;
          j += nm->alen;
        } else {
          w->buf[1][k++] = src[j++];
        }
      }
    }
    char *tb = w->buf[0];
    w->buf[0] = w->buf[1];
    w->buf[1] = tb;
    size_t tc = w->cap[0];
    w->cap[0] = w->cap[1];
    w->cap[1] = tc;
    *len = k;
  }
  return 0;
}

/* ---- pre-tokenizers: spans over buf[0] ---- */

static int add_event(work *w, size_t s, size_t e, int m) {
  if (grow((void **)&w->ev, &w->capev, w->nev + 1, sizeof *w->ev)) return MFS_ENOMEM;
  w->ev[w->nev++] = (event){s, e, m};
  return 0;
}

static int regex_events(work *w, const pcre2_code *re, const char *s, size_t n) {
  size_t pos = 0, prev = 0;
  while (pos <= n) {
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, w->md, w->mctx);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !w->mctx) {
      w->mctx = pcre2_match_context_create(NULL);
      w->jstack = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, NULL);
      if (!w->mctx || !w->jstack) return MFS_ENOMEM;
      pcre2_jit_stack_assign(w->mctx, NULL, w->jstack);
      continue;
    }
    if (rc < 0) break; /* no match, or a limit: the rest is one gap */
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
    size_t ms = ov[0], me = ov[1];
    if (me <= ms) { /* empty matches split nothing */
      if (ms >= n) break;
      pos = ms + char_len(s + ms, n - ms);
      continue;
    }
    if (ms > prev && add_event(w, prev, ms, 0)) return MFS_ENOMEM;
    if (add_event(w, ms, me, 1)) return MFS_ENOMEM;
    prev = pos = me;
  }
  if (prev < n && add_event(w, prev, n, 0)) return MFS_ENOMEM;
  return 0;
}

static int digit_events(work *w, const char *s, size_t n) {
  size_t prev = 0, i = 0;
  while (i < n) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
    if (l <= 0) l = 1, cp = -1;
    utf8proc_category_t c = cp < 0 ? UTF8PROC_CATEGORY_CN : utf8proc_category(cp);
    if (c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO) {
      if (prev < i && add_event(w, prev, i, 0)) return MFS_ENOMEM;
      if (add_event(w, i, i + (size_t)l, 1)) return MFS_ENOMEM;
      prev = i + (size_t)l;
    }
    i += (size_t)l;
  }
  if (prev < n && add_event(w, prev, n, 0)) return MFS_ENOMEM;
  return 0;
}

/* HF SplitDelimiterBehavior over w->ev (offsets relative to base); appends
 * the resulting non-empty spans to sp[1]. */
static int apply_behavior(work *w, tok_split_behavior b, int invert, size_t base) {
  event *ev = w->ev;
  size_t n = w->nev, k = 0;
  if (invert)
    for (size_t i = 0; i < n; i++) ev[i].match = !ev[i].match;
  int prevm = 0;
  switch (b) {
  case SPLIT_ISOLATED: k = n; break;
  case SPLIT_REMOVED:
    for (size_t i = 0; i < n; i++)
      if (!ev[i].match) ev[k++] = ev[i];
    break;
  case SPLIT_CONTIGUOUS:
    for (size_t i = 0; i < n; i++) {
      if (ev[i].match == prevm && k) ev[k - 1].e = ev[i].e;
      else ev[k++] = ev[i];
      prevm = ev[i].match;
    }
    break;
  case SPLIT_PREV:
    for (size_t i = 0; i < n; i++) {
      if (ev[i].match && !prevm && k) ev[k - 1].e = ev[i].e;
      else ev[k++] = ev[i];
      prevm = ev[i].match;
    }
    break;
  case SPLIT_NEXT: { /* walk backwards, then the kept ones are reversed */
    size_t w2 = n;
    for (size_t i = n; i-- > 0;) {
      if (ev[i].match && !prevm && w2 < n) ev[w2].s = ev[i].s;
      else ev[--w2] = ev[i];
      prevm = ev[i].match;
    }
    memmove(ev, ev + w2, (n - w2) * sizeof *ev);
    k = n - w2;
    break;
  }
  }
  for (size_t i = 0; i < k; i++) {
    if (ev[i].e <= ev[i].s) continue;
    if (grow((void **)&w->sp[1], &w->capsp[1], w->nsp[1] + 1, sizeof(span))) return MFS_ENOMEM;
    w->sp[1][w->nsp[1]++] = (span){base + ev[i].s, ev[i].e - ev[i].s};
  }
  return 0;
}

static void swap_spans(work *w) {
  span *t = w->sp[0];
  w->sp[0] = w->sp[1];
  w->sp[1] = t;
  size_t c = w->capsp[0];
  w->capsp[0] = w->capsp[1];
  w->capsp[1] = c;
  w->nsp[0] = w->nsp[1];
  w->nsp[1] = 0;
}

static int pretokenize(work *w, size_t len) {
  const tok_tokenizer *t = w->t;
  w->nsp[0] = w->nsp[1] = 0;
  if (!len) return 0;
  if (grow((void **)&w->sp[0], &w->capsp[0], 1, sizeof(span))) return MFS_ENOMEM;
  w->sp[0][w->nsp[0]++] = (span){0, len};
  for (int p = 0; p < t->npres; p++) {
    const tok_pre *pr = &t->pres[p];
    if (pr->kind == PRE_BYTELEVEL && pr->add_prefix_space) {
      /* rebuild the buffer with " " before every piece lacking one */
      size_t need = 0;
      for (size_t i = 0; i < w->nsp[0]; i++) need += w->sp[0][i].len + 1;
      if (grow((void **)&w->buf[1], &w->cap[1], need + 1, 1)) return MFS_ENOMEM;
      size_t k = 0;
      for (size_t i = 0; i < w->nsp[0]; i++) {
        span *s = &w->sp[0][i];
        size_t start = k;
        if (w->buf[0][s->off] != ' ') w->buf[1][k++] = ' ';
        memcpy(w->buf[1] + k, w->buf[0] + s->off, s->len);
        k += s->len;
        *s = (span){start, k - start};
      }
      char *tb = w->buf[0];
      w->buf[0] = w->buf[1];
      w->buf[1] = tb;
      size_t tc = w->cap[0];
      w->cap[0] = w->cap[1];
      w->cap[1] = tc;
    }
    if (pr->kind == PRE_BYTELEVEL && !pr->re) continue;
    for (size_t i = 0; i < w->nsp[0]; i++) {
      span s = w->sp[0][i];
      w->nev = 0;
      int rc = pr->kind == PRE_DIGITS ? digit_events(w, w->buf[0] + s.off, s.len)
                                      : regex_events(w, pr->re, w->buf[0] + s.off, s.len);
      if (rc) return rc;
      tok_split_behavior b = pr->kind == PRE_DIGITS
                                 ? (pr->individual ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS)
                                 : pr->behavior;
      if ((rc = apply_behavior(w, b, pr->invert, s.off))) return rc;
    }
    swap_spans(w);
  }
  return 0;
}

/* ---- BPE ---- */

static int hless(const hent *a, const hent *b) {
  return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(work *w, hent e) {
  if (grow((void **)&w->heap, &w->capheap, w->nheap + 1, sizeof e)) {
    w->oom = 1;
    return;
  }
  size_t i = w->nheap++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!hless(&e, &w->heap[p])) break;
    w->heap[i] = w->heap[p];
    i = p;
  }
  w->heap[i] = e;
}

static hent heap_pop(work *w) {
  hent top = w->heap[0], last = w->heap[--w->nheap];
  size_t i = 0, n = w->nheap;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && hless(&w->heap[c + 1], &w->heap[c])) c++;
    if (!hless(&w->heap[c], &last)) break;
    w->heap[i] = w->heap[c];
    i = c;
  }
  if (n) w->heap[i] = last;
  return top;
}

static void try_pair(work *w, int32_t l) {
  sym *S = w->syms;
  int32_t r = S[l].next;
  if (r < 0) return;
  const tok_merge_slot *m = tok_mmap_get(&w->t->merges, S[l].id, S[r].id);
  if (m) heap_push(w, (hent){m->rank, l, r, S[l].id, S[r].id, m->id});
}

static void add_sym(work *w, size_t *n, int32_t id) {
  if (grow((void **)&w->syms, &w->capsyms, *n + 1, sizeof(sym))) {
    w->oom = 1;
    return;
  }
  w->syms[*n] = (sym){id, (int32_t)*n - 1, (int32_t)*n + 1};
  (*n)++;
}

static void bpe_word(work *w, const char *s, size_t n) {
  const tok_tokenizer *t = w->t;
  if (t->byte_level && n == 1 && t->unit_ids[(unsigned char)s[0]] >= 0) {
    push_id(w, t->unit_ids[(unsigned char)s[0]]);
    return;
  }
  if (t->ignore_merges) {
    int32_t id = tok_smap_get(&t->enc, s, n);
    if (id >= 0) {
      push_id(w, id);
      return;
    }
  }
  size_t ns = 0;
  int last_unk = 0;
  for (size_t i = 0; i < n;) {
    size_t ul = t->byte_level ? 1 : char_len(s + i, n - i);
    int32_t id = ul == 1 ? t->unit_ids[(unsigned char)s[i]] : tok_smap_get(&t->enc, s + i, ul);
    if (id >= 0) {
      add_sym(w, &ns, id);
      last_unk = 0;
    } else {
      int all = t->byte_fallback;
      for (size_t j = 0; all && j < ul; j++) all = t->byte_ids[(unsigned char)s[i + j]] >= 0;
      if (all) {
        for (size_t j = 0; j < ul; j++) add_sym(w, &ns, t->byte_ids[(unsigned char)s[i + j]]);
        last_unk = 0;
      } else if (t->unk_id >= 0) {
        if (!(t->fuse_unk && last_unk)) add_sym(w, &ns, t->unk_id);
        last_unk = 1;
      }
    }
    i += ul;
  }
  if (w->oom || !ns) return;
  w->syms[ns - 1].next = -1;
  w->nheap = 0;
  for (size_t i = 0; i + 1 < ns; i++) try_pair(w, (int32_t)i);
  sym *S = w->syms;
  while (w->nheap && !w->oom) {
    hent e = heap_pop(w);
    if (S[e.pos].id != e.lid || S[e.pos].next != e.right || S[e.right].id != e.rid) continue;
    S[e.pos].id = e.nid; /* merge right into left */
    int32_t nx = S[e.right].next;
    S[e.pos].next = nx;
    if (nx >= 0) S[nx].prev = e.pos;
    S[e.right].id = -1;
    S[e.right].next = -2;
    if (S[e.pos].prev >= 0) try_pair(w, S[e.pos].prev);
    try_pair(w, e.pos);
  }
  for (int32_t i = 0; i >= 0; i = S[i].next) push_id(w, S[i].id);
}

static uint64_t whash(const char *s, size_t n) {
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h | 1;
}

/* BPE with the per-call cache in front */
static void bpe_cached(work *w, const char *s, size_t n) {
  if (n > CACHE_MAXKEY || n <= 1 || !w->cache) {
    bpe_word(w, s, n);
    return;
  }
  uint64_t h = whash(s, n);
  cache_ent *c = &w->cache[h & (CACHE_SLOTS - 1)];
  if (c->hash == h && c->klen == n && !memcmp(w->ckeys + c->koff, s, n)) {
    if (grow((void **)&w->ids, &w->capids, w->nids + c->ilen, sizeof *w->ids)) {
      w->oom = 1;
      return;
    }
    memcpy(w->ids + w->nids, w->cids + c->ioff, c->ilen * sizeof *w->ids);
    w->nids += c->ilen;
    return;
  }
  size_t before = w->nids;
  bpe_word(w, s, n);
  if (w->oom) return;
  size_t ni = w->nids - before;
  /* entries are never reclaimed; stop caching past a few MB */
  if (w->nckeys + n > (1u << 20) || w->ncids + ni > (256u << 10)) return;
  if (grow((void **)&w->ckeys, &w->capckeys, w->nckeys + n, 1) ||
      grow((void **)&w->cids, &w->capcids, w->ncids + ni, sizeof *w->cids))
    return;
  memcpy(w->ckeys + w->nckeys, s, n);
  memcpy(w->cids + w->ncids, w->ids + before, ni * sizeof *w->ids);
  *c = (cache_ent){h, (uint32_t)w->nckeys, (uint32_t)n, (uint32_t)w->ncids, (uint32_t)ni};
  w->nckeys += n;
  w->ncids += ni;
}

/* Cuts a piece before each "▁" that no merge can reach across (see
 * tok_internal.h) and BPEs the parts. */
static void bpe_meta(work *w, const char *s, size_t n) {
  const tok_tokenizer *t = w->t;
  size_t start = 0;
  for (size_t p = 1; p + 3 <= n; p++) {
    if (memcmp(s + p, "\xE2\x96\x81", 3)) continue;
    size_t q = p - 1;
    while (q > start && ((unsigned char)s[q] & 0xC0) == 0x80) q--;
    size_t cl = p - q;
    if (cl == 3 && !memcmp(s + q, "\xE2\x96\x81", 3)) continue;
    int left = 0;
    for (int m = 0; m < t->nmeta_left && !left; m++)
      left = cl <= 4 && !memcmp(t->meta_left[m], s + q, cl) && (cl == 4 || !t->meta_left[m][cl]);
    if (left) continue;
    bpe_cached(w, s + start, p - start);
    start = p;
  }
  bpe_cached(w, s + start, n - start);
}

/* ---- one segment between added tokens ---- */

static int encode_segment(work *w, const char *s, size_t n) {
  if (!n) return 0;
  if (grow((void **)&w->buf[0], &w->cap[0], n + 1, 1)) return MFS_ENOMEM;
  memcpy(w->buf[0], s, n);
  size_t len = n;
  int rc;
  if ((rc = normalize(w, &len))) return rc;
  if ((rc = pretokenize(w, len))) return rc;
  for (size_t i = 0; i < w->nsp[0] && !w->oom; i++) {
    if (w->t->meta_split) bpe_meta(w, w->buf[0] + w->sp[0][i].off, w->sp[0][i].len);
    else bpe_cached(w, w->buf[0] + w->sp[0][i].off, w->sp[0][i].len);
  }
  return w->oom ? MFS_ENOMEM : 0;
}

static int is_word_byte(unsigned char c) {
  return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z');
}

static int is_space_byte(unsigned char c) { return c == ' ' || (c >= 9 && c <= 13); }

/* Finds the leftmost added token in s[from..n) (longest at that position).
 * Returns its index or -1; ms and me get the span including lstrip/rstrip. */
static int find_added(const tok_tokenizer *t, const char *s, size_t from, size_t n, int special,
                      size_t *ms, size_t *me) {
  for (size_t i = from; i < n; i++) {
    const int16_t *cand = t->added_first[(unsigned char)s[i]];
    if (!cand) continue;
    for (; *cand >= 0; cand++) {
      const tok_added *a = &t->added[*cand];
      if (a->special && !special) continue;
      if (a->len > n - i || memcmp(s + i, a->content, a->len)) continue;
      size_t e = i + a->len, b = i;
      if (a->single_word && ((b > 0 && is_word_byte((unsigned char)s[b - 1])) ||
                             (e < n && is_word_byte((unsigned char)s[e]))))
        continue;
      if (a->lstrip)
        while (b > from && is_space_byte((unsigned char)s[b - 1])) b--;
      if (a->rstrip)
        while (e < n && is_space_byte((unsigned char)s[e])) e++;
      *ms = b;
      *me = e;
      return *cand;
    }
  }
  return -1;
}

static void work_free(work *w) {
  free(w->buf[0]);
  free(w->buf[1]);
  free(w->sp[0]);
  free(w->sp[1]);
  free(w->ev);
  free(w->syms);
  free(w->heap);
  free(w->cache);
  free(w->ckeys);
  free(w->cids);
  if (w->md) pcre2_match_data_free(w->md);
  if (w->mctx) pcre2_match_context_free(w->mctx);
  if (w->jstack) pcre2_jit_stack_free(w->jstack);
}

int tok_encode(const tok_tokenizer *t, const char *text, size_t len, unsigned flags,
               int32_t **ids, size_t *n) {
  if (ids) *ids = NULL;
  if (n) *n = 0;
  if (!t || !ids || !n || (!text && len)) return MFS_EINVAL;
  work w = {0};
  w.t = t;
  int rc = 0;
  char *clean = NULL;
  if (tok_utf8_valid_prefix(text, len) != len) {
    if (!(clean = sanitize(text, len, &len))) return MFS_ENOMEM;
    text = clean;
  }
  w.md = pcre2_match_data_create(1, NULL);
  if (!w.md || grow((void **)&w.ids, &w.capids, len / 3 + 16, sizeof *w.ids)) {
    rc = MFS_ENOMEM;
    goto out;
  }
  if (len > 1024) w.cache = calloc(CACHE_SLOTS, sizeof *w.cache); /* optional */
  if ((flags & TOK_ADD_BOS) && t->bos >= 0) push_id(&w, t->bos);
  size_t pos = 0;
  int special = (flags & TOK_PARSE_SPECIAL) != 0;
  while (pos <= len && !rc) {
    size_t ms = len, me = len;
    int a = t->nadded ? find_added(t, text, pos, len, special, &ms, &me) : -1;
    if ((rc = encode_segment(&w, text + pos, (a >= 0 ? ms : len) - pos))) break;
    if (a < 0) break;
    push_id(&w, t->added[a].id);
    pos = me;
  }
  if (!rc && w.oom) rc = MFS_ENOMEM;
out:
  work_free(&w);
  free(clean);
  if (rc) {
    free(w.ids);
    return rc;
  }
  *ids = w.ids;
  *n = w.nids;
  return 0;
}
