/* Strict parsers of durations, sizes and HOST:PORT (include/px/config.h), shared by the config loader and the
 * control plane. They accept exactly one spelling of each value: no sign, no fraction, no surrounding blanks, so a
 * typo is an error instead of a surprise. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "px/config.h"
#include "rt/parse.h"

static int is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* Reads the leading decimal digits of <s> into <*out>; returns the number of digits, or 0 when there are none or the
 * value does not fit in 64 bits. */
static size_t digits(const char *s, uint64_t *out)
{
    uint64_t n = 0;
    size_t i;

    for (i = 0; is_digit(s[i]); i++) {
        uint64_t d = (uint64_t)(s[i] - '0');
        if (n > (UINT64_MAX - d) / 10)
            return 0;
        n = n * 10 + d;
    }
    *out = n;
    return i;
}

int px_parse_duration_ms(const char *s, uint64_t *out)
{
    uint64_t n, mul;
    size_t nd;
    const char *unit;

    if (s == NULL || (nd = digits(s, &n)) == 0)
        return -1;
    unit = s + nd;
    /* Lower case only: "1M" could be read as a size or a month. */
    if (strcmp(unit, "ms") == 0)
        mul = 1;
    else if (strcmp(unit, "s") == 0)
        mul = 1000;
    else if (strcmp(unit, "m") == 0)
        mul = 60 * 1000;
    else if (strcmp(unit, "h") == 0)
        mul = 60 * 60 * 1000;
    else
        return -1;
    if (n > UINT64_MAX / mul)
        return -1;
    *out = n * mul;
    return 0;
}

int px_parse_size(const char *s, size_t *out)
{
    uint64_t n, mul = 1;
    size_t nd;
    const char *unit;

    if (s == NULL || (nd = digits(s, &n)) == 0)
        return -1;
    unit = s + nd;
    if (unit[0] != '\0') {
        if (unit[1] != '\0')
            return -1;
        switch (unit[0]) {
        case 'k':
        case 'K':
            mul = 1024;
            break;
        case 'm':
        case 'M':
            mul = 1024 * 1024;
            break;
        case 'g':
        case 'G':
            mul = 1024 * 1024 * 1024;
            break;
        default:
            return -1;
        }
    }
    if (n > SIZE_MAX / mul)
        return -1;
    *out = (size_t)(n * mul);
    return 0;
}

/* HOST:PORT is part of the decision plane's vocabulary too (`set upstream` on the control socket): one parser. */
_Static_assert(PX_HOST_MAX == RT_HOST_MAX, "px_hostport_t holds any host rt_parse_hostport() accepts");

int px_parse_hostport_why(const char *s, px_hostport_t *out, const char **why)
{
    return rt_parse_hostport(s, out->host, &out->port, why);
}

int px_parse_hostport(const char *s, px_hostport_t *out)
{
    return px_parse_hostport_why(s, out, NULL);
}

void px_format_hostport(const px_hostport_t *hp, char *buf, size_t size)
{
    if (strchr(hp->host, ':') != NULL)
        snprintf(buf, size, "[%s]:%u", hp->host, hp->port);
    else
        snprintf(buf, size, "%s:%u", hp->host, hp->port);
}
