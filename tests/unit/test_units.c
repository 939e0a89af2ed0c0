/* Strict parsers of durations, sizes and HOST:PORT (proxy/units.c): every accepted spelling and the near misses
 * around it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/macros.h"
#include "px/config.h"

struct num_case {
    const char *in;
    int rc;
    uint64_t want;
};

static const struct num_case durations[] = {
    {"250ms", 0, 250},
    {"10s", 0, 10000},
    {"1m", 0, 60000},
    {"1h", 0, 3600000},
    {"0ms", 0, 0}, /* the parser takes 0; the directives decide whether it means anything */
    {"0s", 0, 0},
    {"007s", 0, 7000},
    {"90m", 0, 5400000},
    {"18446744073709551615ms", 0, UINT64_MAX},
    {"5124095576030h", 0, 5124095576030ull * 3600000ull},
    {"18446744073709551616ms", -1, 0}, /* one past UINT64_MAX */
    {"5124095576031h", -1, 0},         /* fits as a number, not once multiplied */
    {"18446744073709552s", -1, 0},
    {"10", -1, 0},
    {"", -1, 0},
    {"ms", -1, 0},
    {"s", -1, 0},
    {"-1s", -1, 0},
    {"+1s", -1, 0},
    {"1.5s", -1, 0},
    {".5s", -1, 0},
    {"1 s", -1, 0},
    {" 1s", -1, 0},
    {"1s ", -1, 0},
    {"1S", -1, 0},
    {"1M", -1, 0},
    {"1MS", -1, 0},
    {"1sec", -1, 0},
    {"1d", -1, 0},
    {"1us", -1, 0},
    {"1m30s", -1, 0},
    {"1ms5", -1, 0},
    {"0x10s", -1, 0},
};

static const struct num_case sizes[] = {
    {"512", 0, 512},
    {"0", 0, 0},
    {"16k", 0, 16384},
    {"16K", 0, 16384},
    {"1m", 0, 1048576},
    {"1M", 0, 1048576},
    {"1g", 0, 1073741824},
    {"2G", 0, 2147483648ull},
    {"18446744073709551615", 0, UINT64_MAX},
    {"17179869183g", 0, 17179869183ull * 1073741824ull},
    {"17179869184g", -1, 0}, /* 2^64 */
    {"18014398509481984k", -1, 0},
    {"18446744073709551616", -1, 0},
    {"", -1, 0},
    {"k", -1, 0},
    {"1kb", -1, 0},
    {"1KiB", -1, 0},
    {"1.5k", -1, 0},
    {"-1", -1, 0},
    {"+1", -1, 0},
    {"1 k", -1, 0},
    {" 1k", -1, 0},
    {"1k ", -1, 0},
    {"1t", -1, 0},
    {"1b", -1, 0},
    {"0x10", -1, 0},
};

static void test_durations(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < ARRAY_SIZE(durations); i++) {
        uint64_t out = 12345;
        int rc = px_parse_duration_ms(durations[i].in, &out);
        if (rc != durations[i].rc) fail_msg("duration '%s': rc %d, want %d", durations[i].in, rc, durations[i].rc);
        if (rc == 0)
            assert_int_equal(out, durations[i].want);
        else
            assert_int_equal(out, 12345); /* untouched on failure */
    }
    assert_int_equal(px_parse_duration_ms(NULL, &(uint64_t){0}), -1);
}

static void test_sizes(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < ARRAY_SIZE(sizes); i++) {
        size_t out = 12345;
        int rc = px_parse_size(sizes[i].in, &out);
        if (rc != sizes[i].rc) fail_msg("size '%s': rc %d, want %d", sizes[i].in, rc, sizes[i].rc);
        if (rc == 0)
            assert_int_equal(out, sizes[i].want);
        else
            assert_int_equal(out, 12345);
    }
    assert_int_equal(px_parse_size(NULL, &(size_t){0}), -1);
}

struct hp_case {
    const char *in;
    const char *host; /* NULL: must fail */
    unsigned port;
    const char *why; /* the reason on failure */
};

