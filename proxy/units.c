/* Strict parsers of durations, sizes and HOST:PORT (include/px/config.h), shared by the config loader and the
 * control plane. They accept exactly one spelling of each value: no sign, no fraction, no surrounding blanks, so a
 * typo is an error instead of a surprise. */
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

#include "px/config.h"

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

static int fail(const char **why, const char *msg)
{
    if (why != NULL)
        *why = msg;
    return -1;
}

/* Host names as resolvers take them: letters, digits, '-', '_' and '.', no empty label (a trailing dot, as in a
 * fully qualified "example.com.", is fine). A name made only of digits and dots must be a dotted-quad IPv4 address,
 * because getaddrinfo() would otherwise read "10.1" as 10.0.0.1. */
static int check_name(const char *h, size_t len, const char **why)
{
    size_t i;
    int numeric = 1;
    char buf[PX_HOST_MAX + 1];
    struct in_addr a4;

    for (i = 0; i < len; i++) {
        char ch = h[i];
        if (ch == ':' && i + 2 < len && h[i + 1] == '/' && h[i + 2] == '/')
            return fail(why, "no scheme here, just HOST:PORT");
        if (ch == ':')
            return fail(why, "IPv6 address must be in brackets, as in [::1]:8080");
        if (ch == '.') {
            if (i == 0 || h[i - 1] == '.')
                return fail(why, "bad host name");
            continue;
        }
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || is_digit(ch) || ch == '-' || ch == '_'))
            return fail(why, "bad host name");
        if (!is_digit(ch))
            numeric = 0;
    }
    if (numeric) {
        memcpy(buf, h, len);
        buf[len] = '\0';
        if (inet_pton(AF_INET, buf, &a4) != 1)
            return fail(why, "bad IPv4 address");
    }
    return 0;
}

int px_parse_hostport_why(const char *s, px_hostport_t *out, const char **why)
{
    const char *host, *colon, *p;
    size_t hlen, i;
    unsigned port = 0;
    struct in6_addr a6;
    char buf[PX_HOST_MAX + 1];

    if (s == NULL || s[0] == '\0')
        return fail(why, "empty address");
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL)
            return fail(why, "missing ']'");
        host = s + 1;
        hlen = (size_t)(close - host);
        if (close[1] != ':')
            return fail(why, close[1] == '\0' ? "missing port" : "expected ':' after ']'");
        colon = close + 1;
        if (hlen == 0 || hlen >= INET6_ADDRSTRLEN)
            return fail(why, "bad IPv6 address");
        memcpy(buf, host, hlen);
        buf[hlen] = '\0';
        if (inet_pton(AF_INET6, buf, &a6) != 1)
            return fail(why, "bad IPv6 address");
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return fail(why, "missing port");
        host = s;
        hlen = (size_t)(colon - s);
        if (hlen == 0)
            return fail(why, "missing host (use 0.0.0.0 or [::] for every address)");
        if (hlen > PX_HOST_MAX)
            return fail(why, "host name too long");
        if (check_name(host, hlen, why) != 0)
            return -1;
    }
    p = colon + 1;
    if (p[0] == '\0')
        return fail(why, "missing port");
    for (i = 0; p[i] != '\0'; i++) {
        if (!is_digit(p[i]))
            return fail(why, "bad port");
        if (i == 5)
            return fail(why, "port out of range (1..65535)");
        port = port * 10 + (unsigned)(p[i] - '0');
    }
    if (port == 0 || port > 65535)
        return fail(why, "port out of range (1..65535)");
    memcpy(out->host, host, hlen);
    out->host[hlen] = '\0';
    out->port = (uint16_t)port;
    return 0;
}

int px_parse_hostport(const char *s, px_hostport_t *out)
{
    return px_parse_hostport_why(s, out, NULL);
}
