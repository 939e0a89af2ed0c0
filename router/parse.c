/* Strict parsers for weights and variant names (include/rt/parse.h). */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "rt/parse.h"

int rt_parse_bp(const char *s, size_t len, uint32_t *bp, const char **why)
{
    const char *dummy;
    size_t i = 0, ndec = 0;
    uint64_t whole = 0, frac = 0;

    if (why == NULL)
        why = &dummy;
    if (len == 0 || s[0] < '0' || s[0] > '9') {
        *why = "bad number";
        return -1;
    }
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        whole = whole * 10 + (uint64_t)(s[i] - '0');
        if (whole > 1000) {
            *why = "out of range";
            return -1;
        }
    }
    if (i < len && s[i] == '.') {
        i++;
        if (i == len) { /* "5." is not a number a person writes */
            *why = "bad number";
            return -1;
        }
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++, ndec++) {
            if (ndec == 2) {
                *why = "more than two decimals";
                return -1;
            }
            frac = frac * 10 + (uint64_t)(s[i] - '0');
        }
    }
    if (i != len) {
        *why = "bad number";
        return -1;
    }
    if (ndec == 1)
        frac *= 10;
    if (whole * 100 + frac > RT_BP_MAX) {
        *why = "out of range";
        return -1;
    }
    *bp = (uint32_t)(whole * 100 + frac);
    return 0;
}

size_t rt_format_bp(uint32_t bp, char *buf)
{
    return (size_t)snprintf(buf, 8, "%u.%02u", bp / 100, bp % 100);
}

int rt_variant_name_valid(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > RT_VARIANT_NAME_MAX)
        return 0;
    for (i = 0; i < len; i++) {
        char ch = s[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || (i > 0 && ch == '-');
        if (!ok)
            return 0;
    }
    return 1;
}

static int isdig(char ch)
{
    return ch >= '0' && ch <= '9';
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
    char buf[RT_HOST_MAX + 1];
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
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || isdig(ch) || ch == '-' || ch == '_'))
            return fail(why, "bad host name");
        if (!isdig(ch))
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

int rt_parse_hostport(const char *s, char *host_out, uint16_t *port_out, const char **why)
{
    const char *host, *colon, *p;
    size_t hlen, i;
    unsigned port = 0;
    struct in6_addr a6;
    char buf[RT_HOST_MAX + 1];

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
        if (hlen > RT_HOST_MAX)
            return fail(why, "host name too long");
        if (check_name(host, hlen, why) != 0)
            return -1;
    }
    p = colon + 1;
    if (p[0] == '\0')
        return fail(why, "missing port");
    for (i = 0; p[i] != '\0'; i++) {
        if (!isdig(p[i]))
            return fail(why, "bad port");
        if (i == 5)
            return fail(why, "port out of range (1..65535)");
        port = port * 10 + (unsigned)(p[i] - '0');
    }
    if (port == 0 || port > 65535)
        return fail(why, "port out of range (1..65535)");
    memcpy(host_out, host, hlen);
    host_out[hlen] = '\0';
    *port_out = (uint16_t)port;
    return 0;
}
