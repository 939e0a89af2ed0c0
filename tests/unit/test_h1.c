/* Unit tests of proxy/h1.c: splitting header blocks and writing the forwarded ones. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "px/h1.h"

#define BLOCK(s) s, sizeof(s) - 1

static void test_scan_splits_and_trims(void **state)
{
    rt_span_t line;
    rt_header_t h[8];
    int n = px_h1_scan(BLOCK("GET /a HTTP/1.1\r\nHost: x\r\nX-A:   v  \r\nX-B:\r\n\r\n"), &line, h, 8);
    (void)state;

    assert_int_equal(n, 3);
    assert_int_equal(line.len, 15);
    assert_memory_equal(line.p, "GET /a HTTP/1.1", 15);
    assert_int_equal(h[1].value.len, 1);
    assert_memory_equal(h[1].value.p, "v", 1);
    assert_int_equal(h[2].value.len, 0);
}

static void test_scan_refuses_smuggling_shapes(void **state)
{
    rt_span_t line;
    rt_header_t h[8];
    (void)state;

    assert_int_equal(px_h1_scan(BLOCK("GET / HTTP/1.1\r\nHost : x\r\n\r\n"), &line, h, 8), PX_H1_MALFORMED);
    assert_int_equal(px_h1_scan(BLOCK("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n"), &line, h, 8), PX_H1_MALFORMED);
    assert_int_equal(px_h1_scan(BLOCK("GET / HTTP/1.1\r\nnocolon\r\n\r\n"), &line, h, 8), PX_H1_MALFORMED);
    assert_int_equal(px_h1_scan(BLOCK("GET / HTTP/1.1\r\nA\rB: x\r\n\r\n"), &line, h, 8), PX_H1_MALFORMED);
    assert_int_equal(px_h1_scan(BLOCK("GET / HTTP/1.1\r\n:x\r\n\r\n"), &line, h, 8), PX_H1_MALFORMED);
    assert_int_equal(px_h1_scan(BLOCK("GET / HTTP/1.1\r\n\rx\n\r\n"), &line, h, 8), PX_H1_MALFORMED);
    assert_int_equal(px_h1_scan(BLOCK("GET / HTTP/1.1\r\nA: 1\r\n"), &line, h, 8), PX_H1_MALFORMED);
    assert_int_equal(px_h1_scan(BLOCK("GET / HTTP/1.1\r\nA: 1\r\nB"), &line, h, 8), PX_H1_MALFORMED);
    assert_int_equal(px_h1_scan(BLOCK("GET / HTTP/1.1\nA: 1\nB:2\n\n"), &line, h, 8), 2);
    assert_int_equal(px_h1_scan(BLOCK("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n"), &line, h, 1), PX_H1_TOO_MANY);
}

/* Names are tokens; the first line and values hold field-value characters only (RFC 9110 §5.5). */
static void test_scan_refuses_bad_characters(void **state)
{
    rt_span_t line;
    rt_header_t h[8];
    static const char *const bad[] = {
        "GET / HTTP/1.1\r\nX-A:\rInjected: yes\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: a\001\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: \177\r\n\r\n",
        "GET / HTTP/1.1\r\nX(A): 1\r\n\r\n",
        "GET / HTTP/1.1\r\nX\001A: 1\r\n\r\n",
        "GET /\001 HTTP/1.1\r\nX-A: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: 1\r\r\n\r\n",
    };
    (void)state;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (px_h1_scan(bad[i], strlen(bad[i]), &line, h, 8) != PX_H1_MALFORMED)
            fail_msg("case %zu accepted", i);
    /* HTAB, SP and obs-text are field-value characters; a NUL is not (it is not a C string here) */
    assert_int_equal(px_h1_scan(BLOCK("GET / HTTP/1.1\r\nX-A: a\tb c\xff\r\n\r\n"), &line, h, 8), 1);
    assert_int_equal(px_h1_scan(BLOCK("GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n"), &line, h, 8), PX_H1_MALFORMED);

    /* Every byte value at every offset of a long value, inside and past the scanner's eight-byte words, against
     * the character class of RFC 9110 §5.5 (and next to bytes that are allowed, so a word holds both kinds). */
    for (int b = 0; b < 256; b++) {
        int allowed = b == '\t' || (b >= 0x20 && b != 0x7f);
        if (b == '\r' || b == '\n')
            continue; /* these end the line: covered by the cases above */
        for (size_t off = 0; off < 19; off++) {
            char blk[64];
            char val[19];
            memset(val, off % 2 ? 'v' : '\xe9', sizeof(val));
            val[0] = 'a'; /* a value starting with SP/HTAB would be trimmed, not scanned differently */
            if (off > 0)
                val[off] = (char)b;
            static const char head[] = "GET / HTTP/1.1\r\nX-A: ";
            size_t n = sizeof(head) - 1;
            memcpy(blk, head, n);
            memcpy(blk + n, val, sizeof(val)); /* the byte itself, NUL included */
            n += sizeof(val);
            memcpy(blk + n, "\r\n\r\n", 4);
            n += 4;
            int got = px_h1_scan(blk, n, &line, h, 8);
            if (off > 0 && !allowed ? got != PX_H1_MALFORMED : got != 1)
                fail_msg("byte 0x%02x at offset %zu: %d", b, off, got);
        }
    }
}

