/* The response side of a client connection (see proxy/conn.c for the whole design): reading the upstream,
 * rewriting the response's header block, relaying the body one client write at a time, the Upgrade tunnel's
 * upstream half, and what an upstream that closes or breaks framing means for the client. */
#include <string.h>

#include "common/macros.h"
#include "conn-int.h"
#include "px/accesslog.h"
#include "px/log.h"

static __thread char pooled_scratch[64]; /* what a pooled connection reads is only a sign it is gone */

/* Where the upstream buffer's still-needed bytes start, or 0 when nothing can be dropped now: not while a client
 * write points into the buffer, and with dechunking only once every compacted body byte was written. */
static size_t up_keep(const px_conn_t *c)
{
    const px_upconn_t *u = c->x->up;

    if (c->x->writing)
        return 0;
    if (c->x->dechunk)
        return u->fwd == c->x->dechunk_end ? u->rpos : 0;
    return u->fwd;
}

static void up_compact(px_conn_t *c)
{
    px_upconn_t *u = c->x->up;
    size_t keep = up_keep(c);

    if (keep == 0)
        return;
    memmove(u->rbuf->data, u->rbuf->data + keep, u->rbuf->len - keep);
    u->rbuf->len -= keep;
    u->rpos -= keep;
    u->fwd -= MIN(u->fwd, keep);
    c->x->dechunk_end -= MIN(c->x->dechunk_end, keep);
}

void px__conn_up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    px_upconn_t *u = h->data;
    px_conn_t *c = u->conn;

    if (u->mirror != NULL) {
        px__mirror_up_alloc(h, suggested, buf);
        return;
    }

    if (c == NULL) { /* pooled: whatever arrives only tells us the connection is gone */
        *buf = uv_buf_init(pooled_scratch, sizeof(pooled_scratch));
        return;
    }
    if (u->rbuf == NULL && (u->rbuf = px_buf_get(&u->w->bufs)) == NULL) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    if (u->rbuf->len == px_server.bufsize)
        up_compact(c);
    *buf = uv_buf_init(u->rbuf->data + u->rbuf->len, (unsigned)(px_server.bufsize - u->rbuf->len));
}

/* The one place that starts and stops reading an in-use upstream connection. */
void px__conn_up_update_read_state(px_conn_t *c)
{
    px_upconn_t *u;
    int want;

    if (c->x == NULL || (u = c->x->up) == NULL || u->closing || c->x->up_eof)
        return;
    want = u->rbuf == NULL || u->rbuf->len < px_server.bufsize || up_keep(c) > 0;
    if (want && !u->reading) {
        if (uv_read_start((uv_stream_t *)&u->tcp, px__conn_up_alloc, px__conn_up_read) == 0)
            u->reading = 1;
    } else if (!want && u->reading) {
        uv_read_stop((uv_stream_t *)&u->tcp);
        u->reading = 0;
    }
}

/* The response's header block ends at <pos> in u->rbuf: write the client's version of it into <obuf>. */
static int on_response_head(px_conn_t *c, size_t pos)
{
    px_upconn_t *u = c->x->up;
    rt_span_t line;
    px_h1_fwd_res_t fr;
    char extra[PX_HOST_MAX + 64];
    int n = px_h1_scan(u->rbuf->data + u->fwd, pos - u->fwd, &line, px__conn_hdrs, PX_H1_MAX_HEADERS);
    size_t len;

    if (n < 0 || px_h1_check(px__conn_hdrs, (size_t)n, 0) != 0)
        return -1;
    if (c->x->head)
        u->parser.flags |= F_SKIPBODY; /* a HEAD response announces a body it does not carry */
    c->x->status = u->parser.status_code;
    c->x->tunnel = c->x->status == 101 && c->x->upgrade;
    if (c->x->upgrade && !c->x->tunnel)
        c->x->close_after = 1; /* the client may already be speaking the new protocol: do not parse what follows */
    c->x->dechunk = c->x->http10 && (u->parser.flags & F_CHUNKED) && !c->x->head;
    if (c->x->req != REQ_DONE || atomic_load_explicit(&px_server.draining, memory_order_relaxed) || c->x->dechunk ||
        !c->x->keep_alive || llhttp_message_needs_eof(&u->parser))
        c->x->close_after = 1;
    if (c->x->tunnel)
        c->x->close_after = 0;
    memset(&fr, 0, sizeof(fr));
    fr.status_line = line;
    fr.close = c->x->close_after;
    fr.keep_alive = c->x->http10 && !c->x->close_after;
    fr.dechunk = c->x->dechunk;
    fr.upgrade = c->x->tunnel;
    fr.variant = px_server.cfg->variant_header ? px_server.variants[c->x->variant].name : NULL;
    if (c->x->cookie[0] != '\0') {
        snprintf(extra, sizeof(extra), "Set-Cookie: %s=%s; Path=/; HttpOnly\r\n", px_server.cfg->sticky_name,
                 c->x->cookie);
        fr.extra = extra;
    }
    if (c->x->obuf == NULL && (c->x->obuf = px_buf_get(&c->w->bufs)) == NULL)
        return -1;
    len = px_h1_build_response(c->x->obuf->data, px_server.bufsize, &fr, px__conn_hdrs, (size_t)n);
    if (len == 0)
        return -1;
    c->x->obuf->len = len;
    c->x->obuf_sent = 0;
    u->fwd = pos;
    c->x->dechunk_end = pos;
    /* The response started: the request can no longer be retried, its header block is not needed but by the log. */
    if (!px_accesslog_enabled()) {
        px_buf_put(&c->w->bufs, c->x->upbuf);
        c->x->upbuf = NULL;
    }
    return 0;
}

