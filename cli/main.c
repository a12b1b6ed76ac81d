/* main.c: the mfaserve program: dispatches to a subcommand. Exit status:
 * 0 success, 1 runtime failure, 2 bad usage or bad input (model files). */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
  const char *name;
  int (*fn)(int, char **);
  const char *what;
} commands[] = {
    {"generate", cmd_generate, "generate tokens from a prompt"},
    {"bench", cmd_bench, "measure engine speed against this machine's ceilings"},
    {"info", cmd_info, "print a model's shape and KV-cache geometry"},
    {"serve", cmd_serve, "serve the model over an OpenAI-compatible HTTP API"},
    {"logits", cmd_logits, "write the logits of every prompt position (for testing)"},
    {"eval", cmd_eval, "held-out loss and bits per byte of text files (as tools/train/train.py)"},
    {"tokenize", cmd_tokenize, "print the token ids of standard input (or --decode ids)"},
    {"quantize", cmd_quantize, "write a copy of a model with q8_0 or q4_0 weights"},
};

static void usage(FILE *f) {
  fprintf(f, "usage: mfaserve <command> [flags]   (mfaserve <command> --help for its flags)\n\ncommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].what);
}

int main(int argc, char **argv) {
  /* A closed standard descriptor would be reused by the next open (libuv's
   * epoll descriptor, a socket) and then written to, or refused by libuv on
   * close: keep 0-2 taken. */
  for (int fd = 0; fd <= 2; fd++)
    if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) < 0) return 1;
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "mfaserve: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
