/* The control listener (SPEC §4): a Unix stream socket and an optional TCP listener with a token handshake, on the
 * main thread's loop. Requests are parsed and applied by the router (rt_ctl_exec); this file does the I/O, the
 * publication of new tables to the workers, the state file, and the replies that need process data.
 *
 * Publication. A change yields a new immutable table. It is written to the state file, stored in px_server.table,
 * and every worker is woken; each acknowledges the newest generation from its loop, between requests. The reply
 * goes out once every worker acknowledged (or exited), and an old table is freed once every worker acknowledged a
 * newer one: no decision can still be reading it. While a change waits for acknowledgements, its connection
 * processes no further request, so pipelined requests are answered in order. A request that makes no new table (a
 * read such as `get weight`, or a change that leaves the routing as it was) is answered, the same way, only once
 * every worker runs the current table: its `ok` must not vouch for a state some worker does not apply yet.
 *
 * A worker that does not acknowledge within CTL_ACK_TIMEOUT_MS is named in the log and in the reply
 * CTL_REPLY_UNACKED: "error: generation G published but not acknowledged ...". The change stays published (it cannot
 * be taken back from the workers that switched), so this one error reply, unlike the others, does not mean that
 * nothing changed; its prefix up to "published but not acknowledged" is fixed, for clients (the Argo Rollouts
 * plugin) to tell "applied, not verified" from a refusal.
 *
 * Bounds. The Unix listener takes CTL_MAX_CONNS connections; more are answered with an error and closed. On TCP,
 * connections that have not authenticated yet never take a slot from those that have (anyone who can reach the
 * port could otherwise lock the rollout controller out with silent connections): they are held in a pool of their
 * own, CTL_MAX_PREAUTH, where a new connection evicts the oldest, and must authenticate within CTL_AUTH_TIMEOUT_MS
 * (or `header-timeout` if shorter). A client that authenticates takes one of CTL_MAX_CONNS slots, or is answered
 * with an error and closed when none is free. A connection stops reading while CTL_READ_MAX bytes of requests wait
 * and executes no request while CTL_OUT_MAX bytes of replies are not taken by the client. One timer per connection
 * closes it once idle for `idle-timeout` (no request read, no reply taken). Before authentication nothing but
 * `auth` is recognised; a failed one is answered at once (SPEC §4), then the connection stays open, read no
 * further, for CTL_AUTH_FAIL_DELAY_MS before it closes, while CTL_MAX_FAILED such connections are held; past that
 * it closes once answered. The hold slows a guesser that waits for its answers; it cannot bound a flood of guesses
 * without also locking out the real client, so the token's entropy is what protects it.
 *
 * TLS (`control-tls on`). The TCP listener's connections carry a px_tls_t under the same reads and writes: what is
 * read is fed to the engine and the plaintext lands in <in>; replies in <out> are encrypted when they are flushed.
 * Every limit, deadline and the auth rule above apply to the plaintext unchanged; a client that fails the handshake
 * (plaintext, an old protocol version) is closed at once and counted. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "common/macros.h"
#include "px/control.h"
#include "px/log.h"
#include "px/resolve.h"
#include "px/server.h"
#include "px/stats.h"
#include "px/tls.h"
#include "px/worker.h"
#include "rt/ctl.h"

#define CTL_READ_MAX 65536          /* unanswered input kept per connection before we stop reading */
#define CTL_OUT_MAX (256 * 1024)    /* replies not taken by the client before we stop executing requests */
#define CTL_MAX_CONNS 64            /* open connections per listener (Unix; TCP: authenticated ones) */
#define CTL_MAX_PREAUTH 16          /* TCP connections not authenticated yet; a new one evicts the oldest */
#define CTL_MAX_FAILED 64           /* TCP connections held for CTL_AUTH_FAIL_DELAY_MS after a failed auth */
#define CTL_AUTH_TIMEOUT_MS 3000    /* `auth` must arrive this soon (or within header-timeout if shorter) */
#define CTL_ACK_TIMEOUT_MS 3000     /* below the 5 s a rollout controller gives one call by default */
#define CTL_AUTH_FAIL_DELAY_MS 1000 /* a failed auth holds its connection this long before the close */
#define CTL_REPLY_CHANGED "ok\n\n"  /* what rt_ctl_exec() answers a change that made a new table */
/* generation, CTL_ACK_TIMEOUT_MS, the late workers; the text up to "acknowledged" is a fixed contract (README) */
#define CTL_REPLY_UNACKED                                                                                              \
    "error: generation %llu published but not acknowledged within %u ms by %s: the change is applied and stays; "      \
    "those workers route by an older table until they take it\n\n"

