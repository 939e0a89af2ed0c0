/* Integration-test harness: see harness.h. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <cmocka.h>

#define TH_INTERNAL
#include "harness.h"

const char *th__file;
int th__line;

/* --- memory: every block is on one list so the teardown frees what a failed test left behind --------------------- */

typedef struct blk_s {
    struct blk_s *next, *prev;
    max_align_t align[];
} blk_t;

static blk_t blocks = {&blocks, &blocks};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    print_error("ERROR: %s\n", msg);
    if (th__file != NULL)
        _fail(th__file, th__line);
    else
        _fail(__FILE__, __LINE__);
    abort(); /* not reached: _fail longjmps back to cmocka */
}

void *th_alloc(size_t n)
{
    blk_t *b = malloc(sizeof(blk_t) + n);
    if (b == NULL)
        die("out of memory (%zu bytes)", n);
    b->next = blocks.next;
    b->prev = &blocks;
    blocks.next->prev = b;
    blocks.next = b;
    return b->align;
}

void th_free(void *p)
{
    if (p == NULL)
        return;
    blk_t *b = (blk_t *)((char *)p - offsetof(blk_t, align));
    b->prev->next = b->next;
    b->next->prev = b->prev;
    free(b);
}

void *th_realloc(void *p, size_t n)
{
    if (p == NULL)
        return th_alloc(n);
    blk_t *b = (blk_t *)((char *)p - offsetof(blk_t, align));
    b->prev->next = b->next;
    b->next->prev = b->prev;
    blk_t *nb = realloc(b, sizeof(blk_t) + n);
    if (nb == NULL) {
        free(b);
        die("out of memory (%zu bytes)", n);
    }
    nb->next = blocks.next;
    nb->prev = &blocks;
    blocks.next->prev = nb;
    blocks.next = nb;
    return nb->align;
}

static void free_all(void)
{
    while (blocks.next != &blocks)
        th_free(blocks.next->align);
}

char *th_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(th_alloc(n), s, n);
}

static char *vfmt(const char *fmt, va_list ap, int *len)
{
    char small[256];
    va_list aq;
    va_copy(aq, ap);
    int n = vsnprintf(small, sizeof(small), fmt, aq);
    va_end(aq);
    if (n < 0)
        die("bad format \"%s\"", fmt);
    char *s = th_alloc((size_t)n + 1);
    if ((size_t)n < sizeof(small))
        memcpy(s, small, (size_t)n + 1);
    else
        vsnprintf(s, (size_t)n + 1, fmt, ap);
    *len = n;
    return s;
}

char *th_fmt(const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    char *s = vfmt(fmt, ap, &n);
    va_end(ap);
    return s;
}

int th_count_lines(const char *s)
{
    int n = 0;
    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

const char *th_strcasestr(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return hay;
    return n == 0 ? hay : NULL;
}

/* --- time --------------------------------------------------------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(int ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

bool th_poll(bool (*cond)(void *arg), void *arg, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        if (cond(arg))
            return true;
        if (now_ms() >= end)
            return false;
        nap_ms(5);
    }
}

/* --- fixtures ----------------------------------------------------------------------------------------------------- */

#define MAX_CONNS 4096
static th_conn_t *conns[MAX_CONNS];
static int nconns;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

int th_setup(void **state)
{
    th_env_t *env = calloc(1, sizeof(*env));
    if (env == NULL)
        return -1;
    const char *base = getenv("TMPDIR");
    snprintf(env->dir, sizeof(env->dir), "%s/weir-test.XXXXXX", base && *base ? base : "/tmp");
    if (mkdtemp(env->dir) == NULL) {
        fprintf(stderr, "mkdtemp %s: %s\n", env->dir, strerror(errno));
        free(env);
        return -1;
    }
    snprintf(env->sock, sizeof(env->sock), "%s/weir.sock", env->dir);
    *state = env;
    return 0;
}

void th_filter_from_env(void)
{
    const char *f = getenv("WEIR_TEST_FILTER");
    if (f != NULL && *f != '\0')
        cmocka_set_test_filter(f);
    f = getenv("WEIR_TEST_SKIP");
    if (f != NULL && *f != '\0')
        cmocka_set_skip_filter(f);
}

static bool weir_stop_check(th_env_t *env, int sig, int timeout_ms, char *why, size_t whylen);

int th_teardown(void **state)
{
    th_env_t *env = *state;
    int rc = 0;
    while (nconns > 0)
        th_conn_close(conns[nconns - 1]);
    if (env->weir.pid > 0) {
        char why[1024];
        if (!weir_stop_check(env, SIGTERM, TH_TIMEOUT_MS, why, sizeof(why))) {
            fprintf(stderr, "teardown: %s\n", why);
            rc = -1;
        }
    }
    for (int i = 0; i < env->nup; i++) {
        th_proc_t *p = &env->up[i].proc;
        if (p->pid > 0) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, NULL, 0);
            p->pid = 0;
        }
    }
    free_all();
    if (getenv("WEIR_TEST_KEEP") != NULL)
        fprintf(stderr, "kept %s\n", env->dir);
    else
        nftw(env->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(env);
    *state = NULL;
    return rc;
}

