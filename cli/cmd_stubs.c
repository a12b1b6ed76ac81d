/* temporary: replaced as the engine lands */
#include "cli.h"
int cmd_generate(int argc, char **argv) { (void)argc; (void)argv; return 1; }
int cmd_bench(int argc, char **argv) { (void)argc; (void)argv; return 1; }
int cmd_logits(int argc, char **argv) { (void)argc; (void)argv; return 1; }
int cmd_info(int argc, char **argv) { (void)argc; (void)argv; return 1; }