typedef struct ctl_conn_s ctl_conn_t;
struct ctl_conn_s {
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_write_t wreq;
    uv_timer_t timer; /* idle or auth deadline, acknowledgement deadline, or the delay after a failed auth */
    ctl_conn_t *next, *prev;
    rt_buf_t in;         /* received, not yet processed */
    rt_buf_t out;        /* replies being built */
    rt_buf_t sending;    /* replies in flight */
    rt_buf_t held_reply; /* the reply of a read or a no-op change, held back while <wait_gen> is waited for */
    uint64_t wait_gen;   /* a request waits for every worker to reach this generation; 0 when none */
    unsigned nhandles;   /* handles whose close callback has not run */
    unsigned is_tcp : 1, authed : 1, discarding : 1, writing : 1, closing : 1, reading : 1;
    unsigned eof : 1;       /* no more requests: the client closed, or we close after the replies */
    unsigned failed : 1;    /* authentication failed: nothing more is read; the timer closes */
    unsigned started : 1;   /* a first request line was taken */
    unsigned counted : 1;   /* holds a slot of <nconns> */
    unsigned preauth : 1;   /* holds a slot of <npreauth> (TCP, not authenticated, not failed) */
    unsigned fail_held : 1; /* holds a slot of <nfailed> */
    px_tls_t *tls;          /* control-tls: the TCP connection's TLS state; NULL otherwise */
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
static unsigned char token_digest[SHA256_DIGEST_LENGTH]; /* compared, not the token: no length leaks either */
static char *unix_path;
static unsigned nconns[2]; /* [is_tcp] */
static unsigned npreauth, nfailed;
static uint64_t start_gen; /* the generation of the table before any worker started: every worker runs it or later */
static px_ratelimit_t auth_log = {.interval_ms = 10000}, refuse_log = {.interval_ms = 10000},
                      evict_log = {.interval_ms = 10000};
static px_ratelimit_t tls_log = {.interval_ms = 10000};
static px_tls_ctx_t *tls_ctx;    /* control-tls on */
static char tls_rbuf[16 * 1024]; /* ciphertext of one read, decrypted before the next (one loop, one thread) */

static void process(ctl_conn_t *c);
static void ctl_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void ctl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void idle_rearm(ctl_conn_t *c);
static void on_timer(uv_timer_t *t);

/* ---- acknowledgements and retirement ---- */

/* The generation worker <w> runs at least. Before its first acknowledgement, the one it started with. */
static uint64_t acked_by(px_worker_t *w)
{
    uint64_t g = atomic_load(&w->acked_gen);
    return g < start_gen ? start_gen : g;
}

static uint64_t min_acked(void)
{
    uint64_t min = UINT64_MAX;
    unsigned i;

    for (i = 0; i < px_server.nworkers; i++) {
        px_worker_t *w = &px_server.workers[i];
        uint64_t g;
        if (atomic_load(&w->exited))
            continue;
        g = acked_by(w);
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
        if (c->wait_gen != 0 && c->wait_gen <= min && !c->closing) {
            c->wait_gen = 0;
            if (c->held_reply.len > 0)
                rt_buf_append(&c->out, c->held_reply.p, c->held_reply.len);
            else
                rt_buf_puts(&c->out, CTL_REPLY_CHANGED);
            rt_buf_reset(&c->held_reply);
            idle_rearm(c);
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

    if (--c->nhandles > 0)
        return;
    if (c->counted)
        nconns[c->is_tcp]--;
    if (c->preauth)
        npreauth--;
    if (c->fail_held)
        nfailed--;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    rt_buf_dispose(&c->in);
    rt_buf_dispose(&c->out);
    rt_buf_dispose(&c->sending);
    rt_buf_dispose(&c->held_reply);
    px_tls_free(c->tls);
    free(c);
}

/* For a connection that never got on the list (its stream could not be initialised). */
static void free_unlinked(uv_handle_t *h)
{
    ctl_conn_t *c = h->data;

    px_tls_free(c->tls);
    free(c);
}

static void do_close(ctl_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->h, on_closed);
    uv_close((uv_handle_t *)&c->timer, on_closed);
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
    if (c->tls != NULL && c->out.len == 0)
        px_tls_compact(c->tls); /* going idle: give back what the BIOs grew */
    idle_rearm(c);
    process(c); /* requests held back while replies were not taken */
}

/* TLS: encrypts <out> (once the handshake is done) and moves every pending record into <sending>. Returns 0, or
 * -1 when the connection must close. */
static int tls_seal(ctl_conn_t *c)
{
    const char *err;
    size_t n;

    if (c->out.len > 0 && px_tls_established(c->tls)) {
        if (px_tls_write(c->tls, c->out.p, c->out.len, &err) != 0)
            return -1;
        rt_buf_reset(&c->out);
    }
    if ((n = px_tls_pending_out(c->tls)) == 0)
        return 0;
    if (rt_buf_reserve(&c->sending, n) != 0)
        return -1;
    c->sending.len += px_tls_take_out(c->tls, c->sending.p + c->sending.len, n);
    return 0;
}

static void flush(ctl_conn_t *c)
{
    rt_buf_t tmp;
    uv_buf_t b;

    if (c->writing || c->closing)
        return;
    if (c->tls != NULL) {
        if (tls_seal(c) != 0) {
            do_close(c);
            return;
        }
        if (c->sending.len == 0)
            return;
    } else {
        if (c->out.len == 0)
            return;
        tmp = c->sending;
        c->sending = c->out;
        c->out = tmp;
    }
    b = uv_buf_init(c->sending.p, (unsigned)c->sending.len);
    c->writing = 1;
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->h, &b, 1, on_written) != 0) {
        c->writing = 0;
        do_close(c);
    }
}