/* Connection tokens that name framing, and Host counts. */
static void test_check_framing_and_host(void **state)
{
    rt_span_t line;
    rt_header_t h[24];
    int n;
    (void)state;

#define CHECK(block, flags)                                                                                            \
    (n = px_h1_scan(BLOCK(block), &line, h, 24), assert_true(n >= 0), px_h1_check(h, (size_t)n, (flags)))
    assert_int_equal(CHECK("GET / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length\r\n\r\n", 0), PX_H1_BAD_CONNECTION);
    assert_int_equal(CHECK("GET / HTTP/1.1\r\nConnection: keep-alive,TRANSFER-ENCODING\r\n\r\n", 0),
                     PX_H1_BAD_CONNECTION);
    assert_int_equal(CHECK("GET / HTTP/1.1\r\nConnection: close\r\nConnection: , host ,\r\n\r\n", 0),
                     PX_H1_BAD_CONNECTION);
    /* past the tokens the builders remember */
    assert_int_equal(CHECK("GET / HTTP/1.1\r\nConnection: a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q,r,s,host\r\n\r\n", 0),
                     PX_H1_BAD_CONNECTION);
    assert_int_equal(CHECK("GET / HTTP/1.1\r\nConnection: close, x-host, content-lengths\r\n\r\n", 0), 0);
    assert_int_equal(CHECK("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", PX_H1_HOST_ONE), PX_H1_BAD_HOST);
    assert_int_equal(CHECK("GET / HTTP/1.1\r\nX: a\r\n\r\n", PX_H1_HOST_REQUIRED), PX_H1_BAD_HOST);
    assert_int_equal(CHECK("GET / HTTP/1.1\r\nX: a\r\n\r\n", PX_H1_HOST_ONE), 0);
    assert_int_equal(CHECK("GET / HTTP/1.1\r\nhOsT: a\r\n\r\n", PX_H1_HOST_REQUIRED), 0);
#undef CHECK
}

static size_t build_req(const char *block, size_t len, const char *ip, char *out, size_t cap)
{
    rt_span_t line;
    rt_header_t h[32];
    px_h1_fwd_req_t fr;
    int n = px_h1_scan(block, len, &line, h, 32);

    assert_true(n >= 0);
    memset(&fr, 0, sizeof(fr));
    assert_int_equal(px_h1_request_line(line, &fr.method, &fr.target), 0);
    fr.client_ip = ip;
    fr.host = "10.0.0.7:8080";
    return px_h1_build_request(out, cap, &fr, h, (size_t)n);
}

static void test_request_drops_hop_by_hop_and_appends_xff(void **state)
{
    static const char in[] = "GET /p?q=1 HTTP/1.0\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\n"
                             "X-Secret: s\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n"
                             "X-Forwarded-Proto: https\r\nUpgrade: h2c\r\nAccept: */*\r\n\r\n";
    char out[1024];
    size_t n = build_req(in, sizeof(in) - 1, "127.0.0.1", out, sizeof(out));
    (void)state;

    assert_true(n > 0);
    out[n] = '\0';
    assert_string_equal(out, "GET /p?q=1 HTTP/1.1\r\nAccept: */*\r\nHost: 10.0.0.7:8080\r\n"
                             "X-Forwarded-For: 10.0.0.1, 10.0.0.2, 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n");
}

