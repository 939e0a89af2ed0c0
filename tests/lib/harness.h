/* Helpers for the black-box integration tests: temp dirs, child processes, free ports, a raw HTTP/1.x client,
 * curl, and starting weir ahead of test upstreams (build/weir-upstream).
 *
 * Every helper that takes a th_env_t fails the running cmocka test (fail_msg) when something it needs does not
 * work, so a test reads as a list of steps. Use th_setup/th_teardown as the cmocka setup/teardown of every test:
 * the teardown stops what is still running (weir with the sanitizer check), frees every response and removes the
 * temp dir (kept when WEIR_TEST_KEEP is set in the environment).
 *
 * This header needs no cmocka include, so tests/upstream/upstream.c can share th_pattern_byte(). */
#ifndef TH_HARNESS_H
#define TH_HARNESS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TH_MAX_UPSTREAMS 8
#define TH_MAX_HEADERS 64
#define TH_TIMEOUT_MS 10000 /* default bound of every wait: readiness, one response, a process exit */

/* Byte <i> of the body of the upstream's /bytes/N, /chunked/N and /eof/N. The period, 251, is prime so that a
 * shifted, duplicated or dropped block of any power-of-two size shows up. */
static inline char th_pattern_byte(size_t i)
{
    static const char a[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    return a[(i % 251) % (sizeof(a) - 1)];
}

typedef struct th_proc_s {
    pid_t pid;     /* 0 when not running (never started, or reaped) */
    char name[32]; /* for messages and log file names */
    char out[512]; /* <dir>/<name>.out: the child's stdout */
    char err[512]; /* <dir>/<name>.err: the child's stderr */
    int status;    /* exit code once reaped; 128+N when killed by signal N */
} th_proc_t;

typedef struct th_upstream_s {
    th_proc_t proc;
    int port;
    char addr[64]; /* "127.0.0.1:PORT", ready to pass as --stable/--upstream value */
} th_upstream_t;

typedef struct th_env_s {
    char dir[256]; /* per-test temp dir */
    th_upstream_t up[TH_MAX_UPSTREAMS];
    int nup;
    th_proc_t weir;
    int port;       /* weir's data-plane port (127.0.0.1) */
    int admin_port; /* weir's admin port (127.0.0.1) */
    char sock[300]; /* weir's control socket: <dir>/weir.sock */
    int nruns;      /* counter for th_run's log names */
    int nofile;     /* when > 0: RLIMIT_NOFILE (soft and hard) of the processes th_spawn starts, as `ulimit -n` */
} th_env_t;

/* One parsed HTTP response. Zero-initialise it (= {0}); every reader frees what it held before, and th_teardown
 * frees what is left, so a test need not call th_resp_free() except to release a large body early. */
typedef struct th_resp_s {
    int minor;  /* HTTP/1.<minor> */
    int status; /* 0 when nothing was parsed */
    char *head; /* the status line and header block, NUL-terminated, lines split in place */
    int nheaders;
    const char *hname[TH_MAX_HEADERS];
    const char *hvalue[TH_MAX_HEADERS];
    char *body; /* decoded body (chunked framing removed), NUL-terminated; never NULL after a read */
    size_t body_len;
    bool chunked;     /* framed with Transfer-Encoding: chunked */
    bool until_close; /* framed by the server closing the connection */
    int ninterim;     /* 1xx responses skipped before this one */
} th_resp_t;

/* A client connection with its own read buffer, so bytes past one response (pipelining) are kept. */
typedef struct th_conn_s {
    int fd;
    char *buf;
    size_t off, len, cap; /* unread bytes are buf[off, len) */
    bool eof;             /* the server closed (FIN or RST) */
} th_conn_t;

/* Result of th_run(): a program run to completion. */
typedef struct th_run_s {
    int status; /* exit code; 128+N when killed by signal N */
    char *out;  /* its stdout, NUL-terminated */
    char *err;  /* its stderr, NUL-terminated */
} th_run_t;

/* --- cmocka fixtures ------------------------------------------------------------------------------------------ */

/* cmocka setup: allocates a th_env_t with a fresh temp dir and stores it in *<state>. Returns 0, or -1. */
int th_setup(void **state);
/* cmocka teardown: kills leftover upstreams, stops weir if it runs (with th_weir_stop's checks), frees responses and
 * removes the temp dir. Returns 0, or -1 when stopping weir found a problem. */
int th_teardown(void **state);

/* Applies WEIR_TEST_FILTER (a cmocka pattern such as "test_get*") from the environment, to run some tests only, and
 * WEIR_TEST_SKIP (the same kind of pattern), to leave some out.
 * Call it at the start of main(). */
void th_filter_from_env(void);

/* --- processes and ports -------------------------------------------------------------------------------------- */

/* Returns a TCP port of 127.0.0.1 that was free a moment ago (bound and closed), distinct from the last 64 given.
 * Preferably below the kernel's ephemeral range, where no outgoing connection can take it before the server binds;
 * else one that bind(port 0) handed out. */
int th_free_port(void);
/* Listens on 127.0.0.1:<port> as another program would, with SO_REUSEPORT when <reuseport>; returns the socket.
 * Fails the test when it cannot. */
int th_occupy(int port, bool reuseport);
/* Returns whether something accepts TCP connections on 127.0.0.1:<port> right now. */
bool th_port_open(int port);
/* Polls until 127.0.0.1:<port> accepts a connection, up to <timeout_ms>. When <p> is given, gives up early if that
 * process exits. Returns true when the port accepts. */
bool th_wait_port(int port, int timeout_ms, th_proc_t *p);
/* Starts <argv> (argv[0] is the path) with stdout and stderr going to <env>->dir/<name>.out/.err; stdin is
 * /dev/null. Fails the test if fork or exec fails. */
void th_spawn(th_env_t *env, th_proc_t *p, const char *name, char *const argv[]);
/* Waits up to <timeout_ms> for <p> to exit; returns its status (see th_proc_t), or -1 on timeout (still running). */
int th_wait_exit(th_proc_t *p, int timeout_ms);
/* Sends <sig> to <p> and waits up to <timeout_ms> for it to exit. On timeout, kills it with SIGKILL and fails the
 * test. Returns the status. A process already reaped returns its recorded status. */
int th_stop(th_proc_t *p, int sig, int timeout_ms);
/* Runs argv (NULL-terminated) to completion (bound TH_TIMEOUT_MS, then SIGKILL and fail), capturing stdout/stderr. */
void th_run(th_env_t *env, th_run_t *r, char *const argv[]);
/* Returns the contents of the file <path> (NUL-terminated, freed at teardown); "" when it cannot be read. */
char *th_slurp(const char *path);
/* Writes <text> to <env>->dir/<name>; returns the full path (freed at teardown). */
char *th_write_file(th_env_t *env, const char *name, const char *text);
/* Prints a file to stderr, framed with its name (used when a test fails about a process). */
void th_dump_file(const char *path);

/* --- weir and upstreams --------------------------------------------------------------------------------------- */

/* Paths of the binaries under test: WEIR_BIN (default build/weir), WEIR_UPSTREAM_BIN (build/weir-upstream),
 * WEIRCTL_BIN (build/weirctl). */
const char *th_weir_bin(void);
const char *th_upstream_bin(void);
const char *th_weirctl_bin(void);

/* Starts a weir-upstream named <name> on a free port and waits until it accepts. Returns its index in env->up. */
int th_upstream_start(th_env_t *env, const char *name);
/* Stops upstream <i> with SIGTERM and asserts it exited 0 with a clean stderr. */
void th_upstream_stop(th_env_t *env, int i);
/* Starts weir with the NULL-terminated <args>, adding `--listen 127.0.0.1:P --admin 127.0.0.1:A --control
 * <dir>/weir.sock --workers 1` for each of these that <args> does not set, and waits until the data port accepts.
 * Fails the test (printing weir's stderr) if it exits or does not listen within TH_TIMEOUT_MS. */
void th_weir_start(th_env_t *env, const char *const args[]);
/* Variadic form of th_weir_start: th_weir_startl(env, "--stable", env->up[0].addr, NULL). */
void th_weir_startl(th_env_t *env, ...);
/* Sends <sig> to weir (0: sends nothing, only waits, e.g. after a signal sent earlier with kill(env->weir.pid, ..)),
 * waits for it to exit (bound <timeout_ms>), asserts exit status 0 and no sanitizer report in its stderr (printing
 * the log on failure). */
void th_weir_stop_sig(th_env_t *env, int sig, int timeout_ms);
/* th_weir_stop_sig(env, SIGTERM, TH_TIMEOUT_MS). */
void th_weir_stop(th_env_t *env);
/* Asserts that the log <path> holds no sanitizer report (prints it otherwise). */
void th_assert_clean_log(const char *path);
/* Returns whether <text> holds an AddressSanitizer, LeakSanitizer or UndefinedBehaviorSanitizer report. */
bool th_has_sanitizer_report(const char *text);

/* --- raw HTTP client ------------------------------------------------------------------------------------------ */

/* Connects to 127.0.0.1:<port>; fails the test if it cannot. The connection is freed at teardown at the latest. */
th_conn_t *th_conn_open(int port);
/* Like th_conn_open, but returns NULL when the connection is refused. */
th_conn_t *th_conn_try_open(int port);
/* Closes (idempotent) and frees <c>. */
void th_conn_close(th_conn_t *c);
/* Sends all of <data>; returns 0, or -1 if the peer is gone. */
int th_conn_send(th_conn_t *c, const void *data, size_t len);
/* printf-style th_conn_send. */
int th_conn_sendf(th_conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Reads exactly one response (skipping 1xx interim ones unless it is a 101), leaving any bytes after it in the
 * connection's buffer. <head_request>: the request was HEAD, so no body follows. Returns 0 on a complete response,
 * -1 on timeout, on a close before the response was complete, or on a malformed response. */
int th_conn_read_response(th_conn_t *c, th_resp_t *r, bool head_request, int timeout_ms);
/* Like th_conn_read_response but returns a 1xx interim response (e.g. 100 Continue) too. */
int th_conn_read_response_any(th_conn_t *c, th_resp_t *r, bool head_request, int timeout_ms);
/* Waits up to <timeout_ms> for the server to close the connection; bytes that arrive are kept in the buffer.
 * Returns true once closed. Like every reader here, it closes our side as soon as it sees the server's close, as a
 * client does, so a server doing a lingering close is not kept waiting. */
bool th_conn_wait_closed(th_conn_t *c, int timeout_ms);
/* Returns whether the server has closed the connection already, without waiting (reads what is pending). */
bool th_conn_closed_now(th_conn_t *c);
/* One request on a fresh connection: sends <raw>, reads the response into <r>, closes. Returns as
 * th_conn_read_response. */
int th_http(int port, const char *raw, th_resp_t *r);
/* th_http of "GET <path> HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"; fails the test on no response. */
void th_get(int port, const char *path, th_resp_t *r);

/* Like th_get, but returns -1 instead of failing when the port refuses or no complete response comes. */
int th_try_get(int port, const char *path, th_resp_t *r);

/* Returns the value of the first header <name> (case-insensitive) of <r>, or NULL. */
const char *th_header(const th_resp_t *r, const char *name);
/* Returns how many headers named <name> <r> has. */
int th_header_count(const th_resp_t *r, const char *name);
/* Frees what <r> holds and zeroes it. */
void th_resp_free(th_resp_t *r);

/* For bodies of the upstream's /echo: the dump is the request line and header lines as the upstream received them,
 * a blank line, then the body. Copies the value of the <nth> (0-based) header <name> into <out> and returns true,
 * or returns false when there is no such header. */
bool th_echo_header(const th_resp_t *r, const char *name, int nth, char *out, size_t outlen);
/* Returns how many headers named <name> the echo dump has. */
int th_echo_header_count(const th_resp_t *r, const char *name);
/* Returns the body part of the echo dump (after the blank line) and its length in *<len>; NULL if malformed. */
const char *th_echo_body(const th_resp_t *r, size_t *len);
/* Returns the request line of the echo dump in <out> (without CRLF); false if malformed. */
bool th_echo_request_line(const th_resp_t *r, char *out, size_t outlen);

/* Returns the integer in the body of GET <path> on upstream <i> directly (e.g. "/__count", "/__conns"). */
long th_upstream_stat(th_env_t *env, int i, const char *path);
/* Polls GET <path> on upstream <i> until it returns <want> (bound TH_TIMEOUT_MS); returns true when it did. */
bool th_upstream_wait_stat(th_env_t *env, int i, const char *path, long want);
/* Returns true when <buf> of <len> bytes equals the pattern of /bytes/N starting at offset 0. */
bool th_pattern_ok(const char *buf, size_t len);

/* --- curl ----------------------------------------------------------------------------------------------------- */

/* Runs `curl -sS --max-time 10 -D <hdrs> -o <body> <args...>` (NULL-terminated args) and parses the last header
 * block and the body into <r>. Returns curl's exit code. */
int th_curl(th_env_t *env, th_resp_t *r, ...);

/* --- polling ---------------------------------------------------------------------------------------------------- */

/* Calls <cond>(<arg>) every few milliseconds until it returns true or <timeout_ms> pass. Returns its last answer.
 * This is how a test waits for a state; never a fixed sleep. */
bool th_poll(bool (*cond)(void *arg), void *arg, int timeout_ms);

/* --- memory --------------------------------------------------------------------------------------------------- */

/* malloc that fails the test on OOM; the block is freed at teardown unless th_free()d before. */
void *th_alloc(size_t n);
void *th_realloc(void *p, size_t n);
void th_free(void *p);
char *th_strdup(const char *s);
/* Formatted string freed at teardown. */
char *th_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Returns how many lines (newline characters) <s> holds. */
int th_count_lines(const char *s);
/* Case-insensitive strstr. */
const char *th_strcasestr(const char *hay, const char *needle);

/* --- where a failing helper was called from -------------------------------------------------------------------- */

/* The helpers that can fail the test report the test's own file and line: each call below goes through a macro
 * that records the call site first. harness.c defines TH_INTERNAL so that its own calls do not overwrite it. */
extern const char *th__file;
extern int th__line;
#ifndef TH_INTERNAL
#define TH_HERE_(call) (th__file = __FILE__, th__line = __LINE__, call)
#define th_spawn(...) TH_HERE_(th_spawn(__VA_ARGS__))
#define th_stop(...) TH_HERE_(th_stop(__VA_ARGS__))
#define th_run(...) TH_HERE_(th_run(__VA_ARGS__))
#define th_write_file(...) TH_HERE_(th_write_file(__VA_ARGS__))
#define th_upstream_start(...) TH_HERE_(th_upstream_start(__VA_ARGS__))
#define th_upstream_stop(...) TH_HERE_(th_upstream_stop(__VA_ARGS__))
#define th_weir_start(...) TH_HERE_(th_weir_start(__VA_ARGS__))
#define th_weir_startl(...) TH_HERE_(th_weir_startl(__VA_ARGS__))
#define th_weir_stop_sig(...) TH_HERE_(th_weir_stop_sig(__VA_ARGS__))
#define th_weir_stop(...) TH_HERE_(th_weir_stop(__VA_ARGS__))
#define th_assert_clean_log(...) TH_HERE_(th_assert_clean_log(__VA_ARGS__))
#define th_conn_open(...) TH_HERE_(th_conn_open(__VA_ARGS__))
#define th_http(...) TH_HERE_(th_http(__VA_ARGS__))
#define th_get(...) TH_HERE_(th_get(__VA_ARGS__))
#define th_upstream_stat(...) TH_HERE_(th_upstream_stat(__VA_ARGS__))
#define th_upstream_wait_stat(...) TH_HERE_(th_upstream_wait_stat(__VA_ARGS__))
#define th_curl(...) TH_HERE_(th_curl(__VA_ARGS__))
#endif

/* --- an endpoint that never completes a connect ---------------------------------------------------------------- */

/* Returns a listening socket on 127.0.0.1 whose accept queue is full, so the kernel drops SYNs to it: a connect
 * neither succeeds nor fails. *<filler> is the connection that fills the queue; close both when done. Skips the
 * test (cmocka skip) on a kernel that completes connections past a full accept queue. */
int th_blackhole(int *filler);

/* --- shared steps of the HTTP tests ---------------------------------------------------------------------------- */

/* Starts one upstream "stable" and weir ahead of it with the extra NULL-terminated flags. Returns the upstream. */
int th_start_stable(th_env_t *env, ...);
/* Sends <raw> on <c> and reads one response into <r>; fails the test (at the caller's line) when none comes. */
#define th_exchange(c, raw, r) th_exchange_at((c), (raw), (r), __FILE__, __LINE__)
void th_exchange_at(th_conn_t *c, const char *raw, th_resp_t *r, const char *file, int line);
/* Asserts <r> is a response made by weir itself: status <code>, a short printable text body, no x-upstream. */
#define th_assert_own_response(r, code) th_assert_own_response_at((r), (code), __FILE__, __LINE__)
void th_assert_own_response_at(const th_resp_t *r, int code, const char *file, int line);

#endif