/* ---- timers ---- */

static uint64_t now_ms(void)
{
    return uv_now(loop);
}

/* Activity on a connection pushes its idle deadline back. Not while another deadline runs: an unauthenticated
 * client's, a change's, or the delay after a failed auth. */
static void idle_rearm(ctl_conn_t *c)
{
    if (c->closing || c->failed || c->wait_gen != 0 || (c->is_tcp && !c->authed))
        return;
    uv_timer_start(&c->timer, on_timer, px_server.cfg->idle_timeout_ms, 0);
}

/* A generation not acknowledged in time: the workers that did not are named in the reply and the log. The table
 * stays published: each of them switches to it at its next safe point, and the tables it may still read stay
 * allocated until then (on_ack). The same reply goes to a read or a no-op change that waited for it. */
static void ack_overdue(ctl_conn_t *c)
{
    rt_buf_t who = RT_BUF_INIT;
    unsigned i;

    for (i = 0; i < px_server.nworkers; i++) {
        px_worker_t *w = &px_server.workers[i];
        if (!atomic_load(&w->exited) && acked_by(w) < c->wait_gen)
            rt_buf_printf(&who, "%sworker %u", who.len > 0 ? ", " : "", i);
    }
    px_log(PX_LOG_WARN, "control", "generation %llu: not acknowledged within %u ms by %s",
           (unsigned long long)c->wait_gen, CTL_ACK_TIMEOUT_MS, who.len > 0 ? who.p : "a worker");
    rt_buf_printf(&c->out, CTL_REPLY_UNACKED, (unsigned long long)c->wait_gen, CTL_ACK_TIMEOUT_MS,
                  who.len > 0 ? who.p : "a worker");
    rt_buf_dispose(&who);
    rt_buf_reset(&c->held_reply);
    c->wait_gen = 0;
    idle_rearm(c);
    process(c);
}

