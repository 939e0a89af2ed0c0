/* The control protocol (SPEC §4) on the router side: framing, tokenizer, every request and its error replies,
 * generation bumps, atomicity, the state file, and out-of-memory paths. Every allocation goes through cmocka, so a
 * leak fails the test that caused it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "rt/buf.h"
#include "rt/ctl.h"
#include "rt/table.h"

#include "rt_test.h"

/* The table most cases start from: canary 10 %, an extra variant "exp" at 0 %, stable 90 %, generation 5. */
static rt_table_t *base_table(void)
{
    rt_table_t *t = rt_table_new();
    const char *names[] = {"canary"};
    const uint32_t bps[] = {1000};

    assert_non_null(t);
    assert_int_equal(rt_table_add_variant(t, "exp"), 2);
    assert_int_equal(rt_table_set_weights(t, names, bps, 1, NULL), 0);
    rt_table_set_generation(t, 5);
    return t;
}

/* Runs <line> on <cur>; returns the op and leaves the reply in <reply> (emptied first). */
static int run(const rt_table_t *cur, const char *line, rt_table_t **next, rt_buf_t *reply)
{
    rt_buf_reset(reply);
    return rt_ctl_exec(cur, line, strlen(line), next, reply);
}

/* Runs <line>, which must succeed as <op>, and if it produced a new table makes that the current one. */
static void step(rt_table_t **cur, const char *line, int op, int changed)
{
    rt_buf_t reply = RT_BUF_INIT;
    rt_table_t *next;
    uint64_t gen = rt_table_generation(*cur);

    assert_int_equal(run(*cur, line, &next, &reply), op);
    assert_string_equal(reply.p, "ok\n\n");
    if (changed) {
        assert_non_null(next);
        assert_int_equal(rt_table_generation(next), gen + 1);
        rt_table_free(*cur);
        *cur = next;
    } else {
        assert_null(next);
    }
    rt_buf_dispose(&reply);
}

/* The reply of the read request <line> on <t>. Caller disposes <reply>. */
static void read_req(const rt_table_t *t, const char *line, rt_buf_t *reply)
{
    rt_table_t *next = (rt_table_t *)1;

    assert_int_not_equal(run(t, line, &next, reply), RT_CTL_ERROR);
    assert_null(next);
}

static void test_framing(void **state)
{
    static const struct {
        const char *in;
        size_t len; /* 0: strlen */
        long ret;
        size_t linelen;
    } cases[] = {
        {"get weight\n", 0, 11, 10},
        {"get weight\r\n", 0, 12, 10},
        {"get weight", 0, 0, 0},
        {"get weight\r", 0, 0, 0},
        {"", 0, 0, 0},
        {"\n", 0, 1, 0},
        {"\r\n", 0, 2, 0},
        {"a\nb\n", 0, 2, 1},
        {"a\rb\r\n", 0, 5, 3}, /* only the '\r' right before '\n' belongs to the terminator */
    };
    static char big[RT_CTL_LINE_MAX + 16];
    size_t i, linelen;
    int found;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].in);
        linelen = 12345;
        assert_int_equal(rt_ctl_next_line(cases[i].in, len, &linelen), cases[i].ret);
        if (cases[i].ret > 0)
            assert_int_equal(linelen, cases[i].linelen);
    }
    assert_int_equal(rt_ctl_next_line(NULL, 0, &linelen), 0);

    /* exactly RT_CTL_LINE_MAX bytes is allowed, with either terminator; one more is not */
    memset(big, 'a', sizeof(big));
    big[RT_CTL_LINE_MAX] = '\n';
    assert_int_equal(rt_ctl_next_line(big, RT_CTL_LINE_MAX + 1, &linelen), RT_CTL_LINE_MAX + 1);
    assert_int_equal(linelen, RT_CTL_LINE_MAX);
    big[RT_CTL_LINE_MAX] = '\r';
    big[RT_CTL_LINE_MAX + 1] = '\n';
    assert_int_equal(rt_ctl_next_line(big, RT_CTL_LINE_MAX + 2, &linelen), RT_CTL_LINE_MAX + 2);
    assert_int_equal(linelen, RT_CTL_LINE_MAX);
    memset(big, 'a', sizeof(big));
    big[RT_CTL_LINE_MAX + 1] = '\n';
    assert_int_equal(rt_ctl_next_line(big, RT_CTL_LINE_MAX + 2, &linelen), -1);
    /* no newline yet: undecided while a "\r\n" could still end it in time, too long after that */
    assert_int_equal(rt_ctl_next_line(big, RT_CTL_LINE_MAX + 1, &linelen), 0);
    memset(big, 'a', sizeof(big));
    assert_int_equal(rt_ctl_next_line(big, RT_CTL_LINE_MAX + 2, &linelen), -1);
    assert_int_equal(rt_ctl_next_line(big, sizeof(big), &linelen), -1);

    assert_int_equal(rt_ctl_skip_line("xxx\nget", 7, &found), 4);
    assert_int_equal(found, 1);
    assert_int_equal(rt_ctl_skip_line("xxxx", 4, &found), 4);
    assert_int_equal(found, 0);
    assert_int_equal(rt_ctl_skip_line(NULL, 0, &found), 0);
    assert_int_equal(found, 0);
}

/* Feeds <in> one byte at a time through the loop documented in rt/ctl.h and records what it saw, one line each:
 * the request lines, or "TOO LONG". */
static void pump_bytewise(const char *in, size_t inlen, rt_buf_t *seen)
{
    rt_buf_t buf = RT_BUF_INIT;
    int discarding = 0, found;
    size_t i, linelen;
    long n;

    for (i = 0; i < inlen; i++) {
        assert_int_equal(rt_buf_append(&buf, in + i, 1), 0);
        for (;;) {
            if (discarding) {
                rt_buf_consume(&buf, rt_ctl_skip_line(buf.p, buf.len, &found));
                if (!found)
                    break;
                discarding = 0;
            }
            n = rt_ctl_next_line(buf.p, buf.len, &linelen);
            if (n == 0)
                break;
            if (n < 0) {
                assert_int_equal(rt_buf_puts(seen, "TOO LONG\n"), 0);
                discarding = 1;
                continue;
            }
            assert_int_equal(rt_buf_append(seen, buf.p, linelen), 0);
            assert_int_equal(rt_buf_putc(seen, '\n'), 0);
            rt_buf_consume(&buf, (size_t)n);
        }
    }
    assert_int_equal(buf.len, 0);
    rt_buf_dispose(&buf);
}

