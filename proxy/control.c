/* The control listener (SPEC §4): a Unix stream socket and an optional TCP listener with a token handshake, on the
 * main thread's loop. Requests are parsed and applied by the router (rt_ctl_exec); this file does the I/O, the
 * publication of new tables to the workers, the state file, and the replies that need process data.
 *
 * Publication. A change yields a new immutable table. It is written to the state file, stored in px_server.table,
 * and every worker is woken; each acknowledges the newest generation from its loop, between requests. The reply
 * goes out once every worker acknowledged (or exited), and an old table is freed once every worker acknowledged a
 * newer one: no decision can still be reading it. While a change waits for acknowledgements, its connection
 * processes no further request, so pipelined requests are answered in order. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common/macros.h"
#include "px/control.h"
#include "px/log.h"
#include "px/resolve.h"
#include "px/server.h"
#include "px/stats.h"
#include "px/worker.h"
#include "rt/ctl.h"

#define CTL_READ_MAX 65536 /* unanswered input kept per connection before we stop reading */

typedef struct ctl_conn_s ctl_conn_t;
struct ctl_conn_s {
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_write_t wreq;
    ctl_conn_t *next, *prev;
    rt_buf_t in;       /* received, not yet processed */
    rt_buf_t out;      /* replies being built */
    rt_buf_t sending;  /* replies in flight */
    uint64_t wait_gen; /* a change waits for every worker to reach this generation; 0 when none */
    unsigned is_tcp : 1, authed : 1, discarding : 1, writing : 1, eof : 1, closing : 1, reading : 1;
};

/* A table replaced by a newer one, freed once every worker acknowledged <replaced_by> or later. */
typedef struct retired_s {
    struct retired_s *next;
    rt_table_t *table;
    uint64_t replaced_by;
} retired_t;

static uv_loop_t *loop;
static uv_pipe_t unix_listener;
static uv_tcp_t tcp_listener;
static int has_unix, has_tcp;
static uv_async_t ack_async;
static ctl_conn_t *conns;
static retired_t *retired;
static char *token;
static size_t token_len;
static char *unix_path;

static void process(ctl_conn_t *c);
static void ctl_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void ctl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* ---- acknowledgements and retirement ---- */

static uint64_t min_acked(void)
{
    uint64_t min = UINT64_MAX;
    unsigned i;

    for (i = 0; i < px_server.nworkers; i++) {
        px_worker_t *w = &px_server.workers[i];
        uint64_t g;
        if (atomic_load(&w->exited))
            continue;
        g = atomic_load(&w->acked_gen);
        if (g < min)
            min = g;
    }
    return min;
}

static void on_ack(uv_async_t *a)
{
    uint64_t min = min_acked();
    retired_t **pp = &retired;
    ctl_conn_t *c, *next;
    (void)a;

    while (*pp != NULL) {
        retired_t *r = *pp;
        if (r->replaced_by <= min) {
            *pp = r->next;
            rt_table_free(r->table);
            free(r);
        } else {
            pp = &r->next;
        }
    }
    for (c = conns; c != NULL; c = next) {
        next = c->next;
        if (c->wait_gen != 0 && c->wait_gen <= min) {
            c->wait_gen = 0;
            process(c);
        }
    }
}

/* Writes the state file: temporary file, fsync, rename over the old one, fsync the directory. */
static int write_state(const rt_table_t *t, char *err, size_t errlen)
{
    const char *path = px_server.cfg->state_file;
    rt_buf_t text = RT_BUF_INIT;
    char tmp[4096], dir[4096];
    char *slash;
    int fd, rc = -1;

    if (path == NULL)
        return 0;
    if (rt_ctl_dump_state(t, &text) != 0) {
        snprintf(err, errlen, "cannot write the state: out of memory or a salt with a line break");
        return -1;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, text.p, text.len) != (ssize_t)text.len || fsync(fd) != 0) {
        snprintf(err, errlen, "state file %.256s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        goto out;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "state file %.256s: %s", path, strerror(errno));
        goto out;
    }
    snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash != NULL)
        *slash = '\0';
    else
        snprintf(dir, sizeof(dir), ".");
    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
        fsync(fd);
        close(fd);
    }
    rc = 0;
out:
    rt_buf_dispose(&text);
    return rc;
}