static void on_timer(uv_timer_t *t)
{
    ctl_conn_t *c = t->data;

    if (c->closing)
        return;
    if (c->wait_gen != 0) {
        ack_overdue(c);
        return;
    }
    /* idle, no auth in time, or the delay after a failed auth is over */
    do_close(c);
}

/* ---- requests ---- */

static void peer_name(ctl_conn_t *c, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        } else {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        }
    }
    snprintf(out, cap, "%s:%u", ip, port);
}

static void leave_preauth(ctl_conn_t *c)
{
    if (c->preauth) {
        c->preauth = 0;
        npreauth--;
    }
}

/* A TCP client failed to authenticate (<why>): <reply> goes out at once, nothing more is read, and the connection
 * closes after CTL_AUTH_FAIL_DELAY_MS. Logged at most once per auth_log interval. */
static void auth_failed(ctl_conn_t *c, const char *why, const char *reply)
{
    uint64_t skipped;

    if (px_ratelimit(&auth_log, now_ms(), &skipped)) {
        char peer[INET6_ADDRSTRLEN + 8];
        peer_name(c, peer, sizeof(peer));
        px_log(PX_LOG_WARN, "control", "tcp client %s failed to authenticate: %s (%llu more since last logged)", peer,
               why, (unsigned long long)skipped);
    }
    rt_buf_puts(&c->out, reply);
    c->in.len = 0;
    leave_preauth(c);
    if (nfailed >= CTL_MAX_FAILED) {
        c->eof = 1; /* closed once the reply is out */
        return;
    }
    c->failed = 1;
    c->fail_held = 1;
    nfailed++;
    uv_timer_start(&c->timer, on_timer, CTL_AUTH_FAIL_DELAY_MS, 0);
}

/* No slot for <c>: an error reply, then the close (within header-timeout if the client does not take the reply). */
static void refused(ctl_conn_t *c)
{
    uint64_t skipped;

    if (px_ratelimit(&refuse_log, now_ms(), &skipped))
        px_log(PX_LOG_WARN, "control", "%s connection refused: %u open (%llu more refused since the last report)",
               c->is_tcp ? "tcp" : "unix", CTL_MAX_CONNS, (unsigned long long)skipped);
    if (c->tls != NULL && !px_tls_established(c->tls)) { /* the answer could only go out after a handshake */
        do_close(c);
        return;
    }
    rt_buf_puts(&c->out, "error: too many control connections\n\n");
    c->eof = 1;
    uv_timer_start(&c->timer, on_timer, px_server.cfg->header_timeout_ms, 0);
}

/* SPEC §4: before authentication, a line is only checked for being `auth TOKEN`; nothing else of it is parsed,
 * and nothing is executed. */
static int exec_unauthed(ctl_conn_t *c, const char *line, size_t len)
{
    rt_buf_t tok = RT_BUF_INIT;
    unsigned char d[SHA256_DIGEST_LENGTH];
    size_t i = 0;
    int is_auth, ok = 0;

    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    is_auth = len - i > 5 && memcmp(line + i, "auth", 4) == 0 && (line[i + 4] == ' ' || line[i + 4] == '\t');
    if (is_auth && rt_ctl_auth_token(line, len, &tok) == 0) {
        /* Digests of equal length, compared in constant time: neither the bytes nor the length of the token leak
         * through the time an answer takes. */
        SHA256((const unsigned char *)(tok.p != NULL ? tok.p : ""), tok.len, d);
        ok = CRYPTO_memcmp(d, token_digest, sizeof(d)) == 0;
    }
    if (tok.p != NULL)
        OPENSSL_cleanse(tok.p, tok.cap);
    rt_buf_dispose(&tok);
    if (!ok) {
        auth_failed(c, is_auth ? "wrong token" : "first request is not auth", "error: authentication failed\n\n");
        return 1;
    }
    leave_preauth(c);
    if (nconns[1] >= CTL_MAX_CONNS) {
        refused(c);
        c->in.len = 0; /* nothing after the auth is executed */
        return 1;
    }
    nconns[1]++;
    c->counted = 1;
    c->authed = 1;
    rt_buf_puts(&c->out, "ok\n\n");
    idle_rearm(c);
    return 0;
}

