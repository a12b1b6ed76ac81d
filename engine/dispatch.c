/* dispatch.c: the one place that asks the CPU what it can do and picks the
 * kernel table (kernels.h). The engine binary carries every level of its
 * architecture; the choice is made at start-up, never at build time:
 *
 *   x86-64:  avx512-bf16 (AVX-512 F/BW/VL + BF16 + VNNI) > avx512 (F/BW/VL)
 *            > avx2 (AVX2 + FMA + F16C) > generic
 *   aarch64: neon (Advanced SIMD, always present) > generic
 *   other:   generic
 *
 * MFASERVE_ISA (or --isa, through eng_isa_select) forces a level; a level the
 * CPU lacks is an error that names the missing features, never a crash on
 * the first illegal instruction. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#if defined(__aarch64__)
#include <sys/auxv.h>
#elif defined(__x86_64__)
#include <cpuid.h>
#endif

#include "common.h"
#include "kernels.h"

typedef struct {
  const k_table *t;
  const char *alias;    /* another accepted spelling, or NULL */
  const char *needs[8]; /* feature names (as eng_cpu_features spells them) */
} level;

static const level levels[] = {
#if defined(__x86_64__)
    {&k_table_avx512bf16, "avx512bf16", {"avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni", "f16c", "fma"}},
    {&k_table_avx512, NULL, {"avx512f", "avx512bw", "avx512vl", "f16c", "fma"}},
    {&k_table_avx2, NULL, {"avx2", "fma", "f16c"}},
#elif defined(__aarch64__)
    {&k_table_neon, "asimd", {"asimd"}},
#endif
    {&k_table_generic, "c", {0}},
};
#define N_LEVELS ((int)(sizeof levels / sizeof levels[0]))

/* ---- what the CPU reports ---- */

typedef struct {
  const char *name;
  int have;
} feature;

static feature features[16];
static int n_features;
static char features_str[256], built_str[128], supported_str[128], int8_str[128];
static const k_table *supported[N_LEVELS + 1];

static void add_feature(const char *name, int have) {
  have = have != 0;
  features[n_features++] = (feature){name, have};
  if (have) {
    size_t n = strlen(features_str);
    snprintf(features_str + n, sizeof features_str - n, "%s%s", n ? "," : "", name);
  }
}

static int has(const char *name) {
  for (int i = 0; i < n_features; i++)
    if (!strcmp(features[i].name, name)) return features[i].have;
  return 0;
}

static void probe(void) {
#if defined(__x86_64__)
  /* CPUID and XCR0 read directly (not __builtin_cpu_supports, whose feature
   * names differ between GCC and clang versions): a feature counts only when
   * the OS also saves its register state. */
  unsigned a, b, c, d, a7 = 0, b7 = 0, c7 = 0, d7 = 0, a71 = 0, x0 = 0, x1 = 0;
  __cpuid(0, a, b, c, d);
  unsigned max_leaf = a;
  __cpuid(1, a, b, c, d);
  unsigned c1 = c;
  if (c1 & (1u << 27)) __asm__ volatile("xgetbv" : "=a"(x0), "=d"(x1) : "c"(0));
  (void)x1;
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a7, b7, c7, d7);
    if (a7 >= 1) __cpuid_count(7, 1, a71, b, c, d);
  }
  (void)d7;
  int ymm = (c1 & (1u << 27)) && (x0 & 0x6) == 0x6;  /* XMM and YMM state */
  int zmm = ymm && (x0 & 0xe0) == 0xe0;               /* opmask, ZMM_Hi256, Hi16_ZMM */
  add_feature("avx2", ymm && (b7 & (1u << 5)));
  add_feature("fma", ymm && (c1 & (1u << 12)));
  add_feature("f16c", ymm && (c1 & (1u << 29)));
  add_feature("avx512f", zmm && (b7 & (1u << 16)));
  add_feature("avx512bw", zmm && (b7 & (1u << 30)));
  add_feature("avx512vl", zmm && (b7 & (1u << 31)));
  add_feature("avx512_bf16", zmm && (a71 & (1u << 5)));
  add_feature("avx512_vnni", zmm && (c7 & (1u << 11)));
#elif defined(__aarch64__)
  unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  add_feature("asimd", (hw & HWCAP_ASIMD) != 0);
  add_feature("fphp", (hw & HWCAP_FPHP) != 0);
  add_feature("asimdhp", (hw & HWCAP_ASIMDHP) != 0);
  add_feature("asimddp", (hw & HWCAP_ASIMDDP) != 0);