/* --- processes and ports ------------------------------------------------------------------------------------------ */

/* Returns whether 127.0.0.1:<port> can be bound right now. Without SO_REUSEADDR, so a port with connections in
 * TIME_WAIT counts as taken, as it would for a server whose sockets are not all SO_REUSEADDR. */
static bool bindable(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static int ephemeral_low(void)
{
    int lo = 32768, hi;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f != NULL) {
        if (fscanf(f, "%d %d", &lo, &hi) != 2)
            lo = 32768;
        fclose(f);
    }
    return lo;
}

int th_free_port(void)
{
    static int recent[64];
    static unsigned nrecent, seed;
    if (seed == 0)
        seed = (unsigned)getpid() * 2654435761u ^ (unsigned)now_ms();
    /* Below the ephemeral range first: there, no other process's outgoing connection (a benchmark running next to
     * the tests, say) can take the port between this pick and the server's bind. */
    int lo = ephemeral_low();
    for (int attempt = 0; attempt < 400; attempt++) {
        int port;
        if (attempt < 200 && lo > 11024) {
            port = 10000 + (int)(rand_r(&seed) % (unsigned)(lo - 10000));
        } else {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0)
                die("socket: %s", strerror(errno));
            struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            socklen_t sl = sizeof(sa);
            if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
                close(fd);
                die("bind 127.0.0.1:0: %s", strerror(errno));
            }
            close(fd);
            port = ntohs(sa.sin_port);
        }
        /* A test wants distinct ports, and the kernel may hand the same one out twice in a row. */
        bool seen = false;
        for (unsigned i = 0; i < 64 && i < nrecent; i++)
            seen |= recent[i] == port;
        if (seen || !bindable(port))
            continue;
        recent[nrecent++ % 64] = port;
        return port;
    }
    die("no free port");
}

int th_occupy(int port, bool reuseport)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 16) != 0)
        die("listen on port %d: %s", port, strerror(errno));
    return fd;
}

bool th_port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static int decode_status(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

/* Reaps <p> if it has exited. Returns true when it is gone. */
static bool reap(th_proc_t *p)
{
    if (p->pid <= 0)
        return true;
    int st;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == p->pid || (r < 0 && errno == ECHILD)) {
        p->status = r == p->pid ? decode_status(st) : -1;
        p->pid = 0;
        return true;
    }
    return false;
}

bool th_wait_port(int port, int timeout_ms, th_proc_t *p)
{
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        if (th_port_open(port))
            return true;
        if (p != NULL && reap(p))
            return false;
        if (now_ms() >= end)
            return false;
        nap_ms(5);
    }
}