static void test_framing_stream(void **state)
{
    rt_buf_t in = RT_BUF_INIT, seen = RT_BUF_INIT;
    size_t i;

    (void)state;
    assert_int_equal(rt_buf_puts(&in, "get weight\r\nshow routes\n"), 0);
    for (i = 0; i < RT_CTL_LINE_MAX + 100; i++)
        assert_int_equal(rt_buf_putc(&in, 'x'), 0);
    assert_int_equal(rt_buf_puts(&in, "\r\nstatus\n\n"), 0);
    pump_bytewise(in.p, in.len, &seen);
    assert_string_equal(seen.p, "get weight\nshow routes\nTOO LONG\nstatus\n\n");
    rt_buf_dispose(&in);
    rt_buf_dispose(&seen);
}

static void test_tokenize(void **state)
{
    static const struct {
        const char *line;
        int n;              /* -1: error */
        const char *tok[4]; /* the tokens, or tok[0] = the error message */
    } cases[] = {
        {"a b  c", 3, {"a", "b", "c"}},
        {"\t a \t", 1, {"a"}},
        {"", 0, {NULL}},
        {" \t ", 0, {NULL}},
        {"\"a b\" c", 2, {"a b", "c"}},
        {"\"\" x", 2, {"", "x"}},
        {"\"\"", 1, {""}},
        {"\"a\\\"b\\\\c\"", 1, {"a\"b\\c"}},
        {"a\"b", 1, {"a\"b"}}, /* a quote inside an unquoted token is an ordinary byte */
        {"a\\b", 1, {"a\\b"}}, /* so is a backslash */
        {"\"tab\there\"", 1, {"tab\there"}},
        {"x \"\\\\\"", 2, {"x", "\\"}},
        {"\"abc", -1, {"unterminated quote"}},
        {"\"abc\\", -1, {"unterminated quote"}},
        {"\"abc\\\"", -1, {"unterminated quote"}},
        {"\"a\\nb\"", -1, {"bad escape '\\n' (only \\\" and \\\\)"}},
        {"\"a\"b", -1, {"missing space after closing quote"}},
        {"\"a\"\"b\"", -1, {"missing space after closing quote"}},
    };
    rt_ctl_tokens_t *tk = malloc(sizeof(*tk));
    char err[128], many[3 * 70];
    size_t i, k;

    (void)state;
    assert_non_null(tk);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = rt_ctl_tokenize(cases[i].line, strlen(cases[i].line), tk, err, sizeof(err));
        if (cases[i].n < 0) {
            assert_int_equal(rc, -1);
            assert_string_equal(err, cases[i].tok[0]);
            continue;
        }
        assert_int_equal(rc, 0);
        assert_int_equal(tk->n, (size_t)cases[i].n);
        for (k = 0; k < tk->n; k++) {
            assert_string_equal(tk->v[k], cases[i].tok[k]);
            assert_int_equal(tk->len[k], strlen(cases[i].tok[k]));
        }
    }
    /* 70 tokens fit, 71 do not */
    for (i = 0; i < 71; i++)
        memcpy(many + 2 * i, "a ", 2);
    assert_int_equal(rt_ctl_tokenize(many, 2 * 70, tk, err, sizeof(err)), 0);
    assert_int_equal(tk->n, 70);
    assert_int_equal(rt_ctl_tokenize(many, 2 * 71, tk, err, sizeof(err)), -1);
    assert_string_equal(err, "more than 70 tokens");
    assert_int_equal(rt_ctl_tokenize("a\0b", 3, tk, err, sizeof(err)), -1);
    assert_string_equal(err, "NUL byte in request");
    free(tk);
}

static void test_quote_roundtrip(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"abc", "abc"},         {"", "\"\""},           {"a b", "\"a b\""},       {"a\tb", "\"a\tb\""},
        {"a\"b", "\"a\\\"b\""}, {"a\\b", "\"a\\\\b\""}, {"\\\"", "\"\\\\\\\"\""}, {"^/api/(v1|v2)$", "^/api/(v1|v2)$"},
        {"\x01", "\"\x01\""},
    };
    rt_buf_t b = RT_BUF_INIT;
    rt_ctl_tokens_t *tk = malloc(sizeof(*tk));
    char err[64];
    size_t i;

    (void)state;
    assert_non_null(tk);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rt_buf_reset(&b);
        assert_int_equal(rt_ctl_quote(&b, cases[i].in, strlen(cases[i].in)), 0);
        assert_string_equal(b.p, cases[i].out);
        /* what rt_ctl_quote writes, the tokenizer reads back as one token */
        assert_int_equal(rt_ctl_tokenize(b.p, b.len, tk, err, sizeof(err)), 0);
        assert_int_equal(tk->n, 1);
        assert_string_equal(tk->v[0], cases[i].in);
    }
    rt_buf_dispose(&b);
    free(tk);
}

/* A successful request: its op, whether it changes the table, and the reply of <check> on the table afterwards
 * (the new one, or the unchanged <cur>). */
