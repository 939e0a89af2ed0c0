/* weir: the process. Reads the configuration, builds the first route table, binds the listeners, starts the
 * workers and runs the main loop (signals, admin, drain) until the workers are done. */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/resource.h>

#include "common/macros.h"

#include "px/accesslog.h"
#include "px/admin.h"
#include "px/config.h"
#include "px/control.h"
#include "px/tls.h"
#include "px/cpus.h"
#include "px/log.h"
#include "px/resolve.h"
#include "px/server.h"
#include "px/stats.h"
#include "px/worker.h"
#include "rt/table.h"

px_server_t px_server;

static uv_loop_t main_loop;
static uv_signal_t sig_term, sig_int, sig_hup;
static uv_timer_t drain_timer;
static uv_async_t worker_done;
static atomic_uint nworkers_done;
static int exiting;

static int resolve(const px_hostport_t *hp, struct sockaddr_storage *ss, socklen_t *len, int passive)
{
    struct addrinfo hints, *res;
    char port[8];
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = passive ? AI_PASSIVE : 0;
    snprintf(port, sizeof(port), "%u", hp->port);
    if ((rc = getaddrinfo(hp->host, port, &hints, &res)) != 0)
        return rc;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* The first table: variants in declaration order (canary and stable always exist), weights, sticky. */
static rt_table_t *build_table(const px_config_t *cfg)
{
    rt_table_t *t = rt_table_new();
    const char *err = NULL;
    size_t i;

    if (t == NULL)
        return NULL;
    for (i = 0; i < cfg->nupstreams; i++)
        if (rt_table_add_variant(t, cfg->upstreams[i].variant) < 0)
            goto fail;
    for (i = 0; i < cfg->nweights; i++) {
        const char *name = cfg->weights[i].variant;
        if (rt_table_set_weights(t, &name, &cfg->weights[i].bp, 1, &err) != 0) {
            fprintf(stderr, "weir: weight %s: %s\n", name, err);
            goto fail;
        }
    }
    if (rt_table_set_sticky(t, (enum rt_sticky_kind)cfg->sticky, cfg->sticky_name) != 0 ||
        rt_table_set_salt(t, cfg->sticky_salt) != 0)
        goto fail;
    return t;
fail:
    rt_table_free(t);
    return NULL;
}

/* One listening socket per worker and address, all with SO_REUSEPORT so the kernel spreads connections among the
 * workers, and listening before any worker starts. The <first> socket of an address is bound without SO_REUSEPORT
 * and given it only after the bind: that bind fails when another process listens on the address, whether with
 * SO_REUSEPORT or not, so weir never joins someone else's group (SPEC §1). The bind is the check, so nothing can take
 * the address between a look and a claim. The kernel forms the group at listen(), by which time the first socket has
 * SO_REUSEPORT and the other workers' sockets join it. */
static int bind_listener(const px_hostport_t *hp, int first)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char name[PX_HOST_MAX + 16];
    int fd, one = 1, rc;

    px_format_hostport(hp, name, sizeof(name));
    if ((rc = resolve(hp, &ss, &len, 1)) != 0) {
        fprintf(stderr, "weir: listen %s: %s\n", name, gai_strerror(rc));
        return -1;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (!first && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        (ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
        bind(fd, (struct sockaddr *)&ss, len) != 0 ||
        (first && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) || listen(fd, 4096) != 0) {
        fprintf(stderr, "weir: listen %s: %s\n", name, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Servers raise their descriptor limit to the hard limit at start (nginx's worker_rlimit_nofile, HAProxy): the soft
 * limit is a default for programs that do not know how many they need. Returns the soft limit in effect. */
static uint64_t raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl.rlim_cur = rl.rlim_max;
    }
    return rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
}

/* Descriptors kept for everything but client, upstream and mirrored connections: stdio, the main loop, the admin and
 * control listeners and a few of their clients, the access log, the state file, DNS lookups. Not the admin and control
 * connection caps (hundreds): a flood of those competes with the workers, whose accept then waits (worker.c). */
#define FD_RESERVE 32
/* Per worker, besides its listeners: its loop's epoll and eventfd descriptors and libuv's spare one. */
#define FD_PER_WORKER 3

/* Lowers max-connections (and mirror-max-inflight) to what <nofile> descriptors can hold, as HAProxy sizes maxconn to
 * the limit, so that a full worker stops accepting before accept(), connect() or a copy fails for lack of a
 * descriptor. Writes what it changed to <why> ("" when nothing) and returns 0, or returns -1 with the reason in
 * <why> when the limit leaves no room for one connection and one copy per worker. */
static int fit_nofile(px_config_t *cfg, unsigned nworkers, uint64_t nofile, char *why, size_t whylen)
{
    uint64_t fixed = FD_RESERVE + nworkers * (FD_PER_WORKER + cfg->nlisten);
    uint64_t budget = nofile > fixed ? nofile - fixed : 0, mirrors, conns;
    char what[160] = "";
    size_t n;

    why[0] = '\0';
    if (budget < 3 * (uint64_t)nworkers) {
        snprintf(why, whylen, "RLIMIT_NOFILE is %llu: too few file descriptors for %u worker%s (%llu at least)",
                 (unsigned long long)nofile, nworkers, nworkers == 1 ? "" : "s",
                 (unsigned long long)(fixed + 3 * (uint64_t)nworkers));
        return -1;
    }
    /* Mirrored copies get at most a quarter of what is left: they are the first thing to give up under load. */
    mirrors = cfg->mirror_max_inflight * nworkers;
    if (mirrors > budget / 4) {
        uint64_t per = MAX(budget / 4 / nworkers, 1);
        snprintf(what, sizeof(what), "mirror-max-inflight %llu lowered to %llu",
                 (unsigned long long)cfg->mirror_max_inflight, (unsigned long long)per);
        cfg->mirror_max_inflight = per;
        mirrors = per * nworkers;
    }
    /* Each client connection may hold an upstream connection too. */
    conns = MAX(budget > mirrors ? (budget - mirrors) / 2 : 0, nworkers);
    if (cfg->max_connections > conns) {
        n = strlen(what);
        snprintf(what + n, sizeof(what) - n, "%smax-connections %llu lowered to %llu", n > 0 ? " and " : "",
                 (unsigned long long)cfg->max_connections, (unsigned long long)conns);
        cfg->max_connections = conns;
    }
    if (what[0] != '\0')
        snprintf(why, whylen,
                 "%s: RLIMIT_NOFILE is %llu; %llu descriptors are kept for listeners, workers, control, admin and "
                 "logs, %llu for mirrored copies, and each connection takes two (client and upstream)",
                 what, (unsigned long long)nofile, (unsigned long long)fixed, (unsigned long long)mirrors);
    return 0;
}

static void close_main_handles(void)
{
    if (exiting)
        return;
    exiting = 1;
    px_resolve_stop();
    px_admin_stop();
    px_control_stop();
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_hup, NULL);
    uv_close((uv_handle_t *)&drain_timer, NULL);
    uv_close((uv_handle_t *)&worker_done, NULL);
}

static void on_worker_done(uv_async_t *a)
{
    (void)a;
    if (atomic_load(&nworkers_done) == px_server.nworkers)
        close_main_handles();
}

static void on_drain_timeout(uv_timer_t *t)
{
    unsigned i;
    (void)t;

    px_log(PX_LOG_WARN, "main", "drain-timeout reached: closing the remaining connections");
    for (i = 0; i < px_server.nworkers; i++)
        px_worker_request(&px_server.workers[i], 2);
}

static void on_signal(uv_signal_t *s, int signum)
{
    unsigned i;

    if (signum == SIGHUP) {
        if (px_accesslog_reopen() != 0)
            px_log(PX_LOG_ERROR, "main", "SIGHUP: cannot reopen the access log: %s", strerror(errno));
        else
            px_log(PX_LOG_INFO, "main", "SIGHUP: access log reopened");
        px_control_tls_reload();
        return;
    }
    (void)s;
    if (atomic_exchange(&px_server.draining, 1))
        return;
    px_log(PX_LOG_INFO, "main", "%s: draining (up to %llu ms)", signum == SIGTERM ? "SIGTERM" : "SIGINT",
           (unsigned long long)px_server.cfg->drain_timeout_ms);
    for (i = 0; i < px_server.nworkers; i++)
        px_worker_request(&px_server.workers[i], 1);
    uv_timer_start(&drain_timer, on_drain_timeout, px_server.cfg->drain_timeout_ms, 0);
}

/* Worker threads report their end through this wrapper around their loop. */
static void *watch_worker(void *arg);

int main(int argc, char **argv)
{
    static px_config_t cfg;
    char err[512], fitted[512];
    rt_table_t *table;
    uint64_t nofile;
    unsigned i, j, nworkers;
    int rc, *fds;

    px_config_init(&cfg);
    rc = px_config_load(&cfg, argc, argv, err, sizeof(err));
    if (rc == PX_CONFIG_HELP || rc == PX_CONFIG_VERSION) {
        px_config_free(&cfg);
        return 0;
    }
    if (rc != PX_CONFIG_OK) {
        fprintf(stderr, "weir: %s\n", err);
        px_config_free(&cfg);
        return 2;
    }
    px_log_level = cfg.log_level;
    if ((table = build_table(&cfg)) == NULL) {
        px_config_free(&cfg);
        return 2;
    }
    px_server.cfg = &cfg;
    if ((table = px_control_load_state(table, err, sizeof(err))) == NULL) {
        fprintf(stderr, "weir: %s\n", err);
        px_config_free(&cfg);
        return 2;
    }
    if (px_tls_check_config(&cfg, err, sizeof(err)) != 0) { /* certificates load and match their keys */
        fprintf(stderr, "weir: %s\n", err);
        rt_table_free(table);
        px_config_free(&cfg);
        return 2;
    }
    if (cfg.test_only) {
        fprintf(stderr, "weir: configuration ok\n");
        rt_table_free(table);
        px_config_free(&cfg);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    nofile = raise_nofile();
    /* From here on, a failure to start returns without unwinding: what is allocated hangs off px_server, a global,
     * and the process ends. */
    atomic_store(&px_server.table, table);
    if (px_resolve_init(table) != 0)
        return 1;
    /* One I/O buffer holds a whole header block plus room to start its body, and is at least PX_IO_BUF_MIN: a body
     * is relayed one read per write, and with 64 KiB responses 20 KiB buffers cost a fifth more CPU per request
     * than 64 KiB ones (bench/RESULTS.md). Idle connections hold no buffer; the pages of a buffer are only
     * resident once bytes were read into them. */
    px_server.bufsize = cfg.max_header_bytes + 4096 > PX_IO_BUF_MIN ? cfg.max_header_bytes + 4096 : PX_IO_BUF_MIN;
    nworkers = cfg.workers ? cfg.workers : px_cpus_usable();
    if (nworkers == 0)
        nworkers = 1;
    px_server.nworkers = nworkers;
    px_server.workers = calloc(nworkers, sizeof(px_worker_t));
    if (px_server.workers == NULL)
        return 1;
    if (fit_nofile(&cfg, nworkers, nofile, fitted, sizeof(fitted)) != 0) {
        fprintf(stderr, "weir: %s\n", fitted);
        return 1;
    }

    if ((rc = uv_loop_init(&main_loop)) != 0) {
        fprintf(stderr, "weir: event loop: %s\n", uv_strerror(rc));
        return 1;
    }
    /* Signals are caught before any listener accepts: a client may connect, and a supervisor send SIGTERM, as soon
     * as listen() returns. Their callbacks only run once the loop runs, after the workers are set up. */
    if ((rc = uv_signal_init(&main_loop, &sig_term)) != 0 || (rc = uv_signal_init(&main_loop, &sig_int)) != 0 ||
        (rc = uv_signal_init(&main_loop, &sig_hup)) != 0 ||
        (rc = uv_signal_start(&sig_term, on_signal, SIGTERM)) != 0 ||
        (rc = uv_signal_start(&sig_int, on_signal, SIGINT)) != 0 ||
        (rc = uv_signal_start(&sig_hup, on_signal, SIGHUP)) != 0 ||
        (rc = uv_timer_init(&main_loop, &drain_timer)) != 0 ||
        (rc = uv_async_init(&main_loop, &worker_done, on_worker_done)) != 0) {
        fprintf(stderr, "weir: signals and timers: %s\n", uv_strerror(rc));
        return 1;
    }
    px_server.start_ms = uv_hrtime() / 1000000;
    if (px_accesslog_open(cfg.access_log) != 0) {
        fprintf(stderr, "weir: access-log %s: %s\n", cfg.access_log, strerror(errno));
        return 1;
    }
    if (px_control_start(&main_loop, err, sizeof(err)) != 0) {
        fprintf(stderr, "weir: %s\n", err);
        return 1;
    }
    if (cfg.has_admin && (rc = px_admin_start(&main_loop, &cfg.admin)) != 0) {
        char name[PX_HOST_MAX + 16];
        px_format_hostport(&cfg.admin, name, sizeof(name));
        fprintf(stderr, "weir: admin %s: %s\n", name, uv_strerror(rc));
        return 1;
    }
    if ((fds = calloc(cfg.nlisten, sizeof(int))) == NULL)
        return 1;
    for (i = 0; i < nworkers; i++) {
        for (j = 0; j < cfg.nlisten; j++)
            if ((fds[j] = bind_listener(&cfg.listen[j], i == 0)) < 0)
                break;
        if (j < cfg.nlisten || (rc = px_worker_init(&px_server.workers[i], i, fds, (unsigned)cfg.nlisten)) != 0) {
            if (j == cfg.nlisten)
                fprintf(stderr, "weir: worker %u: %s\n", i, uv_strerror(rc));
            free(fds);
            return 1;
        }
    }
    free(fds);
    px_resolve_start(&main_loop, cfg.resolve_interval_ms);
    if (fitted[0] != '\0')
        px_log(PX_LOG_WARN, "main", "%s", fitted);
    for (i = 0; i < nworkers; i++) {
        pthread_t th;
        if (pthread_create(&th, NULL, watch_worker, &px_server.workers[i]) != 0) {
            fprintf(stderr, "weir: cannot start worker %u\n", i);
            return 1;
        }
        px_server.workers[i].thread = th;
    }
    {
        char name[PX_HOST_MAX + 16];
        px_format_hostport(&cfg.listen[0], name, sizeof(name));
        px_log(PX_LOG_INFO, "main", "weir %s listening on %s (%zu address%s, %u worker%s)", WEIR_VERSION, name,
               cfg.nlisten, cfg.nlisten == 1 ? "" : "es", nworkers, nworkers == 1 ? "" : "s");
    }
    uv_run(&main_loop, UV_RUN_DEFAULT);

    for (i = 0; i < nworkers; i++)
        px_worker_join(&px_server.workers[i]);
    uv_run(&main_loop, UV_RUN_NOWAIT); /* close callbacks of the last handles */
    uv_loop_close(&main_loop);
    px_control_dispose();
    px_accesslog_close();
    for (i = 0; i < nworkers; i++)
        px_stats_free(px_server.workers[i].stats);
    rt_table_free(atomic_load(&px_server.table));
    px_resolve_dispose();
    free(px_server.workers);
    px_log(PX_LOG_INFO, "main", "stopped");
    px_config_free(&cfg);
    return 0;
}

static void *watch_worker(void *arg)
{
    px__worker_main(arg);
    atomic_fetch_add(&nworkers_done, 1);
    uv_async_send(&worker_done);
    return NULL;
}