void th_spawn(th_env_t *env, th_proc_t *p, const char *name, char *const argv[])
{
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s", name);
    snprintf(p->out, sizeof(p->out), "%s/%s.out", env->dir, name);
    snprintf(p->err, sizeof(p->err), "%s/%s.err", env->dir, name);
    int ofd = open(p->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int efd = open(p->err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int nfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int ep[2];
    if (ofd < 0 || efd < 0 || nfd < 0 || pipe2(ep, O_CLOEXEC) < 0)
        die("spawn %s: %s", name, strerror(errno));
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        /* Children die with the test binary, so a killed or crashed test leaves nothing listening behind. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(nfd, 0);
        dup2(ofd, 1);
        dup2(efd, 2);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (env->nofile > 0) {
            struct rlimit rl = {(rlim_t)env->nofile, (rlim_t)env->nofile};
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
                _exit(127);
        }
        execv(argv[0], argv);
        int e = errno;
        if (write(ep[1], &e, sizeof(e)) < 0)
            _exit(127);
        _exit(127);
    }
    close(ep[1]);
    close(ofd);
    close(efd);
    close(nfd);
    int e = 0;
    ssize_t n;
    while ((n = read(ep[0], &e, sizeof(e))) < 0 && errno == EINTR) {
    }
    close(ep[0]);
    if (n == (ssize_t)sizeof(e)) {
        waitpid(pid, NULL, 0);
        die("exec %s: %s", argv[0], strerror(e));
    }
    p->pid = pid;
}

int th_wait_exit(th_proc_t *p, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    while (!reap(p)) {
        if (now_ms() >= end)
            return -1;
        nap_ms(5);
    }
    return p->status;
}

/* th_stop without failing: returns the status, or -1 after having had to SIGKILL it. */
static int stop_quiet(th_proc_t *p, int sig, int timeout_ms)
{
    if (p->pid <= 0)
        return p->status;
    kill(p->pid, sig);
    int st = th_wait_exit(p, timeout_ms);
    if (st >= 0)
        return st;
    kill(p->pid, SIGKILL);
    int raw;
    waitpid(p->pid, &raw, 0);
    p->pid = 0;
    p->status = decode_status(raw);
    return -1;
}

int th_stop(th_proc_t *p, int sig, int timeout_ms)
{
    int st = stop_quiet(p, sig, timeout_ms);
    if (st < 0) {
        th_dump_file(p->err);
        die("%s did not exit within %d ms of signal %d; killed", p->name, timeout_ms, sig);
    }
    return st;
}

char *th_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return th_strdup("");
    size_t cap = 4096, len = 0;
    char *s = th_alloc(cap);
    size_t n;
    while ((n = fread(s + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0)
            s = th_realloc(s, cap *= 2);
    }
    fclose(f);
    s[len] = '\0';
    return s;
}

char *th_write_file(th_env_t *env, const char *name, const char *text)
{
    char *path = th_fmt("%s/%s", env->dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0)
        die("write %s: %s", path, strerror(errno));
    return path;
}

void th_dump_file(const char *path)
{
    char *s = th_slurp(path);
    fprintf(stderr, "----- %s -----\n%s%s----- end of %s -----\n", path, s, *s && s[strlen(s) - 1] != '\n' ? "\n" : "",
            path);
    th_free(s);
}

void th_run(th_env_t *env, th_run_t *r, char *const argv[])
{
    th_proc_t p;
    char name[32];
    snprintf(name, sizeof(name), "run-%d", env->nruns++);
    th_spawn(env, &p, name, argv);
    if (th_wait_exit(&p, TH_TIMEOUT_MS) < 0) {
        kill(p.pid, SIGKILL);
        waitpid(p.pid, NULL, 0);
        die("%s did not finish within %d ms", argv[0], TH_TIMEOUT_MS);
    }
    r->status = p.status;
    r->out = th_slurp(p.out);
    r->err = th_slurp(p.err);
}

/* --- weir and upstreams ------------------------------------------------------------------------------------------- */

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

const char *th_weir_bin(void)
{
    return env_or("WEIR_BIN", "build/weir");
}

const char *th_upstream_bin(void)
{
    return env_or("WEIR_UPSTREAM_BIN", "build/weir-upstream");
}

const char *th_weirctl_bin(void)
{
    return env_or("WEIRCTL_BIN", "build/weirctl");
}

bool th_has_sanitizer_report(const char *text)
{
    static const char *const marks[] = {"ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                                        "SUMMARY: UndefinedBehaviorSanitizer", "WARNING: ThreadSanitizer"};
    for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++)
        if (strstr(text, marks[i]) != NULL)
            return true;
    return false;
}

void th_assert_clean_log(const char *path)
{
    char *s = th_slurp(path);
    bool bad = th_has_sanitizer_report(s);
    th_free(s);
    if (bad) {
        th_dump_file(path);
        die("sanitizer report in %s", path);
    }
}

int th_upstream_start(th_env_t *env, const char *name)
{
    if (env->nup >= TH_MAX_UPSTREAMS)
        die("too many upstreams");
    int i = env->nup;
    th_upstream_t *u = &env->up[i];
    u->port = th_free_port();
    snprintf(u->addr, sizeof(u->addr), "127.0.0.1:%d", u->port);
    char pname[32];
    snprintf(pname, sizeof(pname), "upstream-%d-%s", i, name);
    char *argv[] = {(char *)th_upstream_bin(), "--listen", u->addr, "--name", (char *)name, NULL};
    th_spawn(env, &u->proc, pname, argv);
    env->nup++;
    if (!th_wait_port(u->port, TH_TIMEOUT_MS, &u->proc)) {
        th_dump_file(u->proc.err);
        die("upstream %s did not listen on %s", name, u->addr);
    }
    return i;
}

void th_upstream_stop(th_env_t *env, int i)
{
    th_proc_t *p = &env->up[i].proc;
    int st = th_stop(p, SIGTERM, TH_TIMEOUT_MS);
    if (st != 0) {
        th_dump_file(p->err);
        die("%s exited with %d", p->name, st);
    }
    th_assert_clean_log(p->err);
}

static const char *arg_value(const char *const args[], const char *flag)
{
    const char *v = NULL;
    for (size_t i = 0; args[i] != NULL; i++)
        if (strcmp(args[i], flag) == 0 && args[i + 1] != NULL)
            v = args[i + 1];
    return v;
}

static int port_of(const char *hostport)
{
    const char *c = strrchr(hostport, ':');
    return c ? atoi(c + 1) : 0;
}

void th_weir_start(th_env_t *env, const char *const args[])
{
    if (env->weir.pid > 0)
        die("weir is already running");
    size_t n = 0;
    while (args[n] != NULL)
        n++;
    const char **argv = th_alloc((n + 12) * sizeof(*argv));
    size_t k = 0;
    argv[k++] = th_weir_bin();
    const char *v;
    if ((v = arg_value(args, "--listen")) != NULL) {
        env->port = port_of(v);
    } else {
        env->port = th_free_port();
        argv[k++] = "--listen";
        argv[k++] = th_fmt("127.0.0.1:%d", env->port);
    }
    if ((v = arg_value(args, "--admin")) != NULL) {
        env->admin_port = strcmp(v, "off") == 0 ? 0 : port_of(v);
    } else {
        env->admin_port = th_free_port();
        argv[k++] = "--admin";
        argv[k++] = th_fmt("127.0.0.1:%d", env->admin_port);
    }
    if ((v = arg_value(args, "--control")) != NULL) {
        snprintf(env->sock, sizeof(env->sock), "%s", v);
    } else {
        argv[k++] = "--control";
        argv[k++] = env->sock;
    }
    if (arg_value(args, "--workers") == NULL) { /* WEIR_TEST_WORKERS: the ThreadSanitizer run asks for more */
        argv[k++] = "--workers";
        argv[k++] = env_or("WEIR_TEST_WORKERS", "1");
    }
    for (size_t i = 0; i < n; i++)
        argv[k++] = args[i];
    argv[k] = NULL;
    th_spawn(env, &env->weir, "weir", (char *const *)argv);
    th_free(argv);
    if (!th_wait_port(env->port, TH_TIMEOUT_MS, &env->weir)) {
        th_dump_file(env->weir.err);
        if (env->weir.pid == 0)
            die("weir exited with status %d before listening", env->weir.status);
        die("weir did not listen on 127.0.0.1:%d within %d ms", env->port, TH_TIMEOUT_MS);
    }
}

void th_weir_startl(th_env_t *env, ...)
{
    const char *args[64];
    size_t n = 0;
    va_list ap;
    va_start(ap, env);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        if (n + 1 >= sizeof(args) / sizeof(args[0])) {
            va_end(ap);
            die("too many weir arguments");
        }
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    th_weir_start(env, args);
}

static bool weir_stop_check(th_env_t *env, int sig, int timeout_ms, char *why, size_t whylen)
{
    int st = sig == 0 ? th_wait_exit(&env->weir, timeout_ms) : stop_quiet(&env->weir, sig, timeout_ms);
    if (sig == 0 && st < 0) {
        kill(env->weir.pid, SIGKILL);
        th_wait_exit(&env->weir, TH_TIMEOUT_MS);
    }
    char *log = th_slurp(env->weir.err);
    bool report = th_has_sanitizer_report(log);
    th_free(log);
    if (st == 0 && !report)
        return true;
    th_dump_file(env->weir.err);
    if (st < 0)
        snprintf(why, whylen, "weir did not exit within %d ms of signal %d; killed", timeout_ms, sig);
    else if (st != 0)
        snprintf(why, whylen, "weir exited with status %d after signal %d", st, sig);
    else
        snprintf(why, whylen, "sanitizer report in weir's stderr (%s)", env->weir.err);
    return false;
}

void th_weir_stop_sig(th_env_t *env, int sig, int timeout_ms)
{
    if (env->weir.pid <= 0)
        die("weir is not running (status %d)", env->weir.status);
    char why[1024];
    if (!weir_stop_check(env, sig, timeout_ms, why, sizeof(why)))
        die("%s", why);
}

void th_weir_stop(th_env_t *env)
{
    th_weir_stop_sig(env, SIGTERM, TH_TIMEOUT_MS);
}

/* --- raw HTTP client ---------------------------------------------------------------------------------------------- */

th_conn_t *th_conn_open(int port)
{
    th_conn_t *c = th_conn_try_open(port);
    if (c == NULL)
        die("connect 127.0.0.1:%d: %s", port, strerror(errno));
    return c;
}

th_conn_t *th_conn_try_open(int port)
{
    if (nconns >= MAX_CONNS)
        die("too many open test connections");
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {TH_TIMEOUT_MS / 1000, 0}; /* bounds a send to a server that stopped reading */
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    th_conn_t *c = th_alloc(sizeof(*c));
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->cap = 16384;
    c->buf = th_alloc(c->cap);
    conns[nconns++] = c;
    return c;
}

void th_conn_close(th_conn_t *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < nconns; i++) {
        if (conns[i] == c) {
            conns[i] = conns[--nconns];
            break;
        }
    }
    if (c->fd >= 0)
        close(c->fd);
    th_free(c->buf);
    th_free(c);
}

int th_conn_send(th_conn_t *c, const void *data, size_t len)
{
    const char *p = data;
    if (c->fd < 0)
        return -1;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int th_conn_sendf(th_conn_t *c, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    char *s = vfmt(fmt, ap, &n);
    va_end(ap);
    int rc = th_conn_send(c, s, (size_t)n);
    th_free(s);
    return rc;
}

/* Reads what arrives before <deadline> into the buffer. Returns the byte count, 0 on close (c->eof set), -1 on
 * timeout. A connection reset counts as a close. */
static ssize_t conn_fill(th_conn_t *c, int64_t deadline)
{
    if (c->eof)
        return 0;
    if (c->off > 0 && c->off == c->len)
        c->off = c->len = 0;
    if (c->off > c->cap / 2) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    if (c->cap - c->len < 8192)
        c->buf = th_realloc(c->buf, c->cap *= 2);
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left < 0)
            left = 0;
        struct pollfd pf = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&pf, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return -1;
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (n <= 0) {
            /* Close our side too, as a client does on EOF: a server that lingers for the client's FIN after its
             * last response (a lingering close) is not kept waiting by the test. */
            c->eof = true;
            close(c->fd);
            c->fd = -1;
            return 0;
        }
        c->len += (size_t)n;
        return n;
    }
}

/* Makes at least <n> unread bytes available. Returns 0, or -1 on timeout or close. */
static int conn_need(th_conn_t *c, size_t n, int64_t deadline)
{
    while (c->len - c->off < n)
        if (conn_fill(c, deadline) <= 0)
            return -1;
    return 0;
}

/* Returns the length of the CRLF-terminated line at the read position (without CRLF), waiting for it; -1 on
 * timeout or close. */
static ssize_t conn_line(th_conn_t *c, int64_t deadline)
{
    for (;;) {
        char *eol = memmem(c->buf + c->off, c->len - c->off, "\r\n", 2);
        if (eol != NULL)
            return eol - (c->buf + c->off);
        if (conn_fill(c, deadline) <= 0)
            return -1;
    }
}

static void body_add(th_resp_t *r, size_t *cap, const char *p, size_t n)
{
    if (r->body_len + n + 1 > *cap) {
        while (r->body_len + n + 1 > *cap)
            *cap = *cap ? *cap * 2 : 4096;
        r->body = th_realloc(r->body, *cap);
    }
    memcpy(r->body + r->body_len, p, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
}

void th_resp_free(th_resp_t *r)
{
    th_free(r->head);
    th_free(r->body);
    memset(r, 0, sizeof(*r));
}

/* Parses the head at the read position (it is complete: <hl> bytes including the blank line) into <r>. */
static int parse_head(th_conn_t *c, size_t hl, th_resp_t *r)
{
    r->head = th_alloc(hl + 1);
    memcpy(r->head, c->buf + c->off, hl);
    r->head[hl] = '\0';
    c->off += hl;
    char *line = r->head, *eol = strstr(line, "\r\n");
    *eol = '\0';
    int major;
    if (sscanf(line, "HTTP/%d.%d %d", &major, &r->minor, &r->status) != 3 || major != 1)
        return -1;
    for (line = eol + 2; *line != '\0' && *line != '\r'; line = eol + 2) {
        eol = strstr(line, "\r\n");
        *eol = '\0';
        char *colon = strchr(line, ':');
        if (colon == NULL)
            return -1;
        if (r->nheaders >= TH_MAX_HEADERS)
            return -1;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        char *e = v + strlen(v);
        while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
            *--e = '\0';
        r->hname[r->nheaders] = line;
        r->hvalue[r->nheaders++] = v;
    }
    return 0;
}

static int read_one(th_conn_t *c, th_resp_t *r, bool head_request, int64_t deadline)
{
    th_resp_free(r);
    size_t cap = 0;
    body_add(r, &cap, "", 0);
    char *end;
    while ((end = memmem(c->buf + c->off, c->len - c->off, "\r\n\r\n", 4)) == NULL)
        if (conn_fill(c, deadline) <= 0)
            return -1;
    if (parse_head(c, (size_t)(end - (c->buf + c->off)) + 4, r) < 0)
        return -1;

    if (head_request || (r->status >= 100 && r->status < 200) || r->status == 204 || r->status == 304)
        return 0;
    const char *te = th_header(r, "transfer-encoding");
    const char *cl = th_header(r, "content-length");
    if (te != NULL && th_strcasestr(te, "chunked") != NULL) {
        r->chunked = true;
        for (;;) {
            ssize_t ll = conn_line(c, deadline);
            if (ll < 0)
                return -1;
            char *e;
            unsigned long long size = strtoull(c->buf + c->off, &e, 16);
            if (e == c->buf + c->off)
                return -1;
            c->off += (size_t)ll + 2;
            if (size == 0)
                break;
            if (conn_need(c, size + 2, deadline) < 0)
                return -1;
            body_add(r, &cap, c->buf + c->off, size);
            if (memcmp(c->buf + c->off + size, "\r\n", 2) != 0)
                return -1;
            c->off += size + 2;
        }
        ssize_t ll;
        while ((ll = conn_line(c, deadline)) > 0)
            c->off += (size_t)ll + 2; /* trailers */
        if (ll < 0)
            return -1;
        c->off += 2;
    } else if (cl != NULL) {
        char *e;
        unsigned long long n = strtoull(cl, &e, 10);
        if (e == cl)
            return -1;
        while (n > 0) {
            if (c->off == c->len && conn_fill(c, deadline) <= 0)
                return -1;
            size_t k = c->len - c->off < n ? c->len - c->off : (size_t)n;
            body_add(r, &cap, c->buf + c->off, k);
            c->off += k;
            n -= k;
        }
    } else {
        r->until_close = true;
        for (;;) {
            if (c->off < c->len) {
                body_add(r, &cap, c->buf + c->off, c->len - c->off);
                c->off = c->len;
            }
            ssize_t n = conn_fill(c, deadline);
            if (n == 0)
                break;
            if (n < 0)
                return -1;
        }
    }
    return 0;
}

int th_conn_read_response_any(th_conn_t *c, th_resp_t *r, bool head_request, int timeout_ms)
{
    return read_one(c, r, head_request, now_ms() + timeout_ms);
}

int th_conn_read_response(th_conn_t *c, th_resp_t *r, bool head_request, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    int ninterim = 0;
    for (;;) {
        if (read_one(c, r, head_request, deadline) < 0)
            return -1;
        if (r->status >= 200 || r->status == 101)
            break;
        ninterim++;
    }
    r->ninterim = ninterim;
    return 0;
}

bool th_conn_wait_closed(th_conn_t *c, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    while (!c->eof)
        if (conn_fill(c, deadline) < 0)
            return false;
    return true;
}

bool th_conn_closed_now(th_conn_t *c)
{
    while (!c->eof)
        if (conn_fill(c, now_ms()) < 0)
            return false;
    return true;
}

int th_http(int port, const char *raw, th_resp_t *r)
{
    th_conn_t *c = th_conn_open(port);
    int rc = th_conn_send(c, raw, strlen(raw));
    if (rc == 0)
        rc = th_conn_read_response(c, r, strncmp(raw, "HEAD ", 5) == 0, TH_TIMEOUT_MS);
    th_conn_close(c);
    return rc;
}

int th_try_get(int port, const char *path, th_resp_t *r)
{
    th_conn_t *c = th_conn_try_open(port);
    if (c == NULL)
        return -1;
    int rc = th_conn_sendf(c, "GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n", path);
    if (rc == 0)
        rc = th_conn_read_response(c, r, false, TH_TIMEOUT_MS);
    th_conn_close(c);
    return rc;
}

void th_get(int port, const char *path, th_resp_t *r)
{
    if (th_try_get(port, path, r) < 0)
        die("GET %s on port %d: no complete response", path, port);
}

const char *th_header(const th_resp_t *r, const char *name)
{
    for (int i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->hname[i], name) == 0)
            return r->hvalue[i];
    return NULL;
}

int th_header_count(const th_resp_t *r, const char *name)
{
    int n = 0;
    for (int i = 0; i < r->nheaders; i++)
        n += strcasecmp(r->hname[i], name) == 0;
    return n;
}

/* --- /echo dumps -------------------------------------------------------------------------------------------------- */

/* Returns the end of the echo dump's head (the position of its blank line's CRLFCRLF), or NULL. */
static const char *echo_head_end(const th_resp_t *r)
{
    if (r->body == NULL)
        return NULL;
    return memmem(r->body, r->body_len, "\r\n\r\n", 4);
}

bool th_echo_request_line(const th_resp_t *r, char *out, size_t outlen)
{
    const char *end = echo_head_end(r);
    if (end == NULL)
        return false;
    const char *eol = strstr(r->body, "\r\n");
    snprintf(out, outlen, "%.*s", (int)(eol - r->body), r->body);
    return true;
}

bool th_echo_header(const th_resp_t *r, const char *name, int nth, char *out, size_t outlen)
{
    const char *end = echo_head_end(r);
    if (end == NULL)
        return false;
    size_t nl = strlen(name);
    const char *line = strstr(r->body, "\r\n") + 2;
    while (line < end + 2) {
        const char *eol = strstr(line, "\r\n");
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':' && nth-- == 0) {
            const char *v = line + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            const char *e = eol;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            snprintf(out, outlen, "%.*s", (int)(e - v), v);
            return true;
        }
        line = eol + 2;
    }
    return false;
}