/* The upstream response is broken: weir's 502 while no response head went out, a close afterwards (the client
 * sees its body end short). Either way the variant is charged with it. */
static void bad_response(px_conn_t *c, const char *what, const char *why)
{
    px_log(PX_LOG_WARN, "upstream", "%s: %s: %s", px_server.eps[c->x->up->ep].name, what, why);
    c->x->err = PX_ERR_RESET;
    c->x->close_after = 1;
    px__conn_local_reply(c, 502, "bad response from upstream\n");
}

/* The upstream closed or reset and every byte it sent before was parsed and relayed: the end of a body delimited
 * by the close, or a response cut short. */
static void judge_eof(px_conn_t *c)
{
    px_upconn_t *u = c->x->up;

    if (c->x->res == RES_BODY && c->x->up_eof_status == UV_EOF && llhttp_message_needs_eof(&u->parser)) {
        llhttp_errno_t err = llhttp_finish(&u->parser);
        if (err == HPE_OK || err == HPE_PAUSED) {
            c->x->res = RES_DONE;
            px__conn_finish_cycle(c);
            return;
        }
    }
    bad_response(c, "closed before the response ended", uv_strerror(c->x->up_eof_status));
}

/* Parses what the upstream sent and relays it to the client, one write at a time. */
void px__conn_res_process(px_conn_t *c)
{
    px_upconn_t *u = c->x != NULL ? c->x->up : NULL;
    llhttp_errno_t err;
    uv_buf_t bufs[2];
    unsigned n = 0;
    size_t end;

    if (u == NULL || c->x->writing || u->rbuf == NULL)
        goto out;
    if (c->x->tunnel && c->x->obuf_sent) {
        if (u->rbuf->len > u->fwd) {
            u->rpos = u->rbuf->len;
            c->x->res_end = u->rpos;
            bufs[0] = uv_buf_init(u->rbuf->data + u->fwd, (unsigned)(u->rpos - u->fwd));
            px__conn_cli_write(c, bufs, 1);
        } else if (c->x->tunnel_eof) {
            px__conn_linger(c);
            return;
        }
        goto out;
    }
    while (c->x->res == RES_WAIT || c->x->res == RES_HEAD) {
        if (u->rpos == u->rbuf->len)
            goto out;
        c->x->res = RES_HEAD;
        err = llhttp_execute(&u->parser, u->rbuf->data + u->rpos, u->rbuf->len - u->rpos);
        if (err == HPE_OK) {
            u->rpos = u->rbuf->len;
            if (u->rbuf->len == px_server.bufsize) {
                c->x->err = PX_ERR_RESET;
                px__conn_local_reply(c, 502, "upstream response header block too large\n");
                return;
            }
            goto out;
        }
        if (err != HPE_PAUSED) {
            bad_response(c, "bad response", llhttp_get_error_reason(&u->parser));
            return;
        }
        u->rpos = (size_t)(llhttp_get_error_pos(&u->parser) - u->rbuf->data);
        llhttp_resume(&u->parser);
        if (u->parser.status_code == 101 && !c->x->upgrade) {
            /* Switching protocols nobody asked for: what follows cannot be read as HTTP any more. */
            bad_response(c, "bad response", "101 to a request without Upgrade");
            return;
        }
        if (u->parser.status_code < 200 && u->parser.status_code != 101) {
            /* An interim response (100 Continue, 103): relayed as it is, but not to an HTTP/1.0 client, which would
             * take it for the final one (RFC 9110 §15.2); then wait for the final one. The parser completes the
             * bodiless message without input. */
            if (llhttp_execute(&u->parser, u->rbuf->data + u->rpos, 0) == HPE_PAUSED)
                llhttp_resume(&u->parser);
            if (c->x->http10) {
                u->fwd = u->rpos;
                continue;
            }
            c->x->res_end = u->rpos;
            bufs[0] = uv_buf_init(u->rbuf->data + u->fwd, (unsigned)(u->rpos - u->fwd));
            px__conn_cli_write(c, bufs, 1);
            goto out;
        }
        if (on_response_head(c, u->rpos) != 0) {
            bad_response(c, "bad response", "header block");
            return;
        }
        c->x->res = RES_BODY;
        if (c->x->tunnel) {
            /* From here on both directions are opaque bytes; whatever followed the 101 is the first of them. */
            c->x->obuf_sent = 1;
            c->x->res_end = u->rpos = u->rbuf->len;
            bufs[n++] = uv_buf_init(c->x->obuf->data, (unsigned)c->x->obuf->len);
            if (u->rbuf->len > u->fwd)
                bufs[n++] = uv_buf_init(u->rbuf->data + u->fwd, (unsigned)(u->rbuf->len - u->fwd));
            px__conn_arm(c, PH_IDLE, px_server.cfg->idle_timeout_ms);
            px__conn_cli_write(c, bufs, n);
            px__conn_cli_process(c); /* client bytes that arrived before the 101 */
            return;
        }
    }
    if (c->x->res == RES_BODY) {
        /* Also with no new byte: a message without a body completes without input. */
        err = llhttp_execute(&u->parser, u->rbuf->data + u->rpos, u->rbuf->len - u->rpos);
        if (err == HPE_OK) {
            u->rpos = u->rbuf->len;
        } else if (err == HPE_PAUSED) {
            u->rpos = (size_t)(llhttp_get_error_pos(&u->parser) - u->rbuf->data);
            c->x->res = RES_DONE;
        } else {
            bad_response(c, "bad response body", llhttp_get_error_reason(&u->parser));
            return;
        }
    }
    if (!c->x->obuf_sent && c->x->obuf != NULL) {
        bufs[n++] = uv_buf_init(c->x->obuf->data, (unsigned)c->x->obuf->len);
        c->x->obuf_sent = 1;
    }
    end = c->x->dechunk ? c->x->dechunk_end : u->rpos;
    if (end > u->fwd && !c->x->head)
        bufs[n++] = uv_buf_init(u->rbuf->data + u->fwd, (unsigned)(end - u->fwd));
    else if (c->x->head)
        u->fwd = end;
    if (n > 0) {
        c->x->res_end = end;
        px__conn_arm(c, PH_UPSTREAM, px_server.cfg->upstream_timeout_ms);
        px__conn_cli_write(c, bufs, n);
    } else if (c->x->res == RES_DONE) {
        px__conn_finish_cycle(c);
        return;
    }
out:
    /* EOF is judged only once nothing read before it waits to be parsed or written. */
    if (u != NULL && c->x != NULL && c->x->up == u && c->x->up_eof && !c->x->writing && !c->x->tunnel &&
        (u->rbuf == NULL || u->rpos == u->rbuf->len)) {
        judge_eof(c);
        return;
    }
    px__conn_up_update_read_state(c);
}