/* Makes <next> the current table. Returns the generation every worker must acknowledge before the reply. */
static uint64_t publish(rt_table_t *next)
{
    rt_table_t *old = atomic_exchange_explicit(&px_server.table, next, memory_order_acq_rel);
    retired_t *r = malloc(sizeof(*r));
    unsigned i;

    if (r == NULL) {
        px_log(PX_LOG_ERROR, "control", "out of memory: a replaced table is kept");
    } else {
        r->table = old;
        r->replaced_by = rt_table_generation(next);
        r->next = retired;
        retired = r;
    }
    for (i = 0; i < px_server.nworkers; i++)
        px_worker_request(&px_server.workers[i], 0);
    return rt_table_generation(next);
}

/* ---- replies that need process data ---- */

static void reply_status(rt_buf_t *out)
{
    const rt_table_t *t = atomic_load(&px_server.table);
    uint64_t now = uv_hrtime() / 1000000;

    rt_buf_printf(out, "ok\nversion %s\nuptime %llu\nworkers %u\ngeneration %llu\nconnections %llu\n\n", WEIR_VERSION,
                  (unsigned long long)((now - px_server.start_ms) / 1000), px_server.nworkers,
                  (unsigned long long)rt_table_generation(t), (unsigned long long)atomic_load(&px_server.ndownstream));
}

/* ---- connection I/O ---- */

static void on_closed(uv_handle_t *h)
{
    ctl_conn_t *c = h->data;

    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    rt_buf_dispose(&c->in);
    rt_buf_dispose(&c->out);
    rt_buf_dispose(&c->sending);
    free(c);
}

static void do_close(ctl_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->h, on_closed);
}

static void flush(ctl_conn_t *c);

static void on_written(uv_write_t *req, int status)
{
    ctl_conn_t *c = req->data;

    c->writing = 0;
    rt_buf_reset(&c->sending);
    if (c->closing || status < 0) {
        do_close(c);
        return;
    }
    flush(c);
    if (!c->writing && c->eof && c->in.len == 0 && c->wait_gen == 0)
        do_close(c);
}

static void flush(ctl_conn_t *c)
{
    rt_buf_t tmp;
    uv_buf_t b;

    if (c->writing || c->out.len == 0 || c->closing)
        return;
    tmp = c->sending;
    c->sending = c->out;
    c->out = tmp;
    b = uv_buf_init(c->sending.p, (unsigned)c->sending.len);
    c->writing = 1;
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->h, &b, 1, on_written) != 0) {
        c->writing = 0;
        do_close(c);
    }
}

/* Executes one request line; returns 0 to go on with the next, 1 to stop (waiting or closing). */
static int exec_line(ctl_conn_t *c, const char *line, size_t len)
{
    const rt_table_t *cur = atomic_load(&px_server.table);
    rt_table_t *next = NULL;
    size_t before = c->out.len;
    int op = rt_ctl_exec(cur, line, len, &next, &c->out);
    char err[1024];

    if (c->is_tcp && !c->authed) {
        /* SPEC §4: on TCP the first request must be `auth TOKEN`; anything else closes the connection. */
        rt_buf_t tok = RT_BUF_INIT;
        int ok = op == RT_CTL_AUTH && rt_ctl_auth_token(line, len, &tok) == 0 && tok.len == token_len &&
                 CRYPTO_memcmp(tok.p, token, token_len) == 0;
        rt_buf_dispose(&tok);
        rt_table_free(next);
        rt_buf_truncate(&c->out, before);
        if (!ok) {
            px_log(PX_LOG_WARN, "control", "tcp client failed to authenticate");
            rt_buf_puts(&c->out, "error: authentication failed\n\n");
            flush(c);
            c->eof = 1;
            c->in.len = 0;
            return 1;
        }
        c->authed = 1;
        rt_buf_puts(&c->out, "ok\n\n");
        return 0;
    }
    switch (op) {
    case RT_CTL_ERROR:
        if (c->out.len == before) { /* out of memory */
            do_close(c);
            return 1;
        }
        return 0;
    case RT_CTL_SHOW_STATS:
        px_stats_text(&c->out);
        return 0;
    case RT_CTL_SHOW_STATS_JSON:
        rt_buf_puts(&c->out, "ok\n");
        px_stats_json(&c->out, 0);
        rt_buf_puts(&c->out, "\n\n");
        return 0;
    case RT_CTL_RESET_STATS:
        px_stats_reset();
        rt_buf_puts(&c->out, "ok\n\n");
        return 0;
    case RT_CTL_STATUS:
        reply_status(&c->out);
        return 0;
    case RT_CTL_AUTH:
        rt_buf_puts(&c->out, "ok\n\n"); /* already authenticated, or a Unix socket that needs none */
        return 0;
    case RT_CTL_SHOW_UPSTREAMS:
        if (px_resolve_show(cur, &c->out) != 0) {
            do_close(c);
            return 1;
        }
        return 0;
    default:
        break;
    }
    if (next == NULL)
        return 0; /* a read, or a change that leaves the routing as it was */
    if (write_state(next, err, sizeof(err)) != 0) {
        px_log(PX_LOG_ERROR, "control", "%s", err);
        rt_table_free(next);
        rt_buf_truncate(&c->out, before);
        rt_buf_printf(&c->out, "error: %s\n\n", err);
        return 0;
    }
    px_log(PX_LOG_INFO, "control", "generation %llu: %.*s", (unsigned long long)rt_table_generation(next),
           (int)MIN(len, 200), line);
    px_resolve_apply(next); /* endpoints first: a worker that sees the table finds its variants' addresses */
    c->wait_gen = publish(next);
    if (min_acked() >= c->wait_gen)
        c->wait_gen = 0;
    return c->wait_gen != 0;
}