static const struct cmd_case {
    const char *line;
    int op;
    int changed;
    const char *check;
    const char *expect;
} cmd_cases[] = {
    {"set weight 12.5", RT_CTL_SET_WEIGHT, 1, "get weight",
     "ok\ncanary 12.50\nexp 0.00\nstable 87.50\ngeneration 6\n\n"},
    {"set weight 0.05", RT_CTL_SET_WEIGHT, 1, "get weight",
     "ok\ncanary 0.05\nexp 0.00\nstable 99.95\ngeneration 6\n\n"},
    {"set weight 100", RT_CTL_SET_WEIGHT, 1, "get weight",
     "ok\ncanary 100.00\nexp 0.00\nstable 0.00\ngeneration 6\n\n"},
    {"set weight 0", RT_CTL_SET_WEIGHT, 1, "get weight", "ok\ncanary 0.00\nexp 0.00\nstable 100.00\ngeneration 6\n\n"},
    {"set weight canary 5 exp 2.25", RT_CTL_SET_WEIGHT, 1, "get weight",
     "ok\ncanary 5.00\nexp 2.25\nstable 92.75\ngeneration 6\n\n"},
    {"set weight exp 90", RT_CTL_SET_WEIGHT, 1, "get weight",
     "ok\ncanary 10.00\nexp 90.00\nstable 0.00\ngeneration 6\n\n"},
    {"  set\tweight   20  ", RT_CTL_SET_WEIGHT, 1, "get weight",
     "ok\ncanary 20.00\nexp 0.00\nstable 80.00\ngeneration 6\n\n"},
    {"set weight 20\r\n", RT_CTL_SET_WEIGHT, 1, "get weight",
     "ok\ncanary 20.00\nexp 0.00\nstable 80.00\ngeneration 6\n\n"},
    {"set \"weight\" \"30\"", RT_CTL_SET_WEIGHT, 1, "get weight",
     "ok\ncanary 30.00\nexp 0.00\nstable 70.00\ngeneration 6\n\n"},
    /* the same split again: ok, no new generation */
    {"set weight 10", RT_CTL_SET_WEIGHT, 0, "get weight", "ok\ncanary 10.00\nexp 0.00\nstable 90.00\ngeneration 5\n\n"},
    {"set weight canary 10.00 exp 0", RT_CTL_SET_WEIGHT, 0, "get weight",
     "ok\ncanary 10.00\nexp 0.00\nstable 90.00\ngeneration 5\n\n"},
    {"set header-route r1 header X-Canary exact 1", RT_CTL_SET_HEADER_ROUTE, 1, "show routes",
     "ok\nset header-route r1 to canary header x-canary exact 1\n\n"},
    {"set header-route r2 to exp method GET,POST path prefix /api header cookie:user regex \"a.*\"",
     RT_CTL_SET_HEADER_ROUTE, 1, "show routes",
     "ok\nset header-route r2 to exp method GET,POST path prefix /api header cookie:user regex a.*\n\n"},
    {"set header-route to to stable path exact \"/a b\\\"c\"", RT_CTL_SET_HEADER_ROUTE, 1, "show routes",
     "ok\nset header-route to to stable path exact \"/a b\\\"c\"\n\n"},
    {"set header-route canary-header~1 header x-canary exact 1", RT_CTL_SET_HEADER_ROUTE, 1, "show routes",
     "ok\nset header-route canary-header~1 to canary header x-canary exact 1\n\n"},
    {"set mirror-route ns:mirror.2 5", RT_CTL_SET_MIRROR_ROUTE, 1, "show routes",
     "ok\nset mirror-route ns:mirror.2 5.00 to canary\n\n"},
    {"set mirror-route m1 5", RT_CTL_SET_MIRROR_ROUTE, 1, "show routes", "ok\nset mirror-route m1 5.00 to canary\n\n"},
    {"set mirror-route m2 0.5 to exp path regex \"^/(a|b)$\" method PUT", RT_CTL_SET_MIRROR_ROUTE, 1, "show routes",
     "ok\nset mirror-route m2 0.50 to exp path regex ^/(a|b)$ method PUT\n\n"},
    {"set sticky-salt \"pod 7f\"", RT_CTL_SET_STICKY_SALT, 1, "get weight",
     "ok\ncanary 10.00\nexp 0.00\nstable 90.00\ngeneration 6\n\n"},
    {"set sticky-salt \"\"", RT_CTL_SET_STICKY_SALT, 0, "get weight",
     "ok\ncanary 10.00\nexp 0.00\nstable 90.00\ngeneration 5\n\n"},
    {"del routes", RT_CTL_DEL_ROUTES, 0, "show routes", "ok\n\n"},
};

static void test_commands(void **state)
{
    rt_buf_t reply = RT_BUF_INIT;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cmd_cases) / sizeof(cmd_cases[0]); i++) {
        const struct cmd_case *cc = &cmd_cases[i];
        rt_table_t *cur = base_table(), *next = (rt_table_t *)1;

        print_message("  %s\n", cc->line);
        assert_int_equal(run(cur, cc->line, &next, &reply), cc->op);
        assert_int_equal(rt_ctl_op_is_change(cc->op), 1);
        assert_string_equal(reply.p, "ok\n\n");
        if (cc->changed) {
            assert_non_null(next);
            assert_int_equal(rt_table_equal(cur, next), 0);
        } else {
            assert_null(next);
        }
        read_req(next != NULL ? next : cur, cc->check, &reply);
        assert_string_equal(reply.p, cc->expect);
        /* <cur> itself never changes */
        read_req(cur, "get weight", &reply);
        assert_string_equal(reply.p, "ok\ncanary 10.00\nexp 0.00\nstable 90.00\ngeneration 5\n\n");
        read_req(cur, "show routes", &reply);
        assert_string_equal(reply.p, "ok\n\n");
        rt_table_free(next);
        rt_table_free(cur);
    }
    rt_buf_dispose(&reply);
}

static void test_salt_and_routes_applied(void **state)
{
    rt_table_t *cur = base_table();
    rt_buf_t reply = RT_BUF_INIT;

    (void)state;
    step(&cur, "set sticky-salt \"a \\\"b\\\" \\\\c\"", RT_CTL_SET_STICKY_SALT, 1);
    assert_string_equal(rt_table_salt(cur), "a \"b\" \\c");
    step(&cur, "set header-route first header a exact 1", RT_CTL_SET_HEADER_ROUTE, 1);
    step(&cur, "set mirror-route second 1 header b exact 2", RT_CTL_SET_MIRROR_ROUTE, 1);
    /* replacing a route keeps its place */
    step(&cur, "set header-route first header a exact 3", RT_CTL_SET_HEADER_ROUTE, 1);
    read_req(cur, "show routes", &reply);
    assert_string_equal(reply.p, "ok\nset header-route first to canary header a exact 3\n"
                                 "set mirror-route second 1.00 to canary header b exact 2\n\n");
    step(&cur, "del route first", RT_CTL_DEL_ROUTE, 1);
    read_req(cur, "show routes", &reply);
    assert_string_equal(reply.p, "ok\nset mirror-route second 1.00 to canary header b exact 2\n\n");
    step(&cur, "del routes", RT_CTL_DEL_ROUTES, 1);
    assert_int_equal(rt_table_nroutes(cur), 0);
    assert_int_equal(rt_table_generation(cur), 11);
    rt_buf_dispose(&reply);
    rt_table_free(cur);
}

static void test_reads_and_proxy_ops(void **state)
{
    static const struct {
        const char *line;
        int op;
        const char *reply;
    } cases[] = {
        {"get weight", RT_CTL_GET_WEIGHT, "ok\ncanary 10.00\nexp 0.00\nstable 90.00\ngeneration 5\n\n"},
        {"show routes", RT_CTL_SHOW_ROUTES, "ok\n\n"},
        {"show stats", RT_CTL_SHOW_STATS, ""},
        {"show stats json", RT_CTL_SHOW_STATS_JSON, ""},
        {"reset stats", RT_CTL_RESET_STATS, ""},
        {"status", RT_CTL_STATUS, ""},
        {"auth s3cret", RT_CTL_AUTH, ""},
        {"auth \"with space\"", RT_CTL_AUTH, ""},
    };
    rt_table_t *cur = base_table(), *next;
    rt_buf_t reply = RT_BUF_INIT;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        next = (rt_table_t *)1;
        assert_int_equal(run(cur, cases[i].line, &next, &reply), cases[i].op);
        assert_null(next);
        assert_int_equal(rt_ctl_op_is_change(cases[i].op), 0);
        assert_int_equal(reply.len, strlen(cases[i].reply));
        if (reply.len > 0)
            assert_string_equal(reply.p, cases[i].reply);
    }
    rt_buf_dispose(&reply);
    rt_table_free(cur);
}