void px__conn_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    px_upconn_t *u = s->data;
    px_conn_t *c = u->conn;
    (void)buf;

    if (u->mirror != NULL) {
        px__mirror_up_read(s, nread, buf);
        return;
    }
    if (u->closing)
        return;
    if (c == NULL) { /* pooled: data or EOF, the connection cannot be reused */
        if (nread != 0)
            px_upstream_close(u);
        return;
    }
    if (nread > 0) {
        u->rbuf->len += (size_t)nread;
        if (c->x->phase == PH_UPSTREAM)
            px__conn_arm(c, PH_UPSTREAM, px_server.cfg->upstream_timeout_ms);
        else if (c->x->tunnel)
            px__conn_arm(c, PH_IDLE, px_server.cfg->idle_timeout_ms);
        px__conn_res_process(c);
        return;
    }
    if (nread == 0 || nread == UV_ENOBUFS)
        return;
    /* The upstream closed or reset. */
    if (c->x->tunnel) {
        c->x->tunnel_eof = 1;
        if (!c->x->writing)
            px__conn_res_process(c);
        return;
    }
    if (px__conn_retryable(c) && (u->rbuf == NULL || u->rbuf->len == 0)) {
        px__conn_retry_fresh(c);
        return;
    }
    /* Bytes read while a client write was in flight are not parsed yet: the close is judged after them (the end
     * of a body delimited by the close, or a truncated response, which is never presented as complete). */
    c->x->up_eof = 1;
    c->x->up_eof_status = (int)nread;
    u->connected = 0;
    u->reading = 0; /* libuv stopped reading at EOF; an error ends reading too */
    uv_read_stop((uv_stream_t *)&u->tcp);
    if (!c->x->writing)
        px__conn_res_process(c);
}