/* Executes one request line; returns 0 to go on with the next, 1 to stop (waiting or closing). */
static int exec_line(ctl_conn_t *c, const char *line, size_t len)
{
    const rt_table_t *cur = atomic_load(&px_server.table);
    rt_table_t *next = NULL;
    size_t before = c->out.len;
    char err[1024];
    int op;

    if (c->is_tcp && !c->authed)
        return exec_unauthed(c, line, len);
    op = rt_ctl_exec(cur, line, len, &next, &c->out);
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
    if (next == NULL) {
        /* A read, or a change that leaves the routing as it was: answered once every worker runs the current
         * table, or with CTL_REPLY_UNACKED (an earlier change is still not acknowledged). */
        if (min_acked() >= rt_table_generation(cur))
            return 0;
        if (rt_buf_append(&c->held_reply, c->out.p + before, c->out.len - before) != 0) {
            do_close(c);
            return 1;
        }
        rt_buf_truncate(&c->out, before);
        c->wait_gen = rt_table_generation(cur);
        uv_timer_start(&c->timer, on_timer, CTL_ACK_TIMEOUT_MS, 0);
        return 1;
    }
    if (write_state(next, err, sizeof(err)) != 0) {
        px_log(PX_LOG_ERROR, "control", "%s", err);
        rt_table_free(next);
        rt_buf_truncate(&c->out, before);
        rt_buf_printf(&c->out, "error: %s\n\n", err);
        return 0;
    }
    px_log(PX_LOG_INFO, "control", "generation %llu: %.*s", (unsigned long long)rt_table_generation(next),
           (int)MIN(len, 200), line);
    px_stats_table_changing(cur, next); /* before any worker can count for a new variant */
    px_resolve_apply(next); /* endpoints first: a worker that sees the table finds its variants' addresses */
    c->wait_gen = publish(next);
    if (min_acked() >= c->wait_gen) {
        c->wait_gen = 0;
        return 0;
    }
    /* The "ok" goes out once every worker switched (on_ack), or an error naming the late ones (ack_overdue). */
    rt_buf_truncate(&c->out, before);
    uv_timer_start(&c->timer, on_timer, CTL_ACK_TIMEOUT_MS, 0);
    return 1;
}

static void update_reading(ctl_conn_t *c)
{
    int want = !c->closing && !c->eof && !c->failed && c->in.len < CTL_READ_MAX;
    int rc;

    if (want && !c->reading) {
        if ((rc = uv_read_start((uv_stream_t *)&c->h, ctl_alloc, ctl_read)) != 0) {
            px_log(PX_LOG_WARN, "control", "read: %s", uv_strerror(rc));
            do_close(c);
            return;
        }
        c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->h);
        c->reading = 0;
    }
}

