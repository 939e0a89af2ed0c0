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

#include "px/accesslog.h"
#include "px/admin.h"
#include "px/config.h"
#include "px/control.h"
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

/* One listening socket per worker and address, all bound with SO_REUSEPORT so the kernel spreads connections. */
static int bind_listener(const px_hostport_t *hp)
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
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        (ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
        bind(fd, (struct sockaddr *)&ss, len) != 0) {
        fprintf(stderr, "weir: listen %s: %s\n", name, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
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
    char err[512];
    rt_table_t *table;
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
    if (cfg.test_only) {
        fprintf(stderr, "weir: configuration ok\n");
        rt_table_free(table);
        px_config_free(&cfg);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
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

    uv_loop_init(&main_loop);
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
        fprintf(stderr, "weir: admin %s:%u: %s\n", cfg.admin.host, cfg.admin.port, uv_strerror(rc));
        return 1;
    }
    if ((fds = calloc(cfg.nlisten, sizeof(int))) == NULL)
        return 1;
    for (i = 0; i < nworkers; i++) {
        for (j = 0; j < cfg.nlisten; j++)
            if ((fds[j] = bind_listener(&cfg.listen[j])) < 0)
                break;
        if (j < cfg.nlisten || (rc = px_worker_init(&px_server.workers[i], i, fds, (unsigned)cfg.nlisten)) != 0) {
            if (j == cfg.nlisten)
                fprintf(stderr, "weir: worker %u: %s\n", i, uv_strerror(rc));
            free(fds);
            return 1;
        }
    }
    free(fds);
    uv_signal_init(&main_loop, &sig_term);
    uv_signal_init(&main_loop, &sig_int);
    uv_signal_init(&main_loop, &sig_hup);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_hup, on_signal, SIGHUP);
    uv_timer_init(&main_loop, &drain_timer);
    px_resolve_start(&main_loop, cfg.resolve_interval_ms);
    uv_async_init(&main_loop, &worker_done, on_worker_done);
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