static void test_auth_token(void **state)
{
    rt_buf_t tok = RT_BUF_INIT;

    (void)state;
    assert_int_equal(rt_ctl_auth_token("auth s3cret", 11, &tok), 0);
    assert_string_equal(tok.p, "s3cret");
    assert_int_equal(rt_ctl_auth_token("auth \"a b\\\"c\"\r\n", 15, &tok), 0);
    assert_string_equal(tok.p, "a b\"c");
    assert_int_equal(tok.len, 5);
    assert_int_equal(rt_ctl_auth_token("auth", 4, &tok), -1);
    assert_int_equal(rt_ctl_auth_token("auth a b", 8, &tok), -1);
    assert_int_equal(rt_ctl_auth_token("get weight", 10, &tok), -1);
    rt_buf_dispose(&tok);
}

static void test_errors(void **state)
{
    static const struct {
        const char *line;
        const char *reply;
    } cases[] = {
        {"foo", "error: unknown command 'foo'\n\n"},
        {"", "error: empty request\n\n"},
        {"  \t ", "error: empty request\n\n"},
        {"fo\x01o", "error: unknown command 'fo?o'\n\n"},
        {"set", "error: missing argument\n\n"},
        {"set foo", "error: unknown command 'set foo'\n\n"},
        {"get", "error: missing argument\n\n"},
        {"get weights", "error: unknown command 'get weights'\n\n"},
        {"get weight x", "error: unexpected argument 'x'\n\n"},
        {"GET weight", "error: unknown command 'GET'\n\n"},
        {"set weight", "error: missing argument\n\n"},
        {"set weight abc", "error: bad number 'abc'\n\n"},
        {"set weight 1.234", "error: more than two decimals '1.234'\n\n"},
        {"set weight 101", "error: weight out of range '101'\n\n"},
        {"set weight 100.01", "error: weight out of range '100.01'\n\n"},
        {"set weight -1", "error: bad number '-1'\n\n"},
        {"set weight 5%", "error: bad number '5%'\n\n"},
        {"set weight \"\"", "error: bad number ''\n\n"},
        {"set weight canary 60 exp 50", "error: weights sum over 100\n\n"},
        {"set weight exp 95", "error: weights sum over 100\n\n"},
        {"set weight x 5", "error: unknown variant 'x'\n\n"},
        {"set weight Canary 5", "error: unknown variant 'Canary'\n\n"},
        {"set weight stable 5", "error: stable takes no weight: it gets 100 minus the others\n\n"},
        {"set weight canary 5 exp", "error: missing argument\n\n"},
        {"set weight canary 5 canary 6", "error: variant given twice 'canary'\n\n"},
        {"set weight canary 5 exp 1.234", "error: more than two decimals '1.234'\n\n"},
        {"set header-route", "error: missing argument\n\n"},
        {"set header-route r1", "error: a header route needs at least one condition\n\n"},
        {"set header-route r1 to exp", "error: a header route needs at least one condition\n\n"},
        {"set header-route r1 to", "error: missing argument\n\n"},
        {"set header-route r1 to nope header a exact b", "error: unknown variant 'nope'\n\n"},
        {"set header-route r1 header x-a", "error: missing argument\n\n"},
        {"set header-route r1 header x-a exact", "error: missing argument\n\n"},
        {"set header-route r1 header x-a like b", "error: unknown match (exact, prefix or regex) 'like'\n\n"},
        {"set header-route r1 path", "error: missing argument\n\n"},
        {"set header-route r1 path exact", "error: missing argument\n\n"},
        {"set header-route r1 path glob /a", "error: unknown match (exact, prefix or regex) 'glob'\n\n"},
        {"set header-route r1 path regex (", "error: invalid regex '(': Unmatched ( or \\(\n\n"},
        {"set header-route r1 method", "error: missing argument\n\n"},
        {"set header-route r1 method GET,,POST", "error: bad method list 'GET,,POST'\n\n"},
        {"set header-route r1 method GET,", "error: bad method list 'GET,'\n\n"},
        {"set header-route r1 header \"x a\" exact 1", "error: bad header name 'x a'\n\n"},
        {"set header-route r1 header cookie: exact 1", "error: bad header name 'cookie:'\n\n"},
        {"set header-route r1 cond x", "error: unknown condition (method, path or header) 'cond'\n\n"},
        {"set header-route r1 header a exact b extra", "error: unknown condition (method, path or header) 'extra'\n\n"},
        {"set header-route bad/name header a exact b", "error: invalid route name 'bad/name'\n\n"},
        {"set header-route r1 method A method A method A method A method A method A method A method A method A "
         "method A method A method A method A method A method A method A method A",
         "error: more than 16 conditions\n\n"},
        {"set mirror-route m1", "error: missing argument\n\n"},
        {"set mirror-route m1 abc", "error: bad number 'abc'\n\n"},
        {"set mirror-route m1 200", "error: percent out of range '200'\n\n"},
        {"set mirror-route m1 5 to", "error: missing argument\n\n"},
        {"set mirror-route m1 5 to x", "error: unknown variant 'x'\n\n"},
        {"set mirror-route m1 5 path regex \"a[\"", "error: invalid regex 'a[': Invalid regular expression\n\n"},
        {"set sticky-salt", "error: missing argument\n\n"},
        {"set sticky-salt a b", "error: unexpected argument 'b'\n\n"},
        {"del", "error: missing argument\n\n"},
        {"del foo", "error: unknown command 'del foo'\n\n"},
        {"del route", "error: missing argument\n\n"},
        {"del route nope", "error: unknown route 'nope'\n\n"},
        {"del route a b", "error: unexpected argument 'b'\n\n"},
        {"del routes x", "error: unexpected argument 'x'\n\n"},
        {"show", "error: missing argument\n\n"},
        {"show foo", "error: unknown command 'show foo'\n\n"},
        {"show routes x", "error: unexpected argument 'x'\n\n"},
        {"show stats xml", "error: unexpected argument 'xml'\n\n"},
        {"show stats json x", "error: unexpected argument 'x'\n\n"},
        {"reset", "error: missing argument\n\n"},
        {"reset stats now", "error: unexpected argument 'now'\n\n"},
        {"status x", "error: unexpected argument 'x'\n\n"},
        {"auth", "error: missing argument\n\n"},
        {"auth a b", "error: auth takes one token (quote it if it holds spaces)\n\n"},
        {"generation 7", "error: unknown command 'generation'\n\n"},
        {"set weight \"5", "error: unterminated quote\n\n"},
        {"set weight \"5\\x\"", "error: bad escape '\\x' (only \\\" and \\\\)\n\n"},
        {"set weight \"5\"0", "error: missing space after closing quote\n\n"},
        {"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
         "error: unknown command 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...'\n\n"},
    };
    rt_table_t *cur = base_table(), *snap, *next;
    rt_buf_t reply = RT_BUF_INIT;
    size_t i;

    (void)state;
    snap = rt_table_clone(cur);
    assert_non_null(snap);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        next = (rt_table_t *)1;
        print_message("  %s\n", cases[i].line);
        assert_int_equal(run(cur, cases[i].line, &next, &reply), RT_CTL_ERROR);
        assert_null(next);
        assert_string_equal(reply.p, cases[i].reply);
        assert_int_equal(rt_table_equal(cur, snap), 1);
        assert_int_equal(rt_table_generation(cur), 5);
    }
    rt_table_free(snap);
    rt_table_free(cur);
    rt_buf_dispose(&reply);
}

