/* fuzz_http.c: the whole-request harness: raw bytes from the fuzzer go to
 * a real server (srv_new + srv_run on a thread of this process, libuv +
 * libmicrohttpd + scheduler + engine) over a loopback TCP connection.
 *
 * The server runs a tiny MFA-KR model with the tok_llama3 tokenizer
 * (data/http_model, written by gen_seeds.py), max_model_len 128, one
 * engine thread. Each input is sent on a fresh connection, the write side
 * is then shut, and the answer is read until the server closes.
 *
 * The client waits 100 ms for a first byte (an incomplete request gets no
 * answer; the connection is then closed under the server, which exercises
 * the disconnect paths) and then reads until 1 s passes without a byte.
 *
 * Properties: whatever the bytes, an answer (if any) starts with an HTTP/1
 * status line, and afterwards a fresh GET /health answers 200 within 10 s
 * (the server keeps serving). A crash or sanitizer report in any server
 * thread stops the fuzzer. */
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "fuzz_util.h"
#include "server.h"

static srv *g_srv;
static int g_port;

static void *serve(void *arg) {
  (void)arg;
  int rc = srv_run(g_srv);
  fprintf(stderr, "fuzz_http: srv_run returned %d\n", rc);
  abort(); /* the server must not stop while inputs are coming */
  return NULL;
}

/* Sends n bytes, half-closes, and reads the answer into buf (up to cap;
 * the rest is drained) until the server closes, or first_ms pass with no
 * byte at all (an incomplete request: the server is waiting for more), or
 * idle_ms pass without a byte once the answer started (a kept-alive
 * connection). Closes the connection and returns the bytes kept. */
static long exchange(const void *req, size_t n, char *buf, size_t cap, int first_ms, int idle_ms) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  FUZZ_CHECK(fd >= 0, "socket");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int cr;
  while ((cr = connect(fd, (struct sockaddr *)&a, sizeof a)) != 0 && errno == EINTR) {
  }
  /* interrupted mid-connect (libFuzzer's -timeout alarm): EISCONN or
   * EALREADY mean the connection is under way or made */
  if (cr != 0 && (errno == EALREADY || errno == EINPROGRESS || errno == EISCONN)) {
    struct pollfd pw = {.fd = fd, .events = POLLOUT};
    while (poll(&pw, 1, 10000) < 0 && errno == EINTR) {
    }
    cr = 0;
  }
  FUZZ_CHECK(cr == 0, "connect to the server failed");
  struct timeval tv = {.tv_sec = 5};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  const char *p = req;
  size_t left = n;
  while (left > 0) { /* the server may answer and close before reading it all */
    ssize_t w = send(fd, p, left, MSG_NOSIGNAL);
    if (w <= 0) break;
    p += w;
    left -= (size_t)w;
  }
  shutdown(fd, SHUT_WR);
  size_t got = 0, seen = 0;
  for (;;) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    /* libFuzzer's -timeout alarm interrupts poll and recv: EINTR is not an
     * answer, wait out the rest of the time */
    double until = mfs_now() + (seen ? idle_ms : first_ms) / 1000.0;
    int pr;
    while ((pr = poll(&pf, 1, (int)MFS_MAX(0.0, (until - mfs_now()) * 1000))) < 0 && errno == EINTR) {
    }
    if (pr <= 0) break;
    char tmp[4096];
    ssize_t r;
    while ((r = recv(fd, tmp, sizeof tmp, 0)) < 0 && errno == EINTR) {
    }
    if (r <= 0) break;
    seen += (size_t)r;
    if (got < cap) {
      size_t k = MFS_MIN((size_t)r, cap - got);
      memcpy(buf + got, tmp, k);
      got += k;
    }
  }
  close(fd);
  return (long)got;
}

static int health_within(int ms) {
  static const char req[] = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  char buf[512];
  long n = exchange(req, sizeof req - 1, buf, sizeof buf - 1, ms, ms);
  if (n < 12) return 0;
  buf[n] = 0;
  return !strncmp(buf, "HTTP/1.1 200", 12);
}

static int health(void) { return health_within(10000); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  mfs_log_set_level(MFS_LOG_ERROR);
  char dir[1024], err[512];
  snprintf(dir, sizeof dir, "%s/http_model", fuzz_data_dir());
  srv_opts o = {.model_dir = dir, .host = "127.0.0.1", .port = 0, .served_model_name = "test-model",
                .max_num_seqs = 8, .max_num_batched_tokens = 256, .max_queued_requests = 64,
                .max_model_len = 128, .kv_cache_bytes = 4u << 20, .block_size = 16, .threads = 1,
                .max_body_bytes = 1u << 20, .shutdown_timeout = 1, .chat_template = "auto"};
  if (srv_new(&g_srv, &o, err, sizeof err)) {
    fprintf(stderr, "fuzz_http: srv_new: %s\n", err);
    abort();
  }
  g_port = srv_port(g_srv);
  pthread_t th;
  FUZZ_CHECK(pthread_create(&th, NULL, serve, NULL) == 0, "thread");
  pthread_detach(th);
  for (int i = 0; i < 600 && !health(); i++) usleep(100000);
  FUZZ_CHECK(health(), "the server did not become ready within 60 s");
  return 0;
}

/* "#FLOOD<n> <bytes>": n connections (at most 2000) each send <bytes> and
 * close without waiting, as a crowd of clients that go away mid-request;
 * then /health must still answer. */
static int flood(const uint8_t *data, size_t size) {
  if (size < 7 || memcmp(data, "#FLOOD", 6)) return 0;
  size_t i = 6;
  int n = 0;
  while (i < size && data[i] >= '0' && data[i] <= '9' && n < 2000) n = n * 10 + (data[i++] - '0');
  if (i < size && data[i] == ' ') i++;
  for (int k = 0; k < MFS_MIN(n, 2000); k++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(fd >= 0, "socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) (void)!send(fd, data + i, size - i, MSG_NOSIGNAL);
    close(fd);
  }
  usleep(200000);
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char buf[1 << 16];
  if (flood(data, size)) {
    /* past --max-connections the probe waits in the backlog behind the
     * flood until the server has closed the departed clients: allow that
     * on a loaded (sanitized) build */
    FUZZ_CHECK(health_within(30000), "GET /health does not answer 200 after a flood of clients that left mid-request");
    return 0;
  }
  long n = exchange(data, size, buf, sizeof buf, 100, 1000);
  if (n > 0) FUZZ_CHECK(n >= 8 && !memcmp(buf, "HTTP/1.", 7), "answer is not HTTP: %.*s", (int)MFS_MIN(n, 80), buf);
  FUZZ_CHECK(health(), "GET /health does not answer 200 after this input");
  return 0;
}