static void update_reading(ctl_conn_t *c)
{
    int want = !c->closing && !c->eof && c->in.len < CTL_READ_MAX;

    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->h, ctl_alloc, ctl_read) == 0)
            c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->h);
        c->reading = 0;
    }
}

/* Answers every complete request line received, in order, until one waits for the workers. */
static void process(ctl_conn_t *c)
{
    while (!c->closing && c->wait_gen == 0 && c->in.len > 0) {
        size_t linelen;
        long n;
        if (c->discarding) {
            int found;
            size_t k = rt_ctl_skip_line(c->in.p, c->in.len, &found);
            rt_buf_consume(&c->in, k);
            if (!found)
                break;
            c->discarding = 0;
            continue;
        }
        n = rt_ctl_next_line(c->in.p, c->in.len, &linelen);
        if (n == 0)
            break;
        if (n < 0) {
            rt_buf_puts(&c->out, RT_CTL_REPLY_TOO_LONG);
            c->discarding = 1;
            continue;
        }
        {
            int stop = exec_line(c, c->in.p, linelen);
            if (!c->closing)
                rt_buf_consume(&c->in, (size_t)n);
            if (stop)
                break;
        }
    }
    if (c->closing)
        return;
    flush(c);
    if (c->eof && c->wait_gen == 0 && !c->writing) {
        do_close(c);
        return;
    }
    update_reading(c);
}

static void ctl_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ctl_conn_t *c = h->data;
    (void)suggested;

    if (rt_buf_reserve(&c->in, 4096) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(c->in.p + c->in.len, (unsigned)(c->in.cap - c->in.len - 1));
}

static void ctl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ctl_conn_t *c = s->data;
    (void)buf;

    if (c->closing)
        return;
    if (nread > 0) {
        c->in.len += (size_t)nread;
        c->in.p[c->in.len] = '\0';
    } else if (nread < 0) {
        /* EOF: answer what was received, then close. */
        c->eof = 1;
        uv_read_stop(s);
        c->reading = 0;
    }
    process(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    ctl_conn_t *c;
    int rc;

    if (status < 0 || (c = calloc(1, sizeof(*c))) == NULL)
        return;
    c->is_tcp = server == (uv_stream_t *)&tcp_listener;
    if (c->is_tcp)
        uv_tcp_init(loop, &c->h.tcp);
    else
        uv_pipe_init(loop, &c->h.pipe, 0);
    c->h.tcp.data = c;
    c->next = conns;
    if (conns != NULL)
        conns->prev = c;
    conns = c;
    if ((rc = uv_accept(server, (uv_stream_t *)&c->h)) != 0) {
        do_close(c);
        return;
    }
    update_reading(c);
}

/* ---- listeners ---- */