static void test_error_oddities(void **state)
{
    rt_table_t *cur = base_table(), *next;
    rt_buf_t reply = RT_BUF_INIT;
    static char big[RT_CTL_LINE_MAX + 2];
    size_t i;

    (void)state;
    /* 70 tokens are parsed (and refused for what they say), 71 are not */
    for (i = 0; i < 71; i++)
        memcpy(big + 2 * i, "a ", 2);
    assert_int_equal(rt_ctl_exec(cur, big, 2 * 70, &next, &reply), RT_CTL_ERROR);
    assert_string_equal(reply.p, "error: unknown command 'a'\n\n");
    rt_buf_reset(&reply);
    assert_int_equal(rt_ctl_exec(cur, big, 2 * 71, &next, &reply), RT_CTL_ERROR);
    assert_string_equal(reply.p, "error: more than 70 tokens\n\n");
    rt_buf_reset(&reply);
    /* a NUL inside the line */
    assert_int_equal(rt_ctl_exec(cur, "get\0weight", 10, &next, &reply), RT_CTL_ERROR);
    assert_string_equal(reply.p, "error: NUL byte in request\n\n");
    /* over 8 KiB when handed over directly, bypassing the framing */
    memset(big, ' ', sizeof(big));
    memcpy(big, "status", 6);
    rt_buf_reset(&reply);
    assert_int_equal(rt_ctl_exec(cur, big, RT_CTL_LINE_MAX, &next, &reply), RT_CTL_STATUS);
    assert_int_equal(rt_ctl_exec(cur, big, RT_CTL_LINE_MAX + 1, &next, &reply), RT_CTL_ERROR);
    assert_string_equal(reply.p, RT_CTL_REPLY_TOO_LONG);
    rt_table_free(cur);
    rt_buf_dispose(&reply);
}

/* Replies append to what is already in the buffer (pipelined requests), and an error takes back only its own. */
static void test_reply_appends(void **state)
{
    rt_table_t *cur = base_table(), *next;
    rt_buf_t reply = RT_BUF_INIT;

    (void)state;
    assert_int_equal(rt_buf_puts(&reply, "ok\n\n"), 0);
    assert_int_equal(rt_ctl_exec(cur, "del route x", 11, &next, &reply), RT_CTL_ERROR);
    assert_int_equal(rt_ctl_exec(cur, "status", 6, &next, &reply), RT_CTL_STATUS);
    assert_int_equal(rt_ctl_exec(cur, "get weight", 10, &next, &reply), RT_CTL_GET_WEIGHT);
    assert_string_equal(reply.p, "ok\n\nerror: unknown route 'x'\n\n"
                                 "ok\ncanary 10.00\nexp 0.00\nstable 90.00\ngeneration 5\n\n");
    rt_table_free(cur);
    rt_buf_dispose(&reply);
}

static void test_generation(void **state)
{
    rt_table_t *cur = base_table(), *next;
    rt_buf_t reply = RT_BUF_INIT;

    (void)state;
    step(&cur, "set weight 20", RT_CTL_SET_WEIGHT, 1);
    step(&cur, "set weight 20", RT_CTL_SET_WEIGHT, 0);
    step(&cur, "set weight canary 20.00", RT_CTL_SET_WEIGHT, 0);
    step(&cur, "set weight canary 20 exp 0", RT_CTL_SET_WEIGHT, 0);
    step(&cur, "set header-route r header a exact b", RT_CTL_SET_HEADER_ROUTE, 1);
    step(&cur, "set header-route r header a exact b", RT_CTL_SET_HEADER_ROUTE, 0);
    step(&cur, "set header-route r to canary header A exact b", RT_CTL_SET_HEADER_ROUTE, 0);
    step(&cur, "set header-route r header a exact c", RT_CTL_SET_HEADER_ROUTE, 1);
    step(&cur, "set mirror-route m 5", RT_CTL_SET_MIRROR_ROUTE, 1);
    step(&cur, "set mirror-route m 5.00 to canary", RT_CTL_SET_MIRROR_ROUTE, 0);
    step(&cur, "set mirror-route m 6", RT_CTL_SET_MIRROR_ROUTE, 1);
    step(&cur, "set sticky-salt s", RT_CTL_SET_STICKY_SALT, 1);
    step(&cur, "set sticky-salt s", RT_CTL_SET_STICKY_SALT, 0);
    step(&cur, "del routes", RT_CTL_DEL_ROUTES, 1);
    step(&cur, "del routes", RT_CTL_DEL_ROUTES, 0);
    assert_int_equal(run(cur, "del route r", &next, &reply), RT_CTL_ERROR);
    assert_int_equal(rt_table_generation(cur), 12); /* 5 + the 7 requests that changed something */
    read_req(cur, "get weight", &reply);
    assert_string_equal(reply.p, "ok\ncanary 20.00\nexp 0.00\nstable 80.00\ngeneration 12\n\n");
    rt_table_free(cur);
    rt_buf_dispose(&reply);
}

/* A refused multi-variant change leaves every weight as it was, also those named before the bad pair. */
static void test_atomic(void **state)
{
    static const char *const bad[] = {
        "set weight canary 5 exp 101",
        "set weight canary 5 nope 1",
        "set weight canary 50 exp 51",
        "set weight exp 5 canary 1.001",
        "set weight canary 5 exp 5 stable 90",
        "set header-route ok header a exact 1 path regex (",
        "set mirror-route ok 5 to exp header a exact 1 method",
    };
    rt_table_t *cur = base_table(), *snap, *next;
    rt_buf_t reply = RT_BUF_INIT;
    size_t i;

    (void)state;
    step(&cur, "set header-route keep header k exact v", RT_CTL_SET_HEADER_ROUTE, 1);
    snap = rt_table_clone(cur);
    assert_non_null(snap);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        next = (rt_table_t *)1;
        assert_int_equal(run(cur, bad[i], &next, &reply), RT_CTL_ERROR);
        assert_null(next);
        assert_int_equal(rt_table_equal(cur, snap), 1);
        read_req(cur, "get weight", &reply);
        assert_string_equal(reply.p, "ok\ncanary 10.00\nexp 0.00\nstable 90.00\ngeneration 6\n\n");
        read_req(cur, "show routes", &reply);
        assert_string_equal(reply.p, "ok\nset header-route keep to canary header k exact v\n\n");
    }
    rt_table_free(snap);
    rt_table_free(cur);
    rt_buf_dispose(&reply);
}

