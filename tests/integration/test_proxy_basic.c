/* The HTTP/1.x proxy path of weir against real upstreams (SPEC §3 step 3, §6): forwarding, keep-alive on both
 * sides, bodies, X-Forwarded-*, hop-by-hop headers, HTTP/1.0, weir's own error responses, round-robin and retry
 * on a refused endpoint. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "harness.h"

#define GET_REQ(path) "GET " path " HTTP/1.1\r\nHost: test\r\n\r\n"

static void test_get_reaches_stable(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_resp_t r = {0};
    th_get(env->port, "/some/path?q=1", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(th_header(&r, "x-upstream"), "stable");
    assert_string_equal(r.body, "hello from stable\n");
    th_weir_stop(env);
}

static void test_client_keepalive(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    for (int i = 0; i < 100; i++) {
        th_exchange(c, GET_REQ("/"), &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "hello from stable\n");
        assert_false(r.until_close);
    }
    assert_false(th_conn_closed_now(c));
    th_weir_stop(env);
}

static void test_upstream_keepalive(void **state)
{
    th_env_t *env = *state;
    int u = th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    for (int i = 0; i < 100; i++) {
        th_exchange(c, GET_REQ("/"), &r);
        assert_int_equal(r.status, 200);
    }
    assert_int_equal(th_upstream_stat(env, u, "/__count"), 100);
    long conns = th_upstream_stat(env, u, "/__conns");
    if (conns < 1 || conns > 2)
        fail_msg("100 sequential requests used %ld upstream connections", conns);
    th_weir_stop(env);
}

static void test_post_content_length(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    const size_t sizes[] = {5, 100000, 1 << 20};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t n = sizes[k];
        char *body = th_alloc(n);
        for (size_t i = 0; i < n; i++)
            body[i] = th_pattern_byte(i);
        assert_int_equal(th_conn_sendf(c, "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: %zu\r\n\r\n", n), 0);
        assert_int_equal(th_conn_send(c, body, n), 0);
        assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
        assert_int_equal(r.status, 200);
        size_t got;
        const char *echoed = th_echo_body(&r, &got);
        assert_non_null(echoed);
        assert_int_equal(got, n);
        assert_true(th_pattern_ok(echoed, got));
        char line[64];
        assert_true(th_echo_request_line(&r, line, sizeof(line)));
        assert_string_equal(line, "POST /echo HTTP/1.1");
        th_free(body);
        th_resp_free(&r);
    }
    th_weir_stop(env);
}

static void test_post_chunked(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    th_exchange(c,
             "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
             "5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n",
             &r);
    assert_int_equal(r.status, 200);
    size_t n;
    const char *body = th_echo_body(&r, &n);
    assert_non_null(body);
    assert_int_equal(n, 11);
    assert_memory_equal(body, "hello world", 11);
    /* re-framed, never both */
    char v[64];
    assert_false(th_echo_header(&r, "content-length", 0, v, sizeof(v)) &&
                 th_echo_header(&r, "transfer-encoding", 0, v, sizeof(v)));

    /* the connection goes on after a chunked body */
    th_exchange(c, GET_REQ("/"), &r);
    assert_int_equal(r.status, 200);
    th_weir_stop(env);
}

