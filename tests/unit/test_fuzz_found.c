/* What the fuzzers (tests/fuzz/) found, each kept as the smallest input that showed it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "px/h1.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_block_ends_at_its_empty_line),
        cmocka_unit_test(test_scan_refuses_bare_cr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