static const struct {
    const char *line;
    int op;
} state_cmds[] = {
    {"set weight canary 12.34 exp 7", RT_CTL_SET_WEIGHT},
    {"set sticky-salt \"s \\\"q\\\" \\\\\"", RT_CTL_SET_STICKY_SALT},
    {"set header-route r1 to exp header X-Canary exact \"a b\"", RT_CTL_SET_HEADER_ROUTE},
    {"set mirror-route m1 2.5 path regex \"^/api/(v1|v2)$\" method GET", RT_CTL_SET_MIRROR_ROUTE},
    {"set header-route r2 header cookie:uid prefix 42 path prefix /", RT_CTL_SET_HEADER_ROUTE},
    {"set mirror-route all 0.01 to exp", RT_CTL_SET_MIRROR_ROUTE},
};
static const char state_text[] = "# weir routing state: control lines replayed at start\n"
                                 "generation 11\n"
                                 "set sticky-salt \"s \\\"q\\\" \\\\\"\n"
                                 "set weight canary 12.34 exp 7.00\n"
                                 "set header-route r1 to exp header x-canary exact \"a b\"\n"
                                 "set mirror-route m1 2.50 to canary path regex ^/api/(v1|v2)$ method GET\n"
                                 "set header-route r2 to canary header cookie:uid prefix 42 path prefix /\n"
                                 "set mirror-route all 0.01 to exp\n";

static rt_table_t *state_table(void)
{
    rt_table_t *cur = base_table();
    size_t i;

    for (i = 0; i < sizeof(state_cmds) / sizeof(state_cmds[0]); i++)
        step(&cur, state_cmds[i].line, state_cmds[i].op, 1);
    return cur;
}

static void test_state_roundtrip(void **state)
{
    rt_table_t *orig = state_table(), *base = rt_table_new(), *loaded, *next;
    rt_buf_t text = RT_BUF_INIT, again = RT_BUF_INIT, reply = RT_BUF_INIT;
    char err[256] = "";

    (void)state;
    assert_int_equal(rt_ctl_dump_state(orig, &text), 0);
    assert_string_equal(text.p, state_text);

    /* the base carries the configured variants and sticky kind, other weights and a route the file drops */
    assert_non_null(base);
    assert_int_equal(rt_table_add_variant(base, "exp"), 2);
    assert_int_equal(rt_table_set_sticky(base, RT_STICKY_HEADER, "x-user"), 0);
    assert_int_equal(rt_table_set_sticky(orig, RT_STICKY_HEADER, "x-user"), 0);
    assert_int_equal(run(base, "set header-route stale header a exact 1", &next, &reply), RT_CTL_SET_HEADER_ROUTE);
    assert_non_null(next);
    rt_table_free(base);
    base = next;

    loaded = rt_ctl_load_state(base, text.p, text.len, err, sizeof(err));
    assert_string_equal(err, "");
    assert_non_null(loaded);
    assert_int_equal(rt_table_equal(loaded, orig), 1);
    assert_int_equal(rt_table_generation(loaded), 11);
    assert_int_equal(rt_table_sticky(loaded), RT_STICKY_HEADER);
    assert_int_equal(rt_ctl_dump_state(loaded, &again), 0);
    assert_string_equal(again.p, text.p);
    /* <base> is untouched */
    read_req(base, "show routes", &reply);
    assert_string_equal(reply.p, "ok\nset header-route stale to canary header a exact 1\n\n");

    rt_table_free(loaded);
    rt_table_free(orig);
    rt_table_free(base);
    rt_buf_dispose(&text);
    rt_buf_dispose(&again);
    rt_buf_dispose(&reply);
}

static void test_state_lenient_forms(void **state)
{
    static const char text[] = "\r\n# comment with an odd \" quote\r\n   # indented comment\n\t\n"
                               "set weight 3\r\n"
                               "set header-route r header a exact 1\n"
                               "del route r\n"
                               "set mirror-route m 1"; /* no final newline */
    rt_table_t *base = base_table(), *loaded;
    rt_buf_t reply = RT_BUF_INIT;
    char err[128] = "";

    (void)state;
    loaded = rt_ctl_load_state(base, text, strlen(text), err, sizeof(err));
    assert_string_equal(err, "");
    assert_non_null(loaded);
    read_req(loaded, "get weight", &reply);
    /* no generation line: the base's */
    assert_string_equal(reply.p, "ok\ncanary 3.00\nexp 0.00\nstable 97.00\ngeneration 5\n\n");
    read_req(loaded, "show routes", &reply);
    assert_string_equal(reply.p, "ok\nset mirror-route m 1.00 to canary\n\n");
    rt_table_free(loaded);

    /* an empty file: the base without routes */
    loaded = rt_ctl_load_state(base, "", 0, err, sizeof(err));
    assert_non_null(loaded);
    assert_int_equal(rt_table_equal(loaded, base), 1);
    rt_table_free(loaded);
    rt_table_free(base);
    rt_buf_dispose(&reply);
}

static void test_state_errors(void **state)
{
    static const struct {
        const char *text;
        const char *err;
    } cases[] = {
        {"generation x\n", "line 1: bad generation 'x'"},
        {"generation -1\n", "line 1: bad generation '-1'"},
        {"generation 007\n", "line 1: bad generation '007'"},
        {"generation 18446744073709551616\n", "line 1: bad generation '18446744073709551616'"},
        {"generation\n", "line 1: missing argument"},
        {"generation 1 2\n", "line 1: unexpected argument"},
        {"generation 1\ngeneration 2\n", "line 2: generation given twice"},
        {"# c\n\ngeneration 3\nset weight nope 5\n", "line 4: unknown variant 'nope'"},
        {"get weight\n", "line 1: not a state line: 'get weight'"},
        {"status\n", "line 1: not a state line: 'status'"},
        {"auth x\n", "line 1: not a state line: 'auth x'"},
        {"bogus\n", "line 1: unknown command 'bogus'"},
        {"set weight \"5\n", "line 1: unterminated quote"},
        {"set weight 5\r\nset header-route r path regex (\r\n", "line 2: invalid regex '(': Unmatched ( or \\("},
        {"set weight canary 60\nset weight exp 50\n", "line 2: weights sum over 100"},
        {"del route r\n", "line 1: unknown route 'r'"},
    };
    rt_table_t *base = base_table();
    char err[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        assert_null(rt_ctl_load_state(base, cases[i].text, strlen(cases[i].text), err, sizeof(err)));
        assert_string_equal(err, cases[i].err);
    }
    rt_table_free(base);
}