static void test_request_keeps_host_and_framing(void **state)
{
    static const char in[] = "POST / HTTP/1.1\r\nhost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    char out[512];
    size_t n = build_req(in, sizeof(in) - 1, "::1", out, sizeof(out));
    (void)state;

    out[n] = '\0';
    assert_string_equal(out, "POST / HTTP/1.1\r\nhost: a\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: ::1\r\n"
                             "X-Forwarded-Proto: http\r\n\r\n");
}

/* Lines already in "Name: value" form are copied as they came (in runs), the others are rewritten to it. */
static void test_request_normalises_odd_lines_between_runs(void **state)
{
    static const char in[] = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB:2\r\nC:  3 \t\r\nD: 4\r\nE: 5\r\n"
                             "Connection: x\r\nF: \r\nG:\r\nx: hop\r\nY: last\r\n\r\n";
    char out[512];
    size_t n = build_req(in, sizeof(in) - 1, "10.1.2.3", out, sizeof(out));
    (void)state;

    assert_true(n > 0);
    out[n] = '\0';
    assert_string_equal(out, "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: \r\nG: \r\n"
                             "Y: last\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\r\n");
    /* Too small by one byte, whether the cut falls in a run or in a rewritten line. */
    assert_int_equal(build_req(in, sizeof(in) - 1, "10.1.2.3", out, n - 1), 0);
    assert_int_equal(build_req(in, sizeof(in) - 1, "10.1.2.3", out, 40), 0);
}

static void test_request_overflow_is_zero(void **state)
{
    static const char in[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    char out[20];
    (void)state;

    assert_int_equal(build_req(in, sizeof(in) - 1, "127.0.0.1", out, sizeof(out)), 0);
}

static void test_response_connection_and_variant(void **state)
{
    static const char in[] = "HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\n"
                             "Content-Type: text/plain\r\n\r\n";
    rt_span_t line;
    rt_header_t h[8];
    px_h1_fwd_res_t fr;
    char out[512];
    int n = px_h1_scan(in, sizeof(in) - 1, &line, h, 8);
    size_t len;
    (void)state;

    memset(&fr, 0, sizeof(fr));
    fr.status_line = line;
    fr.keep_alive = 1;
    fr.dechunk = 1;
    fr.variant = "canary";
    fr.extra = "Set-Cookie: u=1; Path=/; HttpOnly\r\n";
    len = px_h1_build_response(out, sizeof(out), &fr, h, (size_t)n);
    out[len] = '\0';
    assert_string_equal(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n"
                             "Set-Cookie: u=1; Path=/; HttpOnly\r\nx-weir-variant: canary\r\n\r\n");
}

static void test_local_response(void **state)
{
    char out[256];
    size_t n = px_h1_build_local(out, sizeof(out), 502, "no endpoint\n", 1, NULL);
    (void)state;

    out[n] = '\0';
    assert_string_equal(out, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
                             "Connection: close\r\n\r\nno endpoint\n");
    assert_int_equal(px_h1_build_local(out, 10, 502, "no endpoint\n", 1, NULL), 0);
}

static void test_addr_text(void **state)
{
    static const char *v4[] = {"0.0.0.0", "127.0.0.1", "10.20.3.104", "255.255.255.255", "9.99.100.199"};
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    char out[PX_H1_ADDR_TEXT];
    size_t i;
    (void)state;

    for (i = 0; i < sizeof(v4) / sizeof(v4[0]); i++) {
        memset(&a4, 0, sizeof(a4));
        a4.sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, v4[i], &a4.sin_addr), 1);
        memset(out, 'x', sizeof(out));
        px_h1_addr_text((const struct sockaddr *)&a4, out);
        assert_string_equal(out, v4[i]);
    }
    memset(&a6, 0, sizeof(a6));
    a6.sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::7", &a6.sin6_addr), 1);
    px_h1_addr_text((const struct sockaddr *)&a6, out);
    assert_string_equal(out, "2001:db8::7");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_splits_and_trims),
        cmocka_unit_test(test_scan_refuses_smuggling_shapes),
        cmocka_unit_test(test_scan_refuses_bad_characters),
        cmocka_unit_test(test_check_framing_and_host),
        cmocka_unit_test(test_request_drops_hop_by_hop_and_appends_xff),
        cmocka_unit_test(test_request_keeps_host_and_framing),
        cmocka_unit_test(test_request_normalises_odd_lines_between_runs),
        cmocka_unit_test(test_request_overflow_is_zero),
        cmocka_unit_test(test_response_connection_and_variant),
        cmocka_unit_test(test_local_response),
        cmocka_unit_test(test_addr_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