int th_echo_header_count(const th_resp_t *r, const char *name)
{
    char v[8];
    int n = 0;
    while (th_echo_header(r, name, n, v, sizeof(v)))
        n++;
    return n;
}

const char *th_echo_body(const th_resp_t *r, size_t *len)
{
    const char *end = echo_head_end(r);
    if (end == NULL)
        return NULL;
    *len = r->body_len - (size_t)(end + 4 - r->body);
    return end + 4;
}

long th_upstream_stat(th_env_t *env, int i, const char *path)
{
    th_resp_t r = {0};
    th_get(env->up[i].port, path, &r);
    if (r.status != 200)
        die("GET %s on upstream %d: status %d", path, i, r.status);
    long v = strtol(r.body, NULL, 10);
    th_resp_free(&r);
    return v;
}

bool th_upstream_wait_stat(th_env_t *env, int i, const char *path, long want)
{
    int64_t end = now_ms() + TH_TIMEOUT_MS;
    for (;;) {
        if (th_upstream_stat(env, i, path) == want)
            return true;
        if (now_ms() >= end)
            return false;
        nap_ms(5);
    }
}

bool th_pattern_ok(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != th_pattern_byte(i))
            return false;
    return true;
}

/* --- curl --------------------------------------------------------------------------------------------------------- */

