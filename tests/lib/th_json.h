/* A small JSON validator for tests (RFC 8259 grammar, no semantic checks), header-only so that unit tests, which
 * do not link tests/lib, can use it too. th_json_valid() returns 1 when <s> is one JSON value and nothing else. */
#ifndef TH_JSON_H
#define TH_JSON_H
#include <string.h>

static inline const char *th_jvalue(const char *p, int depth);

static inline const char *th_jws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

static inline const char *th_jstring(const char *p)
{
    if (*p++ != '"')
        return NULL;
    while (*p != '"') {
        if ((unsigned char)*p < 0x20)
            return NULL;
        if (*p == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", p[i]) || p[i] == '\0')
                        return NULL;
                p += 4;
            } else if (!strchr("\"\\/bfnrt", *p) || *p == '\0') {
                return NULL;
            }
        }
        p++;
    }
    return p + 1;
}

static inline const char *th_jnumber(const char *p)
{
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (*p >= '0' && *p <= '9')
            p++;
    else
        return NULL;
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9'))
            return NULL;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return NULL;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return p;
}

static inline const char *th_jcontainer(const char *p, int depth, char close, int keyed)
{
    p = th_jws(p + 1);
    if (*p == close)
        return p + 1;
    for (;;) {
        if (keyed) {
            if ((p = th_jstring(p)) == NULL)
                return NULL;
            p = th_jws(p);
            if (*p++ != ':')
                return NULL;
        }
        if ((p = th_jvalue(p, depth + 1)) == NULL)
            return NULL;
        p = th_jws(p);
        if (*p == close)
            return p + 1;
        if (*p++ != ',')
            return NULL;
        p = th_jws(p);
    }
}

static inline const char *th_jvalue(const char *p, int depth)
{
    if (depth > 32)
        return NULL;
    p = th_jws(p);
    switch (*p) {
    case '{':
        return th_jcontainer(p, depth, '}', 1);
    case '[':
        return th_jcontainer(p, depth, ']', 0);
    case '"':
        return th_jstring(p);
    case 't':
        return strncmp(p, "true", 4) == 0 ? p + 4 : NULL;
    case 'f':
        return strncmp(p, "false", 5) == 0 ? p + 5 : NULL;
    case 'n':
        return strncmp(p, "null", 4) == 0 ? p + 4 : NULL;
    default:
        return th_jnumber(p);
    }
}

static inline int th_json_valid(const char *s)
{
    const char *end = th_jvalue(s, 0);
    return end != NULL && *th_jws(end) == '\0';
}

#endif