static void test_x_forwarded(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    char v[256];

    th_exchange(c, "GET /echo HTTP/1.1\r\nHost: test\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(th_echo_header_count(&r, "x-forwarded-for"), 1);
    assert_true(th_echo_header(&r, "x-forwarded-for", 0, v, sizeof(v)));
    assert_string_equal(v, "10.0.0.1, 127.0.0.1");
    assert_true(th_echo_header(&r, "x-forwarded-proto", 0, v, sizeof(v)));
    assert_string_equal(v, "http");

    th_exchange(c, "GET /echo HTTP/1.1\r\nHost: test\r\n\r\n", &r);
    assert_int_equal(th_echo_header_count(&r, "x-forwarded-for"), 1);
    assert_true(th_echo_header(&r, "x-forwarded-for", 0, v, sizeof(v)));
    assert_string_equal(v, "127.0.0.1");
    assert_int_equal(th_echo_header_count(&r, "x-forwarded-proto"), 1);

    /* a client's own X-Forwarded-Proto is replaced, not passed on */
    th_exchange(c, "GET /echo HTTP/1.1\r\nHost: test\r\nX-Forwarded-Proto: https\r\n\r\n", &r);
    assert_int_equal(th_echo_header_count(&r, "x-forwarded-proto"), 1);
    assert_true(th_echo_header(&r, "x-forwarded-proto", 0, v, sizeof(v)));
    assert_string_equal(v, "http");

    /* the Host header and the request target go through unchanged */
    th_exchange(c, "GET /echo?a=1&b=2 HTTP/1.1\r\nHost: example.test:8080\r\n\r\n", &r);
    assert_true(th_echo_header(&r, "host", 0, v, sizeof(v)));
    assert_string_equal(v, "example.test:8080");
    assert_true(th_echo_request_line(&r, v, sizeof(v)));
    assert_string_equal(v, "GET /echo?a=1&b=2 HTTP/1.1");
    th_weir_stop(env);
}

static void test_hop_by_hop_request(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    th_exchange(c,
             "GET /echo HTTP/1.1\r\nHost: test\r\n"
             "Connection: keep-alive, X-Foo\r\n"
             "X-Foo: secret\r\n"
             "Keep-Alive: timeout=300\r\n"
             "Proxy-Connection: keep-alive\r\n"
             "TE: trailers\r\n"
             "Trailer: X-Checksum\r\n"
             "X-Keep: yes\r\n"
             "\r\n",
             &r);
    assert_int_equal(r.status, 200);
    const char *gone[] = {"x-foo", "keep-alive", "proxy-connection", "te", "trailer"};
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
        if (th_echo_header_count(&r, gone[i]) != 0)
            fail_msg("hop-by-hop header %s was forwarded", gone[i]);
    char v[256];
    assert_true(th_echo_header(&r, "x-keep", 0, v, sizeof(v)));
    assert_string_equal(v, "yes");
    for (int i = 0; th_echo_header(&r, "connection", i, v, sizeof(v)); i++)
        assert_null(th_strcasestr(v, "x-foo"));

    /* the client connection itself stays persistent */
    th_exchange(c, GET_REQ("/"), &r);
    assert_int_equal(r.status, 200);
    th_weir_stop(env);
}

static void test_hop_by_hop_response(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    th_exchange(c, GET_REQ("/hop"), &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello from stable\n");
    assert_null(th_header(&r, "x-resp-hop"));
    assert_null(th_header(&r, "proxy-connection"));
    const char *ka = th_header(&r, "keep-alive");
    assert_true(ka == NULL || strcmp(ka, "timeout=30") != 0);
    for (int i = 0; i < r.nheaders; i++)
        if (strcasecmp(r.hname[i], "connection") == 0)
            assert_null(th_strcasestr(r.hvalue[i], "x-resp-hop"));
    assert_string_equal(th_header(&r, "x-end-to-end"), "1");
    th_exchange(c, GET_REQ("/"), &r);
    assert_int_equal(r.status, 200);
    th_weir_stop(env);
}

static void test_http10_closes(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    th_exchange(c, "GET / HTTP/1.0\r\nHost: test\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_false(r.chunked); /* an HTTP/1.0 client cannot read chunked framing */
    assert_string_equal(r.body, "hello from stable\n");
    assert_true(th_conn_wait_closed(c, TH_TIMEOUT_MS));
    th_weir_stop(env);
}

static void test_http10_keepalive(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    for (int i = 0; i < 3; i++) {
        th_exchange(c, "GET / HTTP/1.0\r\nHost: test\r\nConnection: keep-alive\r\n\r\n", &r);
        assert_int_equal(r.status, 200);
        assert_false(r.chunked);
        assert_false(r.until_close);
        assert_string_equal(r.body, "hello from stable\n");
    }
    /* a chunked upstream response must be re-framed for HTTP/1.0 */
    th_exchange(c, "GET /chunked/3000 HTTP/1.0\r\nHost: test\r\nConnection: keep-alive\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_false(r.chunked);
    assert_int_equal(r.body_len, 3000);
    assert_true(th_pattern_ok(r.body, r.body_len));
    th_weir_stop(env);
}

static void test_pipelining(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    assert_int_equal(th_conn_sendf(c, GET_REQ("/status/201") "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: "
                                                             "4\r\n\r\nping" GET_REQ("/bytes/70000")
                                                                 GET_REQ("/status/202")),
                     0);
    assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 201);
    assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    size_t n;
    const char *b = th_echo_body(&r, &n);
    assert_non_null(b);
    assert_int_equal(n, 4);
    assert_memory_equal(b, "ping", 4);
    assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.body_len, 70000);
    assert_true(th_pattern_ok(r.body, r.body_len));
    assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 202);
    th_weir_stop(env);
}

static void test_head_204_304(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    th_exchange(c, "HEAD /bytes/100 HTTP/1.1\r\nHost: test\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    assert_string_equal(th_header(&r, "content-length"), "100");
    th_exchange(c, GET_REQ("/status/204"), &r);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.body_len, 0);
    th_exchange(c, GET_REQ("/status/304"), &r);
    assert_int_equal(r.status, 304);
    /* nothing stray was left on the connection: the next response is the right one */
    th_exchange(c, GET_REQ("/status/203"), &r);
    assert_int_equal(r.status, 203);
    assert_string_equal(r.body, "203\n");
    th_weir_stop(env);
}

static void test_large_responses(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    const size_t n = 8u << 20;
    th_exchange(c, GET_REQ("/bytes/8388608"), &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, n);
    assert_true(th_pattern_ok(r.body, r.body_len));
    th_exchange(c, GET_REQ("/chunked/8388608"), &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, n);
    assert_true(th_pattern_ok(r.body, r.body_len));
    th_resp_free(&r);

    /* a response framed by the upstream's close still arrives whole */
    th_conn_t *d = th_conn_open(env->port);
    th_exchange(d, GET_REQ("/eof/100000"), &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 100000);
    assert_true(th_pattern_ok(r.body, r.body_len));
    th_weir_stop(env);
}

static void test_expect_continue(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    assert_int_equal(th_conn_sendf(c, "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 7\r\n"
                                      "Expect: 100-continue\r\n\r\n"),
                     0);
    /* the body is sent only after the interim response, as a client waiting for it would */
    assert_int_equal(th_conn_read_response_any(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 100);
    assert_int_equal(th_conn_send(c, "payload", 7), 0);
    assert_int_equal(th_conn_read_response(c, &r, false, TH_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    size_t n;
    const char *b = th_echo_body(&r, &n);
    assert_non_null(b);
    assert_int_equal(n, 7);
    assert_memory_equal(b, "payload", 7);
    th_weir_stop(env);
}

static void test_malformed_400(void **state)
{
    th_env_t *env = *state;
    int u = th_start_stable(env, NULL);
    const char *bad[] = {
        "GET / HTTP/1.1\r\nHost: test\r\nThis is not a header\r\n\r\n",
        "GET /\x01 HTTP/1.1\r\nHost: test\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nTransfer-Encoding: "
        "chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: abc\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        th_conn_t *c = th_conn_open(env->port);
        th_resp_t r = {0};
        if (th_conn_send(c, bad[i], strlen(bad[i])) < 0 || th_conn_read_response(c, &r, false, TH_TIMEOUT_MS) < 0)
            fail_msg("no response to malformed request %zu", i);
        th_assert_own_response(&r, 400);
        if (!th_conn_wait_closed(c, TH_TIMEOUT_MS))
            fail_msg("connection left open after 400 to request %zu", i);
        th_conn_close(c);
    }
    /* none of them reached the upstream */
    assert_int_equal(th_upstream_stat(env, u, "/__count"), 0);

    /* bad chunk framing: the head may have been forwarded already, but the client still gets a 400 and a close */
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    th_exchange(c, "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", &r);
    th_assert_own_response(&r, 400);
    assert_true(th_conn_wait_closed(c, TH_TIMEOUT_MS));
    th_weir_stop(env);
}

static void test_transfer_encoding_501(void **state)
{
    th_env_t *env = *state;
    int u = th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    th_exchange(c, "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip\r\n\r\n", &r);
    th_assert_own_response(&r, 501);
    assert_int_equal(th_upstream_stat(env, u, "/__count"), 0);
    th_weir_stop(env);
}

static void test_header_too_large_431(void **state)
{
    th_env_t *env = *state;
    int u = th_start_stable(env, "--max-header-bytes", "1k", NULL);
    char small[501], big[2001];
    memset(small, 's', sizeof(small) - 1);
    small[sizeof(small) - 1] = '\0';
    memset(big, 'b', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    th_exchange(c, th_fmt("GET / HTTP/1.1\r\nHost: test\r\nX-Small: %s\r\n\r\n", small), &r);
    assert_int_equal(r.status, 200);
    th_exchange(c, th_fmt("GET / HTTP/1.1\r\nHost: test\r\nX-Big: %s\r\n\r\n", big), &r);
    th_assert_own_response(&r, 431);
    assert_true(th_conn_wait_closed(c, TH_TIMEOUT_MS));

    /* many small headers adding up past the limit count too */
    c = th_conn_open(env->port);
    char *many = th_strdup("GET / HTTP/1.1\r\nHost: test\r\n");
    for (int i = 0; i < 100; i++)
        many = th_fmt("%sX-H%d: 0123456789\r\n", many, i);
    th_exchange(c, th_fmt("%s\r\n", many), &r);
    th_assert_own_response(&r, 431);
    assert_true(th_conn_wait_closed(c, TH_TIMEOUT_MS));
    assert_int_equal(th_upstream_stat(env, u, "/__count"), 1);
    th_weir_stop(env);
}

/* An upstream response's header block is relayed while it fits one I/O buffer (64 KiB by default, README "I/O
 * buffers"); past that weir answers 502 itself. 40,000 bytes did not fit the 20 KiB buffers weir had before. */
static void test_large_response_header_block(void **state)
{
    th_env_t *env = *state;
    th_start_stable(env, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    th_exchange(c, GET_REQ("/bighead/40000"), &r);
    assert_int_equal(r.status, 200);
    assert_non_null(th_header(&r, "x-big"));
    assert_int_equal(strlen(th_header(&r, "x-big")), 40000);
    assert_string_equal(r.body, "hello from stable\n");
    th_exchange(c, GET_REQ("/bighead/70000"), &r);
    th_assert_own_response(&r, 502);
    th_weir_stop(env);
}

static void test_refused_502(void **state)
{
    th_env_t *env = *state;
    char *dead = th_fmt("127.0.0.1:%d", th_free_port());
    th_weir_startl(env, "--stable", dead, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    th_exchange(c, GET_REQ("/"), &r);
    th_assert_own_response(&r, 502);
    /* a 502 does not end a persistent client connection unless weir says so */
    const char *conn = th_header(&r, "connection");
    if (conn == NULL || th_strcasestr(conn, "close") == NULL) {
        th_exchange(c, GET_REQ("/"), &r);
        th_assert_own_response(&r, 502);
    }
    th_weir_stop(env);
}

static void test_no_endpoint_503(void **state)
{
    th_env_t *env = *state;
    int u = th_start_stable(env, "--weight", "canary", "100", NULL); /* canary has no endpoint */
    th_resp_t r = {0};
    for (int i = 0; i < 5; i++) {
        th_get(env->port, "/", &r);
        th_assert_own_response(&r, 503);
    }
    assert_int_equal(th_upstream_stat(env, u, "/__count"), 0);
    th_weir_stop(env);
}

static void test_round_robin(void **state)
{
    th_env_t *env = *state;
    int a = th_upstream_start(env, "stable-a");
    int b = th_upstream_start(env, "stable-b");
    th_weir_startl(env, "--stable", env->up[a].addr, "--stable", env->up[b].addr, NULL);
    th_conn_t *c = th_conn_open(env->port);
    th_resp_t r = {0};
    int na = 0, nb = 0;
    for (int i = 0; i < 100; i++) {
        th_exchange(c, GET_REQ("/"), &r);
        assert_int_equal(r.status, 200);
        const char *who = th_header(&r, "x-upstream");
        assert_non_null(who);
        na += strcmp(who, "stable-a") == 0;
        nb += strcmp(who, "stable-b") == 0;
    }
    if (na + nb != 100 || na <= 30 || nb <= 30)
        fail_msg("round-robin gave %d and %d of 100", na, nb);
    assert_int_equal(th_upstream_stat(env, a, "/__count"), na);
    assert_int_equal(th_upstream_stat(env, b, "/__count"), nb);
    th_weir_stop(env);
}

static void test_dead_endpoint_retried(void **state)
{
    th_env_t *env = *state;
    int a = th_upstream_start(env, "stable-a");
    char *dead = th_fmt("127.0.0.1:%d", th_free_port());
    th_weir_startl(env, "--stable", dead, "--stable", env->up[a].addr, NULL);
    th_resp_t r = {0};
    /* on fresh connections and on one persistent connection alike */
    for (int i = 0; i < 30; i++) {
        th_get(env->port, "/", &r);
        if (r.status != 200)
            fail_msg("request %d got %d with one of two endpoints refusing", i, r.status);
        assert_string_equal(th_header(&r, "x-upstream"), "stable-a");
    }
    th_conn_t *c = th_conn_open(env->port);
    for (int i = 0; i < 30; i++) {
        th_exchange(c, "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc", &r);
        if (r.status != 200)
            fail_msg("request %d got %d with one of two endpoints refusing", i, r.status);
        size_t n;
        const char *b = th_echo_body(&r, &n);
        assert_non_null(b);
        assert_int_equal(n, 3);
        assert_memory_equal(b, "abc", 3);
    }
    assert_int_equal(th_upstream_stat(env, a, "/__count"), 60);
    th_weir_stop(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_reaches_stable, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_client_keepalive, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_upstream_keepalive, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_post_content_length, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_post_chunked, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_x_forwarded, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_hop_by_hop_request, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_hop_by_hop_response, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_http10_closes, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_http10_keepalive, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_pipelining, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_head_204_304, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_large_responses, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_expect_continue, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_malformed_400, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_transfer_encoding_501, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_header_too_large_431, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_large_response_header_block, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_refused_502, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_no_endpoint_503, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_round_robin, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_dead_endpoint_retried, th_setup, th_teardown),
    };
    th_filter_from_env();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