int th_curl(th_env_t *env, th_resp_t *r, ...)
{
    char *hdrs = th_fmt("%s/curl-%d.headers", env->dir, env->nruns);
    char *body = th_fmt("%s/curl-%d.body", env->dir, env->nruns);
    const char *argv[64] = {"curl", "-sS", "--max-time", "10", "-D", hdrs, "-o", body};
    size_t n = 8;
    va_list ap;
    va_start(ap, r);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n + 1 < 64)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    /* curl is looked up on PATH; th_run execs a path, so resolve it here. */
    static const char *const dirs[] = {"/usr/bin/curl", "/usr/local/bin/curl", "/bin/curl"};
    for (size_t i = 0; i < 3; i++)
        if (access(dirs[i], X_OK) == 0) {
            argv[0] = dirs[i];
            break;
        }
    th_run_t run;
    th_run(env, &run, (char *const *)argv);
    th_resp_free(r);
    char *h = th_slurp(hdrs);
    /* Keep the last header block (after any 1xx). */
    char *last = NULL, *p = h, *e;
    while (strncmp(p, "HTTP/", 5) == 0 && (e = strstr(p, "\r\n\r\n")) != NULL) {
        last = p;
        p = e + 4;
    }
    if (last != NULL) {
        size_t hl = (size_t)(strstr(last, "\r\n\r\n") - last) + 4;
        th_conn_t fake = {.fd = -1, .buf = last, .len = hl, .cap = hl};
        if (parse_head(&fake, hl, r) < 0)
            r->status = 0;
    }
    th_free(h);
    size_t cap = 0;
    body_add(r, &cap, "", 0);
    char *b = th_slurp(body);
    FILE *f = fopen(body, "rb"); /* the length, since a body may hold NULs */
    long blen = 0;
    if (f != NULL) {
        fseek(f, 0, SEEK_END);
        blen = ftell(f);
        fclose(f);
    }
    body_add(r, &cap, b, (size_t)blen);
    th_free(b);
    return run.status;
}