static void test_state_unwritable_salt(void **state)
{
    rt_table_t *t = base_table();
    rt_buf_t out = RT_BUF_INIT;

    (void)state;
    assert_int_equal(rt_buf_puts(&out, "kept"), 0);
    assert_int_equal(rt_table_set_salt(t, "a\nb"), 0);
    assert_int_equal(rt_ctl_dump_state(t, &out), -1);
    assert_string_equal(out.p, "kept");
    rt_table_free(t);
    rt_buf_dispose(&out);
}

/* `set upstream`, `del upstream`, `show upstreams` (SPEC §4): run-time variants that weights can split to, no-op
 * repeats, refusals that change nothing, and the state file that brings them back after a restart. */
static void test_upstreams(void **state)
{
    static const struct {
        const char *line;
        const char *reply;
    } errors[] = {
        {"set upstream exp1", "error: missing argument\n\n"},
        {"set upstream Exp 10.0.0.1:80", "error: bad variant name ([a-z0-9][a-z0-9-]{0,31}) 'Exp'\n\n"},
        {"set upstream -x 10.0.0.1:80", "error: bad variant name ([a-z0-9][a-z0-9-]{0,31}) '-x'\n\n"},
        {"set upstream exp1 10.0.0.1", "error: bad address '10.0.0.1': missing port\n\n"},
        {"set upstream exp1 10.0.0.1:0", "error: bad address '10.0.0.1:0': port out of range (1..65535)\n\n"},
        {"set upstream exp1 http://a:80", "error: bad address 'http://a:80': no scheme here, just HOST:PORT\n\n"},
        {"set upstream exp1 ::1:80", "error: bad address '::1:80': IPv6 address must be in brackets, as in "
                                     "[::1]:8080\n\n"},
        {"set upstream exp1 a:1 b:2 a:1", "error: address given twice 'a:1'\n\n"},
        {"set upstream exp1 b:2 a:1 b:2", "error: address given twice 'b:2'\n\n"},
        {"del upstream", "error: missing argument\n\n"},
        {"del upstream exp x", "error: unexpected argument 'x'\n\n"},
        {"del upstream nope", "error: unknown variant 'nope'\n\n"},
        {"del upstream stable", "error: stable and canary always exist 'stable'\n\n"},
        {"del upstream canary", "error: stable and canary always exist 'canary'\n\n"},
        {"show upstreams x", "error: unexpected argument 'x'\n\n"},
    };
    rt_table_t *cur = base_table(), *next, *loaded;
    rt_buf_t reply = RT_BUF_INIT, text = RT_BUF_INIT;
    char err[256] = "", name[8];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(errors) / sizeof(errors[0]); i++) {
        next = (rt_table_t *)1;
        print_message("  %s\n", errors[i].line);
        assert_int_equal(run(cur, errors[i].line, &next, &reply), RT_CTL_ERROR);
        assert_null(next);
        assert_string_equal(reply.p, errors[i].reply);
    }
    next = (rt_table_t *)1;
    assert_int_equal(run(cur, "show upstreams", &next, &reply), RT_CTL_SHOW_UPSTREAMS);
    assert_null(next);
    assert_int_equal(reply.len, 0); /* the proxy writes it */
    assert_int_equal(rt_ctl_op_is_change(RT_CTL_SHOW_UPSTREAMS), 0);

    /* a new variant: declared at 0 %, then a weight splits to it (bucket order: canary, exp, exp1, stable) */
    step(&cur, "set upstream exp1 svc.ns.svc.cluster.local:8080 10.0.0.1:80 [::1]:81", RT_CTL_SET_UPSTREAM, 1);
    assert_string_equal(rt_table_upstreams(cur, 3), "10.0.0.1:80 [::1]:81 svc.ns.svc.cluster.local:8080");
    assert_null(rt_table_upstreams(cur, 0)); /* canary: as configured */
    /* the same addresses again, in any order: no change */
    step(&cur, "set upstream exp1 10.0.0.1:80 svc.ns.svc.cluster.local:8080 [::1]:81", RT_CTL_SET_UPSTREAM, 0);
    step(&cur, "set upstream exp1 [::1]:81 10.0.0.1:80 svc.ns.svc.cluster.local:8080", RT_CTL_SET_UPSTREAM, 0);
    step(&cur, "set weight canary 10 exp1 5", RT_CTL_SET_WEIGHT, 1);
    read_req(cur, "get weight", &reply);
    assert_string_equal(reply.p, "ok\ncanary 10.00\nexp 0.00\nexp1 5.00\nstable 85.00\ngeneration 7\n\n");
    /* replacing the endpoints is a change; an existing configured variant may be given run-time endpoints */
    step(&cur, "set upstream exp1 10.0.0.2:80", RT_CTL_SET_UPSTREAM, 1);
    assert_string_equal(rt_table_upstreams(cur, 3), "10.0.0.2:80");
    step(&cur, "set upstream canary 10.0.0.9:80", RT_CTL_SET_UPSTREAM, 1);
    step(&cur, "set header-route r to exp1 header a exact 1", RT_CTL_SET_HEADER_ROUTE, 1);

    /* the state file brings the run-time variants back, before the weights and routes that name them */
    assert_int_equal(rt_ctl_dump_state(cur, &text), 0);
    assert_string_equal(text.p, "# weir routing state: control lines replayed at start\ngeneration 10\n"
                                "set sticky-salt \"\"\nset upstream canary 10.0.0.9:80\n"
                                "set upstream exp1 10.0.0.2:80\nset weight canary 10.00 exp 0.00 exp1 5.00\n"
                                "set header-route r to exp1 header a exact 1\n");
    next = base_table();
    loaded = rt_ctl_load_state(next, text.p, text.len, err, sizeof(err));
    assert_string_equal(err, "");
    assert_non_null(loaded);
    assert_int_equal(rt_table_equal(loaded, cur), 1);
    rt_table_free(loaded);
    rt_table_free(next);

    /* removal: only without weight and routes */
    assert_int_equal(run(cur, "del upstream exp1", &next, &reply), RT_CTL_ERROR);
    assert_string_equal(reply.p, "error: variant has a weight: set it to 0 first 'exp1'\n\n");
    step(&cur, "set weight exp1 0", RT_CTL_SET_WEIGHT, 1);
    assert_int_equal(run(cur, "del upstream exp1", &next, &reply), RT_CTL_ERROR);
    assert_string_equal(reply.p, "error: a route sends to the variant: delete it first 'exp1'\n\n");
    step(&cur, "del route r", RT_CTL_DEL_ROUTE, 1);
    step(&cur, "del upstream exp1", RT_CTL_DEL_UPSTREAM, 1);
    assert_null(rt_table_variant_name(cur, 3));
    assert_string_equal(rt_table_removed_name(cur, 3), "exp1");
    read_req(cur, "get weight", &reply);
    assert_string_equal(reply.p, "ok\ncanary 10.00\nexp 0.00\nstable 90.00\ngeneration 13\n\n");
    assert_int_equal(run(cur, "del upstream exp1", &next, &reply), RT_CTL_ERROR);
    assert_string_equal(reply.p, "error: unknown variant 'exp1'\n\n");
    assert_int_equal(run(cur, "set weight exp1 1", &next, &reply), RT_CTL_ERROR);
    assert_int_equal(run(cur, "set header-route r to exp1 header a exact 1", &next, &reply), RT_CTL_ERROR);

    /* a removed run-time variant stays removed across a restart; one the configuration declares (even with a
     * weight) comes back as configured: the configuration wins, and weir always starts */
    rt_buf_reset(&text);
    assert_int_equal(rt_ctl_dump_state(cur, &text), 0);
    assert_non_null(strstr(text.p, "\ndel upstream exp1\n"));
    next = base_table();
    loaded = rt_ctl_load_state(next, text.p, text.len, err, sizeof(err));
    assert_non_null(loaded);
    assert_int_equal(rt_table_find_variant(loaded, "exp1", 4), -1);
    rt_table_free(loaded);
    assert_int_equal(rt_table_add_variant(next, "exp1"), 3);
    {
        const char *names[] = {"exp1"};
        const uint32_t bps[] = {500};
        assert_int_equal(rt_table_set_weights(next, names, bps, 1, NULL), 0);
    }
    loaded = rt_ctl_load_state(next, text.p, text.len, err, sizeof(err));
    if (loaded == NULL)
        fail_msg("state with a removal of a configured variant: %s", err);
    assert_int_equal(rt_table_find_variant(loaded, "exp1", 4), 3);
    assert_null(rt_table_removed_name(loaded, 3));
    rt_table_free(loaded);
    rt_table_free(next);

    /* declared again: the same slot comes back, at weight 0 */
    step(&cur, "set upstream exp1 10.0.0.3:80", RT_CTL_SET_UPSTREAM, 1);
    assert_int_equal(rt_table_find_variant(cur, "exp1", 4), 3);
    assert_int_equal(rt_table_weight_bp(cur, 3), 0);
    /* fill the table; a removed slot is reused by another name only once no fresh one is left */
    for (i = 4; i < RT_MAX_VARIANTS; i++) {
        char line[64];
        snprintf(name, sizeof(name), "v%zu", i);
        snprintf(line, sizeof(line), "set upstream %s 10.0.1.%zu:80", name, i);
        step(&cur, line, RT_CTL_SET_UPSTREAM, 1);
        assert_int_equal(rt_table_find_variant(cur, name, strlen(name)), (int)i);
    }
    assert_int_equal(run(cur, "set upstream full 10.0.0.1:80", &next, &reply), RT_CTL_ERROR);
    assert_string_equal(reply.p, "error: too many variants (at most 16)\n\n");
    step(&cur, "del upstream exp1", RT_CTL_DEL_UPSTREAM, 1);
    step(&cur, "set upstream full 10.0.0.1:80", RT_CTL_SET_UPSTREAM, 1);
    assert_int_equal(rt_table_find_variant(cur, "full", 4), 3);
    assert_null(rt_table_removed_name(cur, 3));

    rt_buf_dispose(&reply);
    rt_buf_dispose(&text);
    rt_table_free(cur);
}