/* A socket file left by a process that is gone is replaced; one a live process answers on is not ours to take. */
static int claim_path(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    struct stat st;
    int fd, rc;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "control %s: path too long", path);
        return -1;
    }
    if (lstat(path, &st) != 0)
        return 0;
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "control %s: exists and is not a socket", path);
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path));
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    rc = fd >= 0 ? connect(fd, (struct sockaddr *)&sa, sizeof(sa)) : -1;
    if (fd >= 0)
        close(fd);
    if (rc == 0) {
        snprintf(err, errlen, "control %s: in use by a running process", path);
        return -1;
    }
    if (unlink(path) != 0) {
        snprintf(err, errlen, "control %s: cannot remove stale socket: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int read_token(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char buf[4096];
    size_t n;

    if (f == NULL) {
        snprintf(err, errlen, "control-token-file %s: %s", path, strerror(errno));
        return -1;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        n--;
    if (n == 0) {
        snprintf(err, errlen, "control-token-file %s: empty", path);
        return -1;
    }
    buf[n] = '\0';
    token = strdup(buf);
    token_len = n;
    return token == NULL ? -1 : 0;
}

int px_control_start(uv_loop_t *l, char *err, size_t errlen)
{
    const px_config_t *cfg = px_server.cfg;
    mode_t old;
    int rc;

    loop = l;
    uv_async_init(loop, &ack_async, on_ack);
    px_server.on_ack = &ack_async;
    if (cfg->control != NULL) {
        if (claim_path(cfg->control, err, errlen) != 0)
            return -1;
        uv_pipe_init(loop, &unix_listener, 0);
        has_unix = 1;
        /* Bind under a strict umask so the socket never exists with looser permissions, then set the mode. */
        old = umask(0177);
        rc = uv_pipe_bind(&unix_listener, cfg->control);
        umask(old);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&unix_listener, 64, on_connection);
        if (rc != 0) {
            snprintf(err, errlen, "control %s: %s", cfg->control, uv_strerror(rc));
            return -1;
        }
        unix_path = cfg->control;
        if (chmod(cfg->control, cfg->control_mode) != 0) {
            snprintf(err, errlen, "control %s: chmod: %s", cfg->control, strerror(errno));
            return -1;
        }
    }
    if (cfg->has_control_tcp) {
        struct sockaddr_storage ss;
        if (read_token(cfg->control_token_file, err, errlen) != 0)
            return -1;
        if (strchr(cfg->control_tcp.host, ':') != NULL)
            rc = uv_ip6_addr(cfg->control_tcp.host, cfg->control_tcp.port, (struct sockaddr_in6 *)&ss);
        else
            rc = uv_ip4_addr(cfg->control_tcp.host, cfg->control_tcp.port, (struct sockaddr_in *)&ss);
        uv_tcp_init(loop, &tcp_listener);
        has_tcp = 1;
        if (rc == 0)
            rc = uv_tcp_bind(&tcp_listener, (struct sockaddr *)&ss, 0);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&tcp_listener, 64, on_connection);
        if (rc != 0) {
            snprintf(err, errlen, "control-tcp %s:%u: %s", cfg->control_tcp.host, cfg->control_tcp.port,
                     uv_strerror(rc));
            return -1;
        }
    }
    return 0;
}

void px_control_stop(void)
{
    ctl_conn_t *c;

    if (has_unix) {
        has_unix = 0;
        uv_close((uv_handle_t *)&unix_listener, NULL);
        if (unix_path != NULL)
            unlink(unix_path);
    }
    if (has_tcp) {
        has_tcp = 0;
        uv_close((uv_handle_t *)&tcp_listener, NULL);
    }
    for (c = conns; c != NULL; c = c->next)
        do_close(c);
    if (px_server.on_ack != NULL) {
        uv_close((uv_handle_t *)&ack_async, NULL);
        px_server.on_ack = NULL;
    }
}

void px_control_dispose(void)
{
    while (retired != NULL) {
        retired_t *r = retired;
        retired = r->next;
        rt_table_free(r->table);
        free(r);
    }
    free(token);
    token = NULL;
}

rt_table_t *px_control_load_state(rt_table_t *base, char *err, size_t errlen)
{
    const char *path = px_server.cfg->state_file;
    rt_buf_t text = RT_BUF_INIT;
    char buf[65536];
    rt_table_t *t;
    FILE *f;
    size_t n;

    if (path == NULL)
        return base;
    if ((f = fopen(path, "r")) == NULL) {
        if (errno == ENOENT)
            return base; /* the first start: nothing applied yet */
        snprintf(err, errlen, "state-file %s: %s", path, strerror(errno));
        rt_table_free(base);
        return NULL;
    }
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        rt_buf_append(&text, buf, n);
    if (ferror(f)) {
        snprintf(err, errlen, "state-file %s: read error", path);
        fclose(f);
        rt_buf_dispose(&text);
        rt_table_free(base);
        return NULL;
    }
    fclose(f);
    {
        char why[400];
        t = rt_ctl_load_state(base, text.p ? text.p : "", text.len, why, sizeof(why));
        if (t == NULL)
            snprintf(err, errlen, "state-file %s: %s", path, why);
    }
    rt_buf_dispose(&text);
    rt_table_free(base);
    return t;
}
