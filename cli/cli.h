/* cli.h: the mfaserve program's subcommands and their shared flag parser.
 * Every flag may also come from an environment variable (its "env twin");
 * the command line wins over the environment. */
#ifndef MFS_CLI_H
#define MFS_CLI_H

#include <stdint.h>

typedef enum { CLI_STR, CLI_INT, CLI_DOUBLE, CLI_BOOL, CLI_BYTES } cli_flag_type;

typedef struct cli_flag {
  const char *name;  /* "model" for --model */
  const char *env;   /* "MFASERVE_MODEL", or NULL */
  cli_flag_type type;
  void *ptr;         /* const char **, int *, double *, int * (bool), uint64_t * */
  const char *help;  /* one line; the default is printed from *ptr */
} cli_flag;

/* Parses env twins then argv (argv[0] is the subcommand). "--x v" and
 * "--x=v"; a CLI_BOOL flag takes no value ("--x") or "--x=true|false|1|0".
 * Returns 0, CLI_HELP after printing usage for --help/-h, or CLI_USAGE
 * after printing the error (the caller exits with status 2). Positional
 * arguments are errors unless npos is not NULL, which then receives them. */
#define CLI_HELP 1
#define CLI_USAGE 2
int cli_parse(const char *cmd, const char *summary, cli_flag *flags, int nflags, int argc,
              char **argv, char ***pos, int *npos);

/* The model directory when --model is not given: $MFASERVE_MODEL is read by
 * the flag parser; this is the fallback, models/default (the bundled model)
 * if it exists, else NULL. */
const char *cli_default_model(void);

/* Parses "5,17,99" into a malloc'd array. 0 or -1 (message printed). */
int cli_parse_ids(const char *s, int32_t **ids, int *n);

/* --isa for every command that runs the engine (env twin MFASERVE_ISA). */
#define CLI_ISA_HELP "kernel level: auto, avx512-bf16, avx512, avx2, neon or generic (mfaserve info --cpu lists this CPU's)"
#define CLI_ISA_FLAG(var) {"isa", "MFASERVE_ISA", CLI_STR, &(var), CLI_ISA_HELP}
/* Selects the kernel level; 0, or 2 after printing why (unknown name, or a
 * level this CPU lacks). */
int cli_isa_apply(const char *isa);
/* --mmap for every command that loads weights (env twin MFASERVE_MMAP): map
 * the safetensors files instead of reading them into huge-page memory
 * (eng_weights_use_mmap). */
#define CLI_MMAP_FLAG(var)                                                                              \
  {"mmap", "MFASERVE_MMAP", CLI_BOOL, &(var),                                                           \
   "map the weight files (shared page cache, lazy) instead of reading them into memory with huge pages"}

/* --quantize for every command that runs the engine (env twin
 * MFASERVE_QUANTIZE): quantize the weights at load (eng_weights_quantize). */
#define CLI_QUANT_FLAG(var)                                                                             \
  {"quantize", "MFASERVE_QUANTIZE", CLI_STR, &(var),                                                    \
   "quantize the weights at load: none, q8_0 or q4_0 (a directory from `mfaserve quantize` needs none)"}
/* Applies --quantize; 0, or 2 after printing what it expects. */
int cli_quant_apply(const char *type);

int cmd_generate(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int bench_serve_main(int argc, char **argv); /* bench_serve.c: `mfaserve bench serve` */
int cmd_bench_mask(int argc, char **argv);   /* cmd_bench_mask.c: `mfaserve bench mask` */
int cmd_logits(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_eval(int argc, char **argv); /* cmd_eval.c */

#endif