/* --- shared steps of the HTTP tests --- */

/* Starts one upstream "stable" and weir ahead of it with the extra NULL-terminated flags. Returns the upstream. */
int th_start_stable(th_env_t *env, ...)
{
    int u = th_upstream_start(env, "stable");
    const char *args[32] = {"--stable", env->up[u].addr};
    size_t n = 2;
    va_list ap;
    va_start(ap, env);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(n < 31);
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    th_weir_start(env, args);
    return u;
}

/* Sends <raw> on <c> and reads one response into <r>; fails the test when none comes. */
void th_exchange_at(th_conn_t *c, const char *raw, th_resp_t *r, const char *file, int line)
{
    if (th_conn_send(c, raw, strlen(raw)) < 0 ||
        th_conn_read_response(c, r, strncmp(raw, "HEAD ", 5) == 0, TH_TIMEOUT_MS) < 0) {
        print_error("ERROR: no complete response to: %.120s\n", raw);
        _fail(file, line);
    }
}

/* A response made by weir itself: the status, and a short text body. */
void th_assert_own_response_at(const th_resp_t *r, int code, const char *file, int line)
{
    const char *ct = th_header(r, "content-type");
    bool printable = true;
    for (size_t i = 0; i < r->body_len; i++)
        printable &= (r->body[i] >= 0x20 && r->body[i] < 0x7f) || r->body[i] == '\n' || r->body[i] == '\r';
    if (r->status == code && r->body_len > 0 && r->body_len <= 512 && printable &&
        (ct == NULL || strncmp(ct, "text/", 5) == 0) && th_header(r, "x-upstream") == NULL)
        return;
    print_error("ERROR: want weir's own %d with a short text body; got %d, content-type %s, %zu body bytes: %.200s\n",
                code, r->status, ct ? ct : "(none)", r->body_len, r->body);
    _fail(file, line);
}

/* --- an endpoint that never completes a connect ------------------------------------------------------------- */

int th_blackhole(int *filler)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 0), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    *filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(*filler, (struct sockaddr *)&sa, sizeof(sa)), 0);
    /* check that it is one: a probe does not connect within 500 ms */
    int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int rc = connect(probe, (struct sockaddr *)&sa, sizeof(sa));
    bool hole = false;
    if (rc < 0 && errno == EINPROGRESS) {
        struct pollfd pf = {.fd = probe, .events = POLLOUT};
        hole = poll(&pf, 1, 500) == 0;
    }
    close(probe);
    if (!hole) {
        /* this kernel completes connections past a full accept queue: no blackhole to test against */
        close(*filler);
        close(fd);
        skip();
    }
    return fd;
}