static const struct hp_case hostports[] = {
    {"127.0.0.1:8080", "127.0.0.1", 8080, NULL},
    {"0.0.0.0:1", "0.0.0.0", 1, NULL},
    {"localhost:65535", "localhost", 65535, NULL},
    {"backend-1.svc.cluster.local:80", "backend-1.svc.cluster.local", 80, NULL},
    {"example.com.:443", "example.com.", 443, NULL},
    {"my_host:9", "my_host", 9, NULL},
    {"Upper.Case:10", "Upper.Case", 10, NULL},
    {"08080.example:08080", "08080.example", 8080, NULL},
    {"[::1]:8080", "::1", 8080, NULL},
    {"[::]:80", "::", 80, NULL},
    {"[2001:db8::7]:443", "2001:db8::7", 443, NULL},
    {"[::ffff:10.0.0.1]:80", "::ffff:10.0.0.1", 80, NULL},
    {"", NULL, 0, "empty address"},
    {"127.0.0.1", NULL, 0, "missing port"},
    {"localhost", NULL, 0, "missing port"},
    {"host:", NULL, 0, "missing port"},
    {":8080", NULL, 0, "missing host (use 0.0.0.0 or [::] for every address)"},
    {"host:0", NULL, 0, "port out of range (1..65535)"},
    {"host:65536", NULL, 0, "port out of range (1..65535)"},
    {"host:123456", NULL, 0, "port out of range (1..65535)"},
    {"host:99999999999999999999", NULL, 0, "port out of range (1..65535)"},
    {"host:80a", NULL, 0, "bad port"},
    {"host:-1", NULL, 0, "bad port"},
    {"host:+80", NULL, 0, "bad port"},
    {"host: 80", NULL, 0, "bad port"},
    {"host:http", NULL, 0, "bad port"},
    {"::1:8080", NULL, 0, "IPv6 address must be in brackets, as in [::1]:8080"},
    {"[::1]8080", NULL, 0, "expected ':' after ']'"},
    {"[::1]", NULL, 0, "missing port"},
    {"[::1:8080", NULL, 0, "missing ']'"},
    {"[]:80", NULL, 0, "bad IPv6 address"},
    {"[zz::1]:80", NULL, 0, "bad IPv6 address"},
    {"[127.0.0.1]:80", NULL, 0, "bad IPv6 address"},
    {"[fe80::1%eth0]:80", NULL, 0, "bad IPv6 address"},
    {"1.2.3:80", NULL, 0, "bad IPv4 address"},
    {"256.1.1.1:80", NULL, 0, "bad IPv4 address"},
    {"10:80", NULL, 0, "bad IPv4 address"},
    {"a..b:80", NULL, 0, "bad host name"},
    {".a:80", NULL, 0, "bad host name"},
    {"a b:80", NULL, 0, "bad host name"},
    {"a/b:80", NULL, 0, "bad host name"},
    {"*:80", NULL, 0, "bad host name"},
    {"http://a:80", NULL, 0, "no scheme here, just HOST:PORT"},
};

static void test_hostports(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < ARRAY_SIZE(hostports); i++) {
        const struct hp_case *t = &hostports[i];
        px_hostport_t hp;
        const char *why = NULL;
        int rc = px_parse_hostport_why(t->in, &hp, &why);

        if (t->host != NULL) {
            if (rc != 0) fail_msg("hostport '%s': failed (%s)", t->in, why);
            assert_string_equal(hp.host, t->host);
            assert_int_equal(hp.port, t->port);
            assert_int_equal(px_parse_hostport(t->in, &hp), 0);
        } else {
            if (rc != -1) fail_msg("hostport '%s': accepted", t->in);
            assert_non_null(why);
            assert_string_equal(why, t->why);
            assert_int_equal(px_parse_hostport(t->in, &hp), -1);
        }
    }
}

static void test_hostport_lengths(void **state)
{
    char s[PX_HOST_MAX + 16];
    px_hostport_t hp;
    const char *why = NULL;

    (void)state;
    /* The longest host that fits, and one byte more. */
    memset(s, 'a', PX_HOST_MAX);
    strcpy(s + PX_HOST_MAX, ":80");
    assert_int_equal(px_parse_hostport(s, &hp), 0);
    assert_int_equal(strlen(hp.host), PX_HOST_MAX);
    memset(s, 'a', PX_HOST_MAX + 1);
    strcpy(s + PX_HOST_MAX + 1, ":80");
    assert_int_equal(px_parse_hostport_why(s, &hp, &why), -1);
    assert_string_equal(why, "host name too long");
    assert_int_equal(px_parse_hostport_why(NULL, &hp, &why), -1);
    assert_int_equal(px_parse_hostport(NULL, &hp), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_hostports),
        cmocka_unit_test(test_hostport_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