#ifdef HWCAP2_BF16
  add_feature("bf16", (hw2 & HWCAP2_BF16) != 0);
#else
  (void)hw2;
#endif
#endif
  int ns = 0;
  for (int i = 0; i < N_LEVELS; i++) {
    size_t n = strlen(built_str);
    snprintf(built_str + n, sizeof built_str - n, "%s%s", n ? "," : "", levels[i].t->name);
    if (levels[i].t->qgemm_cols) {
      n = strlen(int8_str);
      snprintf(int8_str + n, sizeof int8_str - n, "%s%s", n ? "," : "", levels[i].t->name);
    }
    int ok = 1;
    for (int f = 0; f < 8 && levels[i].needs[f]; f++) ok &= has(levels[i].needs[f]);
    if (!ok) continue;
    supported[ns++] = levels[i].t;
    n = strlen(supported_str);
    snprintf(supported_str + n, sizeof supported_str - n, "%s%s", n ? "," : "", levels[i].t->name);
  }
  supported[ns] = NULL;
}

/* ---- the choice ---- */

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static _Atomic(const k_table *) active;

static const level *find(const char *name) {
  for (int i = 0; i < N_LEVELS; i++)
    if (!strcasecmp(name, levels[i].t->name) || (levels[i].alias && !strcasecmp(name, levels[i].alias)))
      return &levels[i];
  return NULL;
}

const k_table *k_level_by_name(const char *name) {
  const level *l = name ? find(name) : NULL;
  return l ? l->t : NULL;
}

const k_table *const *k_levels_supported(void) {
  pthread_once(&probe_once, probe);
  return supported;
}

/* Resolves name to a supported table, or NULL with the reason in err. */
static const k_table *resolve(const char *name, char *err, size_t errlen) {
  pthread_once(&probe_once, probe);
  if (!name || !*name || !strcasecmp(name, "auto")) return supported[0];
  const level *l = find(name);
  if (!l) {
    snprintf(err, errlen, "unknown kernel level '%s': this %s build has %s (or auto)", name,
#if defined(__x86_64__)
             "x86-64",
#elif defined(__aarch64__)
             "aarch64",
#else
             "portable",
#endif
             built_str);
    return NULL;
  }
  char missing[128] = "";
  for (int f = 0; f < 8 && l->needs[f]; f++)
    if (!has(l->needs[f])) {
      size_t n = strlen(missing);
      snprintf(missing + n, sizeof missing - n, "%s%s", n ? " " : "", l->needs[f]);
    }
  if (*missing) {
    snprintf(err, errlen, "kernel level '%s' needs CPU features this CPU lacks: %s (it supports: %s)", l->t->name,
             missing, supported_str);
    return NULL;
  }
  return l->t;
}

int eng_isa_select(const char *name, char *err, size_t errlen) {
  char tmp[256];
  if (!err || !errlen) err = tmp, errlen = sizeof tmp;
  const k_table *t = resolve(name, err, errlen);
  if (!t) return MFS_EINVAL;
  atomic_store(&active, t);
  return 0;
}

const k_table *k_active(void) {
  const k_table *t = atomic_load_explicit(&active, memory_order_acquire);
  if (t) return t;
  /* first use without eng_isa_select: MFASERVE_ISA, else the best level */
  char err[256];
  const char *env = getenv("MFASERVE_ISA");
  t = resolve(env, err, sizeof err);
  if (!t) {
    mfs_log(MFS_LOG_WARN, "engine", "MFASERVE_ISA: %s; using %s", err, supported[0]->name);
    t = supported[0];
  }
  const k_table *expect = NULL;
  if (!atomic_compare_exchange_strong(&active, &expect, t)) t = expect;
  return t;
}

const char *eng_isa_name(void) { return k_active()->name; }

const char *eng_isa_built(void) {
  pthread_once(&probe_once, probe);
  return built_str;
}

const char *eng_isa_supported(void) {
  pthread_once(&probe_once, probe);
  return supported_str;
}

const char *eng_isa_int8_gemm(void) {
  pthread_once(&probe_once, probe);
  return int8_str;
}

const char *eng_cpu_features(void) {
  pthread_once(&probe_once, probe);
  return features_str;
}
