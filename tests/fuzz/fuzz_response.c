/* libFuzzer target: the upstream response path of proxy/conn_res.c, which runs inside libuv callbacks, replayed
 * here without I/O. The response bytes arrive in reads of a size the first input byte picks, into one buffer as
 * in weir; llhttp parses them with the settings of conn.c (pause at the end of the header block and of the
 * message; for an HTTP/1.0 client and a chunked response, on_body compacts the body in place, dropping the chunk
 * framing and trailers); interim responses are passed on; the final head goes through px_h1_scan() and
 * px_h1_build_response(); keep-alive responses follow one another. Checked: what weir would send as the head
 * parses as a response head with the same status line; the compacted body equals the body llhttp reported and
 * never overtakes the bytes still to parse. Not covered: the buffer rewinding between reads and the writes. */
#include "fuzz.h"
#include "fuzz_http.h"

typedef struct res_s {
    char *buf;          /* the read buffer */
    size_t dechunk_end; /* end of the compacted body in <buf> */
    int dechunk;
    char *body; /* the body bytes as llhttp reported them, to compare with the compacted ones */
    size_t body_len;
} res_t;

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    res_t *r = p->data;

    if (!r->dechunk)
        return 0;
    FUZZ_CHECK(r->buf + r->dechunk_end <= at); /* the destination never passes the source */
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    memmove(r->buf + r->dechunk_end, at, len);
    r->dechunk_end += len;
    return 0;
}

static const llhttp_settings_t settings = {
    .on_headers_complete = pause_cb,
    .on_message_complete = pause_cb,
    .on_body = on_body,
};

static void check_head(const char *out, size_t len, rt_span_t status_line)
{
    rt_span_t line;

    fuzz_check_head(HTTP_RESPONSE, out, len, &line);
    FUZZ_CHECK(line.len == status_line.len && memcmp(line.p, status_line.p, line.len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t steps[] = {1, 2, 7, 64, 1024, 65536, 65536, 65536};
    static rt_header_t hdrs[PX_H1_MAX_HEADERS];
    static char buf[65536], body[65536], out[65536];
    res_t r = {buf, 0, 0, body, 0};
    size_t len = 0, rpos = 0, fwd = 0, step;
    int http10, head, in_body = 0, msgs = 0;
    llhttp_t p;

    if (size < 1 || size - 1 > sizeof(buf))
        return 0;
    http10 = data[0] & 1;
    head = (data[0] >> 1) & 1;
    step = steps[(data[0] >> 2) & 7];
    data++;
    size--;
    llhttp_init(&p, HTTP_RESPONSE, &settings);
    p.data = &r;
    while (msgs < 8) {
        llhttp_errno_t err;

        if (rpos == len) { /* a read */
            size_t n = size - len < step ? size - len : step;
            if (n == 0) {
                if (in_body && llhttp_message_needs_eof(&p))
                    (void)llhttp_finish(&p);
                return 0;
            }
            memcpy(buf + len, data + len, n);
            len += n;
        }
        err = llhttp_execute(&p, buf + rpos, len - rpos);
        if (err == HPE_OK) {
            rpos = len;
            continue;
        }
        if (err != HPE_PAUSED)
            return 0; /* weir answers 502 or closes */
        rpos = (size_t)(llhttp_get_error_pos(&p) - buf);
        llhttp_resume(&p);
        if (!in_body) {
            rt_span_t line;
            px_h1_fwd_res_t fr;
            size_t hlen;
            int n;

            if (p.status_code < 200 && p.status_code != 101) { /* interim: relayed as it is */
                if (llhttp_execute(&p, buf + rpos, 0) == HPE_PAUSED)
                    llhttp_resume(&p);
                fwd = rpos;
                continue;
            }
            n = px_h1_scan(buf + fwd, rpos - fwd, &line, hdrs, PX_H1_MAX_HEADERS);
            if (n < 0)
                return 0;
            if (head)
                p.flags |= F_SKIPBODY;
            r.dechunk = http10 && (p.flags & F_CHUNKED) && !head;
            memset(&fr, 0, sizeof(fr));
            fr.status_line = line;
            fr.close = r.dechunk || llhttp_message_needs_eof(&p);
            fr.keep_alive = http10 && !fr.close;
            fr.dechunk = r.dechunk;
            fr.upgrade = p.status_code == 101;
            fr.variant = "canary";
            hlen = px_h1_build_response(out, sizeof(out), &fr, hdrs, (size_t)n);
            if (hlen == 0)
                return 0;
            check_head(out, hlen, line);
            if (p.status_code == 101)
                return 0; /* a tunnel: opaque bytes follow */
            fwd = rpos;
            r.dechunk_end = rpos;
            r.body_len = 0;
            in_body = 1;
        } else {
            if (r.dechunk) {
                FUZZ_CHECK(r.dechunk_end <= rpos);
                FUZZ_CHECK(r.dechunk_end - fwd == r.body_len && memcmp(buf + fwd, body, r.body_len) == 0);
                return 0; /* the connection closes after a dechunked response */
            }
            fwd = rpos;
            in_body = 0;
            msgs++;
        }
    }
    return 0;
}