/* Answers every complete request line received, in order, until one waits for the workers. */
static void process(ctl_conn_t *c)
{
    /* Replies the client does not take stop the requests; input then fills up to CTL_READ_MAX and reading stops. */
    while (!c->closing && !c->failed && c->wait_gen == 0 && c->in.len > 0 && c->out.len < CTL_OUT_MAX) {
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
        if (n < 0 && !c->started) {
            /* Not a client of this protocol: answer, and close rather than read on. */
            if (c->is_tcp && !c->authed) {
                auth_failed(c, "first request too long", RT_CTL_REPLY_TOO_LONG);
            } else {
                rt_buf_puts(&c->out, RT_CTL_REPLY_TOO_LONG);
                c->eof = 1;
                c->in.len = 0;
            }
            break;
        }
        if (n < 0) {
            rt_buf_puts(&c->out, RT_CTL_REPLY_TOO_LONG);
            c->discarding = 1;
            continue;
        }
        c->started = 1;
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

    if (c->tls != NULL) {
        *buf = uv_buf_init(tls_rbuf, sizeof(tls_rbuf));
        return;
    }
    if (rt_buf_reserve(&c->in, 4096) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(c->in.p + c->in.len, (unsigned)(c->in.cap - c->in.len - 1));
}

/* TLS: feeds the <n> bytes read into tls_rbuf to the engine and appends all the plaintext they carry to <in>.
 * Returns 0, or -1 when the connection was closed (handshake failure, bad record, out of memory). */
static int tls_open(ctl_conn_t *c, size_t n)
{
    const char *err = NULL;
    ssize_t k;

    if (px_tls_feed(c->tls, tls_rbuf, n) != 0)
        goto fail;
    for (;;) {
        if (rt_buf_reserve(&c->in, 4096) != 0)
            goto fail;
        k = px_tls_read(c->tls, c->in.p + c->in.len, c->in.cap - c->in.len - 1, &err);
        if (k <= 0)
            break;
        c->in.len += (size_t)k;
        c->in.p[c->in.len] = '\0';
        idle_rearm(c);
    }
    if (k == 0)
        return 0;
    if (err == px_tls_err_closed && px_tls_established(c->tls)) {
        c->eof = 1; /* close_notify: answer what was received, then close */
        return 0;
    }
fail:
    if (err != NULL) {
        uint64_t skipped;
        if (px_ratelimit(&tls_log, now_ms(), &skipped)) {
            char peer[INET6_ADDRSTRLEN + 8];
            peer_name(c, peer, sizeof(peer));
            px_log(PX_LOG_WARN, "control", "tls client %s: %s (%llu more since last logged)", peer, px_tls_reason(err),
                   (unsigned long long)skipped);
        }
    }
    do_close(c);
    return -1;
}

static void ctl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ctl_conn_t *c = s->data;
    (void)buf;

    if (c->closing || c->failed)
        return;
    if (nread > 0 && c->tls != NULL) {
        if (tls_open(c, (size_t)nread) != 0)
            return;
    } else if (nread > 0) {
        c->in.len += (size_t)nread;
        c->in.p[c->in.len] = '\0';
        idle_rearm(c);
    } else if (nread < 0) {
        /* EOF: answer what was received, then close. */
        c->eof = 1;
        uv_read_stop(s);
        c->reading = 0;
    }
    process(c);
}

/* Closes the unauthenticated TCP connection that waited longest (the list holds the newest first). */
static void evict_oldest_preauth(void)
{
    ctl_conn_t *c, *oldest = NULL;
    uint64_t skipped;

    for (c = conns; c != NULL; c = c->next)
        if (c->preauth && !c->closing)
            oldest = c;
    if (oldest == NULL)
        return;
    if (px_ratelimit(&evict_log, now_ms(), &skipped))
        px_log(PX_LOG_WARN, "control",
               "%u tcp clients not authenticated: the oldest is closed for a new one (%llu more since last logged)",
               CTL_MAX_PREAUTH, (unsigned long long)skipped);
    leave_preauth(oldest);
    do_close(oldest);
}

static void on_connection(uv_stream_t *server, int status)
{
    int is_tcp = server == (uv_stream_t *)&tcp_listener, rc;
    ctl_conn_t *c;

    if (status < 0) {
        px_log(PX_LOG_WARN, "control", "accept: %s", uv_strerror(status));
        return;
    }
    /* Without uv_accept() libuv stops watching the listener, so every path below accepts, even to close. */
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        px_log(PX_LOG_ERROR, "control", "out of memory: the control listener stops accepting");
        return;
    }
    c->is_tcp = is_tcp;
    c->timer.data = c;
    if (is_tcp && tls_ctx != NULL && (c->tls = px_tls_new(tls_ctx)) == NULL) {
        free(c);
        rc = UV_ENOMEM;
        goto fail;
    }
    if ((rc = uv_timer_init(loop, &c->timer)) != 0) {
        px_tls_free(c->tls);
        free(c);
        goto fail;
    }
    if ((rc = is_tcp ? uv_tcp_init(loop, &c->h.tcp) : uv_pipe_init(loop, &c->h.pipe, 0)) != 0) {
        uv_close((uv_handle_t *)&c->timer, free_unlinked);
        goto fail;
    }
    c->h.tcp.data = c;
    c->nhandles = 2;
    c->next = conns;
    if (conns != NULL)
        conns->prev = c;
    conns = c;
    if ((rc = uv_accept(server, (uv_stream_t *)&c->h)) != 0) {
        do_close(c);
        return;
    }
    if (is_tcp) {
        /* A slot among the unauthenticated; when they are all taken, the oldest one gives it up. Authenticated
         * clients are never touched, and a real client authenticates within a round trip of connecting. */
        if (npreauth >= CTL_MAX_PREAUTH)
            evict_oldest_preauth();
        c->preauth = 1;
        npreauth++;
        uv_timer_start(&c->timer, on_timer, MIN(px_server.cfg->header_timeout_ms, CTL_AUTH_TIMEOUT_MS), 0);
    } else if (nconns[0] >= CTL_MAX_CONNS) {
        refused(c);
        flush(c);
        return;
    } else {
        nconns[0]++;
        c->counted = 1;
        uv_timer_start(&c->timer, on_timer, px_server.cfg->idle_timeout_ms, 0);
    }
    update_reading(c);
    return;
fail:
    px_log(PX_LOG_ERROR, "control", "new connection: %s; the control listener stops accepting", uv_strerror(rc));
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
    SHA256((const unsigned char *)buf, n, token_digest);
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

int px_control_start(uv_loop_t *l, char *err, size_t errlen)
{
    const px_config_t *cfg = px_server.cfg;
    mode_t old;
    int rc;

    loop = l;
    start_gen = rt_table_generation(atomic_load(&px_server.table));
    if ((rc = uv_async_init(loop, &ack_async, on_ack)) != 0) {
        snprintf(err, errlen, "control: %s", uv_strerror(rc));
        return -1;
    }
    px_server.on_ack = &ack_async;
    if (cfg->control != NULL) {
        if (claim_path(cfg->control, err, errlen) != 0)
            return -1;
        if ((rc = uv_pipe_init(loop, &unix_listener, 0)) != 0) {
            snprintf(err, errlen, "control %s: %s", cfg->control, uv_strerror(rc));
            return -1;
        }
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
        /* the control channel authenticates by token: no client certificate, no ALPN */
        if (cfg->control_tls && (tls_ctx = px_tls_ctx_new(cfg, PX_TLS_ALPN_NONE, 0, err, errlen)) == NULL)
            return -1;
        if (strchr(cfg->control_tcp.host, ':') != NULL)
            rc = uv_ip6_addr(cfg->control_tcp.host, cfg->control_tcp.port, (struct sockaddr_in6 *)&ss);
        else
            rc = uv_ip4_addr(cfg->control_tcp.host, cfg->control_tcp.port, (struct sockaddr_in *)&ss);
        if (rc == 0 && (rc = uv_tcp_init(loop, &tcp_listener)) == 0)
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
    OPENSSL_cleanse(token_digest, sizeof(token_digest));
    px_tls_ctx_free(tls_ctx);
    tls_ctx = NULL;
}

void px_control_tls_reload(void)
{
    char err[512];

    if (tls_ctx == NULL)
        return;
    if (px_tls_ctx_reload(tls_ctx, px_server.cfg, err, sizeof(err)) != 0)
        px_log(PX_LOG_ERROR, "control", "SIGHUP: control-tls keeps its certificates: %s", err);
    else
        px_log(PX_LOG_INFO, "control", "SIGHUP: control-tls certificates reloaded");
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