static void test_buf(void **state)
{
    rt_buf_t b = RT_BUF_INIT;
    size_t i;

    (void)state;
    assert_int_equal(rt_buf_printf(&b, "%s=%d", "x", 42), 0);
    assert_string_equal(b.p, "x=42");
    for (i = 0; i < 100; i++) /* forces a reformat after growing */
        assert_int_equal(rt_buf_printf(&b, "%0100d", 7), 0);
    assert_int_equal(b.len, 4 + 100 * 100);
    assert_int_equal(b.p[b.len], '\0');
    rt_buf_consume(&b, 4);
    assert_int_equal(b.len, 100 * 100);
    assert_int_equal(b.p[0], '0');
    rt_buf_truncate(&b, 3);
    assert_string_equal(b.p, "000");
    rt_buf_consume(&b, 10);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.p, "");
    rt_buf_dispose(&b);
    rt_buf_dispose(&b); /* idempotent */
    assert_null(b.p);
}

/* Every allocation of a change, a read, a dump and a load fails in turn: each either completes or reports out of
 * memory, never leaks (cmocka checks) and never changes what it was given. */
static void test_out_of_memory(void **state)
{
    static const char *const lines[] = {
        "set header-route r1 to exp header x exact 1 path regex ^/a",
        "set weight canary 5 exp 5",
        "get weight",
        "show routes",
        "del routes",
    };
    rt_table_t *cur = state_table(), *next, *loaded;
    rt_buf_t reply = RT_BUF_INIT, text = RT_BUF_INIT;
    char err[128];
    size_t i;
    long k;
    int op, done;

    (void)state;
    for (i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        for (k = 0, done = 0; !done; k++) {
            assert_true(k < 1000);
            rt_buf_dispose(&reply);
            fail_after = k;
            op = rt_ctl_exec(cur, lines[i], strlen(lines[i]), &next, &reply);
            fail_after = -1;
            if (op == RT_CTL_ERROR) {
                assert_null(next);
                if (reply.len > 0)
                    assert_string_equal(reply.p, "error: out of memory\n\n");
            } else {
                done = 1;
                assert_true(strncmp(reply.p, "ok\n", 3) == 0);
                rt_table_free(next);
            }
        }
        assert_true(k > 1); /* at least one allocation was made to fail */
    }
    for (k = 0, done = 0; !done; k++) {
        assert_true(k < 1000);
        fail_after = k;
        done = rt_ctl_dump_state(cur, &text) == 0;
        fail_after = -1;
        if (!done)
            assert_int_equal(text.len, 0);
        rt_buf_dispose(&text);
    }
    assert_int_equal(rt_ctl_dump_state(cur, &text), 0);
    for (k = 0, done = 0; !done; k++) {
        assert_true(k < 1000);
        fail_after = k;
        loaded = rt_ctl_load_state(cur, text.p, text.len, err, sizeof(err));
        fail_after = -1;
        if (loaded != NULL) {
            assert_int_equal(rt_table_equal(loaded, cur), 1);
            rt_table_free(loaded);
            done = 1;
        }
    }
    rt_buf_dispose(&text);
    rt_buf_dispose(&reply);
    rt_table_free(cur);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_framing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_framing_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tokenize, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quote_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commands, setup, teardown),
        cmocka_unit_test_setup_teardown(test_salt_and_routes_applied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reads_and_proxy_ops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_oddities, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_appends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_atomic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_lenient_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_unwritable_salt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstreams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_memory, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
