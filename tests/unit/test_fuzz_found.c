/* What the fuzzers (tests/fuzz/) found, each kept as the smallest input that showed it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "px/h1.h"
#include "rt/buf.h"
#include "rt/ctl.h"
#include "rt/table.h"

#define BLOCK(s) s, sizeof(s) - 1

/* fuzz_response: an upstream's interim response ending in "\r\n\r\r" leaves llhttp's pause one '\n' short, and the
 * final response's head then began with "\n\r\n": px_h1_scan() took the first empty line as the end of the block,
 * so weir sent the client an empty status line ("\r\nConnection: close\r\n..."). A block must end at its empty
 * line; anything after it makes it malformed (weir answers 502). */
static void test_scan_block_ends_at_its_empty_line(void **state)
{
    rt_span_t line;
    rt_header_t h[8];
    (void)state;

    assert_int_equal(px_h1_scan(BLOCK("\n\r\nHTTP/1.1 200 OK\r\n\r\n"), &line, h, 8), PX_H1_MALFORMED);
    assert_int_equal(px_h1_scan(BLOCK("HTTP/1.1 200 OK\r\n\r\nX-After: 1\r\n\r\n"), &line, h, 8), PX_H1_MALFORMED);
    assert_int_equal(px_h1_scan(BLOCK("HTTP/1.1 200 OK\r\nA: 1\r\n\r\nx"), &line, h, 8), PX_H1_MALFORMED);
    assert_int_equal(px_h1_scan(BLOCK("HTTP/1.1 200 OK\r\nA: 1\r\n\r\n"), &line, h, 8), 1);
    assert_int_equal(px_h1_scan(BLOCK("HTTP/1.1 200 OK\n\n"), &line, h, 8), 0);
}

/* fuzz_response: llhttp accepts an upstream header "Name:\r t", and weir forwarded the bare CR to the client, which
 * may take it for a line end while others do not (llhttp itself stops at it). A bare CR anywhere in a line makes
 * the block malformed. */
static void test_scan_refuses_bare_cr(void **state)
{
    rt_span_t line;
    rt_header_t h[8];
    (void)state;

    assert_int_equal(px_h1_scan(BLOCK("HTTP/1.1 200 OK\r\nTransfer-Encoding:\r t\r\n\r\n"), &line, h, 8),
                     PX_H1_MALFORMED);
    assert_int_equal(px_h1_scan(BLOCK("HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n"), &line, h, 8), PX_H1_MALFORMED);
    assert_int_equal(px_h1_scan(BLOCK("HTTP/1.1 200\rOK\r\nX-A: a\r\n\r\n"), &line, h, 8), PX_H1_MALFORMED);
    assert_int_equal(px_h1_scan(BLOCK("HTTP/1.1 200 OK\r\nX-A: a\n\r\n"), &line, h, 8), 1);
}

/* fuzz_state: a state file whose route line had 63 tokens (no "to", the default variant) loaded, and weir wrote it
 * back with "to canary": 65 tokens, past the 64 a line could hold, so the file weir itself wrote was refused at the
 * next start. A line holds the longest route now: a mirror route with "to" and RT_MAX_CONDS conditions. */
static void test_longest_route_survives_the_state_file(void **state)
{
    rt_table_t *base = rt_table_new(), *t, *back;
    rt_buf_t text = RT_BUF_INIT, dump = RT_BUF_INIT;
    char err[256] = "";
    (void)state;

    assert_non_null(base);
    for (int kind = 0; kind < 2; kind++) {
        rt_buf_reset(&text);
        rt_buf_printf(&text, "generation 3\n%s", kind ? "set mirror-route m 50" : "set header-route h");
        for (int i = 0; i < RT_MAX_CONDS; i++)
            rt_buf_printf(&text, " header x-%d regex \"^v[0-9]+$\"", i);
        rt_buf_printf(&text, "\n");
        t = rt_ctl_load_state(base, text.p, text.len, err, sizeof(err));
        if (t == NULL)
            fail_msg("refused: %s", err);
        rt_buf_reset(&dump);
        assert_int_equal(rt_ctl_dump_state(t, &dump), 0);
        back = rt_ctl_load_state(base, dump.p, dump.len, err, sizeof(err));
        if (back == NULL)
            fail_msg("weir's own state file refused: %s\n%.*s", err, (int)dump.len, dump.p);
        assert_true(rt_table_equal(t, back));
        rt_table_free(back);
        rt_table_free(t);
    }
    rt_buf_dispose(&text);
    rt_buf_dispose(&dump);
    rt_table_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_block_ends_at_its_empty_line),
        cmocka_unit_test(test_scan_refuses_bare_cr),
        cmocka_unit_test(test_longest_route_survives_the_state_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
