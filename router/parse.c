/* Strict parsers for weights and variant names (include/rt/parse.h). */
#include <stdio.h>

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
