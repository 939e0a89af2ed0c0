/* Route conditions: compiling a route spec once (regexes included) and matching it against requests. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "rt/alloc.h"
#include "table-int.h"

#ifndef REG_STARTEND
#error "regexec() must support REG_STARTEND: request spans are not NUL-terminated and rt_decide() may not copy"
#endif

/* clang-format off */
#define L8(c) c, c + 1, c + 2, c + 3, c + 4, c + 5, c + 6, c + 7
#define L16(c) L8(c), L8(c + 8)
const unsigned char rt__lower[256] = {
    L16(0x00), L16(0x10), L16(0x20), L16(0x30),
    '@', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o',
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', '[', '\\', ']', '^', '_',
    L16(0x60), L16(0x70), L16(0x80), L16(0x90), L16(0xa0), L16(0xb0), L16(0xc0), L16(0xd0), L16(0xe0), L16(0xf0),
};
#undef L16
#undef L8
/* clang-format on */

int rt__is_token(const char *s, size_t len)
{
    size_t i;

    if (len == 0)
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL)))
            return 0;
    }
    return 1;
}

static int is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

int rt__cookie_next(const rt_request_t *req, const char *name, size_t namelen, rt__cookie_iter_t *it, rt_span_t *value)
{
    for (; it->hdr < req->nheaders; it->hdr++, it->off = 0) {
        const rt_header_t *h = &req->headers[it->hdr];
        const char *v = h->value.p;
        size_t end = h->value.len;

        if (h->name.len != 6 || !rt__name_eq("cookie", h->name.p, 6))
            continue;
        while (it->off < end) {
            const char *semi = memchr(v + it->off, ';', end - it->off);
            size_t b = it->off, e = semi != NULL ? (size_t)(semi - v) : end, eq;

            it->off = semi != NULL ? e + 1 : end;
            while (b < e && is_ows(v[b]))
                b++;
            for (eq = b; eq < e && v[eq] != '='; eq++)
                ;
            if (eq == e) /* a pair without '=' names nothing */
                continue;
            {
                size_t ne = eq, vb = eq + 1, ve = e;
                while (ne > b && is_ows(v[ne - 1]))
                    ne--;
                if (ne - b != namelen || memcmp(v + b, name, namelen) != 0)
                    continue;
                while (vb < ve && is_ows(v[vb]))
                    vb++;
                while (ve > vb && is_ows(v[ve - 1]))
                    ve--;
                value->p = v + vb;
                value->len = ve - vb;
                return 1;
            }
        }
    }
    return 0;
}

int rt__fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Returns the end of the bracket expression that opens at <s> ('['): past its ']', or at the NUL when unclosed.
 * ']' first is literal; [:x:] [=x=] [.x.] may hold ']'. */
static const char *skip_bracket(const char *s)
{
    s++;
    if (*s == '^')
        s++;
    if (*s == ']')
        s++;
    while (*s != '\0' && *s != ']') {
        if (*s == '[' && (s[1] == ':' || s[1] == '=' || s[1] == '.')) {
            char kind = s[1];
            const char *e = s + 2;
            while (*e != '\0' && !(e[0] == kind && e[1] == ']'))
                e++;
            s = *e != '\0' ? e + 2 : e;
        } else {
            s++;
        }
    }
    return *s == ']' ? s + 1 : s;
}

/* Returns 1 when <s> has a ')' that closes no group of its own: wrapped in "^(" s ")$" it would close the wrapper
 * and let the rest escape the anchors, while regcomp() alone takes such a ')' as a literal. */
static int stray_paren(const char *s)
{
    int depth = 0;

    while (*s != '\0') {
        if (*s == '\\') {
            s += s[1] != '\0' ? 2 : 1;
        } else if (*s == '[') {
            s = skip_bracket(s);
        } else {
            if (*s == '(')
                depth++;
            else if (*s == ')' && --depth < 0)
                return 1;
            s++;
        }
    }
    return 0;
}

/* What keeps regcomp() cheap (SPEC §4), checked before it runs. glibc compiles x{m,n} into n copies of x, so nested
 * bounds multiply: (((a{1,100}){1,100}){1,100}){1,100} asks for 10^8 copies and gigabytes. The n - m optional
 * copies also nest inside one another, so one large bound alone costs memory quadratic in it (a{1,2000}: 31 MB).
 * Under these limits a pattern compiles into a few megabytes at most, within milliseconds. */
#define RE_MAX_LEN 256     /* bytes of a pattern */
#define RE_MAX_BOUND 255   /* any repetition bound: the largest RE_DUP_MAX POSIX lets a program rely on */
#define RE_MAX_COPIES 1000 /* atoms of the pattern with every repetition expanded as glibc expands it */
#define RE_MAX_NEST 10     /* operators applied one over another, directly (x**) or through groups ((x*)*) */

/* Returns how many copies of the preceding unit the repetition operator at <s> makes, as glibc expands it (x* and
 * x? one, x+ two, x{m,n} n, x{m,} m + 1), and stores its length in <*len> and its lower bound in <*min>; or returns
 * 0 with <*len> 0 when no operator starts at <s> (a '{' that opens no valid bound is a literal to this count). A
 * bound above RE_MAX_BOUND returns RE_MAX_COPIES + 1. */
static unsigned repeat_count(const char *s, size_t *len, unsigned *min)
{
    unsigned b[2] = {0, 0};
    int have[2] = {0, 0}, i = 0, comma = 0;
    const char *p = s + 1;

    *len = 0;
    *min = 0;
    if (*s == '*' || *s == '?' || *s == '+') {
        *len = 1;
        *min = *s == '+';
        return *s == '+' ? 2 : 1;
    }
    if (*s != '{')
        return 0;
    for (; *p != '}'; p++) {
        if (*p >= '0' && *p <= '9') {
            if (b[i] <= RE_MAX_BOUND)
                b[i] = b[i] * 10 + (unsigned)(*p - '0');
            have[i] = 1;
        } else if (*p == ',' && !comma) {
            comma = 1;
            i = 1;
        } else {
            return 0;
        }
    }
    *len = (size_t)(p - s) + 1;
    *min = b[0];
    if (b[0] > RE_MAX_BOUND || b[1] > RE_MAX_BOUND)
        return RE_MAX_COPIES + 1;
    if (!comma) /* {m} */
        return b[0] > 0 ? b[0] : 1;
    if (!have[1]) /* {m,} */
        return b[0] + 1;
    return b[1] > 0 ? b[1] : 1;
}

/* Returns 1 when the escape at <s> ('\\') may match the empty string: a word-boundary anchor or a backreference. */
static int escape_nullable(const char *s)
{
    return s[1] != '\0' && strchr("<>bB`'123456789", s[1]) != NULL;
}

/* Returns 1 when <s> is longer than RE_MAX_LEN bytes, has a bound above RE_MAX_BOUND, expands to more than
 * RE_MAX_COPIES atoms, or makes more than two copies of something that may match the empty string (counting
 * stacked operators together: x*++ is four), or applies more than RE_MAX_NEST operators one over another, else 0.
 * Reads the pattern as a tree of groups: a group's weight is the sum of its units, an operator multiplies the unit
 * before it. Close to what glibc allocates: one node per atom, a bracket as one. Copies of a part that may match
 * nothing ((a*){1,255}, (a?){1,40}, a**{1,255}) cost far more than their count: glibc computes which nodes reach
 * which others without input, and those sets grow with the square of the copies (seconds and gigabytes, found by
 * fuzz_ctl), so they are refused outright; (a*){1,255} means a* anyway. Operators over operators cost glibc
 * steeply too, repeated or not: 12 stacked stars compile in 0.35 ms, 24 in 25 ms, 48 in minutes (fuzz_state). */
static int too_complex(const char *s)
{
    struct {
        unsigned sum;      /* weight of the group so far, every alternative counted */
        unsigned last;     /* weight of its last unit, which an operator would repeat; 0 after '|' or '(' */
        unsigned reps;     /* copies of the last unit its operators made so far (x+* : 2) */
        unsigned ops;      /* operators over the last unit, those inside it included */
        unsigned max_ops;  /* the most <ops> of any unit of the group */
        uint8_t last_null; /* the last unit may match the empty string (1 when there is none) */
        uint8_t pre_null;  /* every unit of the alternative before the last one may */
        uint8_t any_null;  /* an earlier alternative of the group may */
    } st[RE_MAX_LEN + 1];
    unsigned depth = 0, n, min, unit_null, ops;
    size_t len;

    if (strlen(s) > RE_MAX_LEN)
        return 1;
    memset(&st[0], 0, sizeof(st[0]));
    st[0].last_null = st[0].pre_null = 1;
    while (*s != '\0') {
        if (*s == '(') {
            depth++;
            memset(&st[depth], 0, sizeof(st[depth]));
            st[depth].last_null = st[depth].pre_null = 1;
            s++;
            continue;
        }
        if (*s == '|') {
            st[depth].any_null |= st[depth].pre_null & st[depth].last_null;
            st[depth].pre_null = st[depth].last_null = 1;
            st[depth].last = 0;
            s++;
            continue;
        }
        if ((n = repeat_count(s, &len, &min)) > 0) {
            if (n > RE_MAX_COPIES || (st[depth].last > 0 && st[depth].last_null && st[depth].reps * n > 2))
                return 1;
            st[depth].sum += st[depth].last * (n - 1);
            st[depth].last *= n;
            st[depth].reps = st[depth].reps * n <= RE_MAX_COPIES ? st[depth].reps * n : RE_MAX_COPIES + 1;
            if (++st[depth].ops > RE_MAX_NEST)
                return 1;
            if (st[depth].ops > st[depth].max_ops)
                st[depth].max_ops = st[depth].ops;
            st[depth].last_null |= min == 0;
            s += len;
        } else {
            if (*s == ')' && depth > 0) {
                n = st[depth].sum > 0 ? st[depth].sum : 1; /* "()" still compiles to a node */
                unit_null = st[depth].any_null | (st[depth].pre_null & st[depth].last_null);
                ops = st[depth].max_ops;
                depth--;
                s++;
            } else {
                n = 1;
                ops = 0;
                unit_null = *s == '^' || *s == '$' || (*s == '\\' && escape_nullable(s));
                s = *s == '\\' ? s + (s[1] != '\0' ? 2 : 1) : *s == '[' ? skip_bracket(s) : s + 1;
            }
            st[depth].pre_null &= st[depth].last_null;
            st[depth].last_null = (uint8_t)unit_null;
            st[depth].sum += n;
            st[depth].last = n;
            st[depth].reps = 1;
            st[depth].ops = ops;
            if (ops > st[depth].max_ops)
                st[depth].max_ops = ops;
        }
        if (st[depth].sum > RE_MAX_COPIES) /* each level stays below the limit, so nothing overflows */
            return 1;
    }
    while (depth > 0) { /* unclosed: regcomp() refuses it, but count it all the same */
        depth--;
        st[depth].sum += st[depth + 1].sum;
    }
    return st[0].sum > RE_MAX_COPIES;
}

/* Compiles "^(" <value> ")$" (REG_EXTENDED | REG_NOSUB) into <re>; <value> passed too_complex(), so it fits. Returns
 * regcomp()'s code. */
static int compile_anchored(regex_t *re, const char *value, size_t n)
{
    char wrapped[RE_MAX_LEN + 5];

    memcpy(wrapped, "^(", 2);
    memcpy(wrapped + 2, value, n);
    memcpy(wrapped + 2 + n, ")$", 3);
    return regcomp(re, wrapped, REG_EXTENDED | REG_NOSUB);
}

static int compile_regex(rt__cond_t *c, char *err, size_t errlen)
{
    char msg[128];
    int rc;

    if (too_complex(c->value))
        return rt__fail(err, errlen, "regex too complex");
    /* Compiled alone first so the error speaks of what the user wrote. */
    rc = regcomp(&c->re, c->value, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        regerror(rc, &c->re, msg, sizeof(msg));
        return rt__fail(err, errlen, "invalid regex '%.200s': %s", c->value, msg);
    }
    regfree(&c->re);
    if (stray_paren(c->value))
        return rt__fail(err, errlen, "invalid regex '%.200s': Unmatched ) or \\)", c->value);
    rc = compile_anchored(&c->re, c->value, c->valuelen);
    if (rc != 0) {
        regerror(rc, &c->re, msg, sizeof(msg));
        return rt__fail(err, errlen, "invalid regex '%.200s': %s", c->value, msg);
    }
    c->has_re = 1;
    c->copies = rt_calloc(RT_MAX_WORKERS, sizeof(*c->copies));
    if (c->copies == NULL)
        return rt__fail(err, errlen, "out of memory");
    return 0;
}

static int method_list_valid(const char *s)
{
    const char *comma;

    for (;;) {
        comma = strchr(s, ',');
        if (!rt__is_token(s, comma != NULL ? (size_t)(comma - s) : strlen(s)))
            return 0;
        if (comma == NULL)
            return 1;
        s = comma + 1;
    }
}

/* Lower ranks are evaluated first: byte compares before scans of every header, regexes last. */
static int rank(const rt__cond_t *c)
{
    int r = c->kind == RT_COND_METHOD ? 0 : c->kind == RT_COND_PATH ? 1 : c->cookie ? 3 : 2;

    return c->op == RT_MATCH_REGEX ? r + 4 : r;
}

static void release(rt__route_t *r)
{
    unsigned i, w;

    for (i = 0; i < r->nconds; i++) {
        rt__cond_t *c = &r->conds[i];
        if (c->copies != NULL)
            for (w = 0; w < RT_MAX_WORKERS; w++)
                if (c->copies[w] != NULL && c->copies[w] != &c->re) {
                    regfree(c->copies[w]);
                    rt_free(c->copies[w]);
                }
        rt_free(c->copies);
        if (c->has_re)
            regfree(&c->re);
    }
    rt_free(r);
}

int rt__route_build(const rt_route_spec_t *spec, unsigned to, rt__route_t **out, char *err, size_t errlen)
{
    size_t i, j, bytes = 0;
    rt__route_t *r;
    char *strs;

    if (spec->nconds > RT_MAX_CONDS)
        return rt__fail(err, errlen, "too many conditions (at most %d)", RT_MAX_CONDS);
    if (spec->nconds > 0 && spec->conds == NULL)
        return rt__fail(err, errlen, "missing conditions");
    for (i = 0; i < spec->nconds; i++) {
        const rt_cond_spec_t *cs = &spec->conds[i];
        if (cs->value == NULL)
            return rt__fail(err, errlen, "condition without a value");
        if (cs->kind == RT_COND_HEADER && cs->name == NULL)
            return rt__fail(err, errlen, "header condition without a name");
        if (cs->kind != RT_COND_METHOD && cs->kind != RT_COND_PATH && cs->kind != RT_COND_HEADER)
            return rt__fail(err, errlen, "unknown condition kind");
        if (cs->kind != RT_COND_METHOD && cs->op != RT_MATCH_EXACT && cs->op != RT_MATCH_PREFIX &&
            cs->op != RT_MATCH_REGEX)
            return rt__fail(err, errlen, "unknown match operator");
        if (cs->kind == RT_COND_METHOD && !method_list_valid(cs->value))
            return rt__fail(err, errlen, "invalid method list '%.200s'", cs->value);
        bytes += strlen(cs->value) + 1 + (cs->kind == RT_COND_HEADER ? strlen(cs->name) + 1 : 0);
    }
    r = rt_calloc(1, sizeof(*r) + spec->nconds * sizeof(rt__cond_t) + bytes);
    if (r == NULL)
        return rt__fail(err, errlen, "out of memory");
    r->refs = 1;
    r->kind = spec->kind;
    r->to = to;
    r->percent_bp = spec->kind == RT_ROUTE_MIRROR ? spec->percent_bp : 0;
    memcpy(r->name, spec->name, strlen(spec->name) + 1);
    strs = (char *)&r->conds[spec->nconds];
    for (i = 0; i < spec->nconds; i++) {
        const rt_cond_spec_t *cs = &spec->conds[i];
        rt__cond_t *c = &r->conds[i];
        size_t n;

        c->kind = (uint8_t)cs->kind;
        c->op = (uint8_t)(cs->kind == RT_COND_METHOD ? RT_MATCH_EXACT : cs->op);
        c->name = "";
        if (cs->kind == RT_COND_HEADER) {
            const char *name = cs->name;
            n = strlen(name);
            if (n > 7 && rt__name_eq("cookie:", name, 7)) {
                c->cookie = 1;
                name += 7;
                n -= 7;
            }
            if (!rt__is_token(name, n)) {
                const char *what = c->cookie ? "cookie" : "header";
                release(r);
                return rt__fail(err, errlen, "invalid %s name '%.200s'", what, cs->name);
            }
            for (j = 0; j < n; j++) /* cookie names are case-sensitive */
                strs[j] = c->cookie ? name[j] : (char)rt__lower[(unsigned char)name[j]];
            strs[n] = '\0';
            c->name = strs;
            c->namelen = (uint32_t)n;
            strs += n + 1;
        }
        n = strlen(cs->value);
        memcpy(strs, cs->value, n + 1);
        c->value = strs;
        c->valuelen = (uint32_t)n;
        strs += n + 1;
        if (c->kind == RT_COND_HEADER) {
            unsigned bit = c->cookie ? rt__name_bit("cookie", 6) : rt__name_bit(c->name, c->namelen);
            r->need[bit >> 6] |= (uint64_t)1 << (bit & 63);
        }
        r->nconds = (unsigned)i + 1; /* so release() sees only what exists */
        if (c->op == RT_MATCH_REGEX && compile_regex(c, err, errlen) < 0) {
            release(r);
            return -1;
        }
    }
    r->nconds = (unsigned)spec->nconds;
    for (i = 0; i < r->nconds; i++) { /* a stable insertion sort by rank */
        uint8_t k = (uint8_t)i;
        for (j = i; j > 0 && rank(&r->conds[r->order[j - 1]]) > rank(&r->conds[k]); j--)
            r->order[j] = r->order[j - 1];
        r->order[j] = k;
    }
    *out = r;
    return 0;
}

void rt__route_release(rt__route_t *r)
{
    if (r != NULL && --r->refs == 0)
        release(r);
}

int rt__route_same(const rt__route_t *a, const rt__route_t *b)
{
    unsigned i;

    if (strcmp(a->name, b->name) != 0 || a->kind != b->kind || a->to != b->to || a->percent_bp != b->percent_bp ||
        a->nconds != b->nconds)
        return 0;
    for (i = 0; i < a->nconds; i++) {
        const rt__cond_t *x = &a->conds[i], *y = &b->conds[i];
        if (x->kind != y->kind || x->op != y->op || x->cookie != y->cookie || x->namelen != y->namelen ||
            x->valuelen != y->valuelen || memcmp(x->name, y->name, x->namelen) != 0 ||
            memcmp(x->value, y->value, x->valuelen) != 0)
            return 0;
    }
    return 1;
}

/* The compiled pattern that <worker> runs: its own copy, compiled on its first use, because glibc's regexec() locks
 * the pattern it runs and one copy shared by all workers serialises them; the shared copy for callers without a
 * worker index (RT_MAX_WORKERS or more), and for good when compiling the worker's copy failed. */
static regex_t *pattern_for(const rt__cond_t *c, unsigned worker)
{
    regex_t *re;

    if (worker >= RT_MAX_WORKERS)
        return (regex_t *)&c->re;
    if (c->copies[worker] != NULL) /* written by this worker only, so read without a lock */
        return c->copies[worker];
    re = rt_malloc(sizeof(*re));
    if (re != NULL && compile_anchored(re, c->value, c->valuelen) != 0) {
        rt_free(re);
        re = NULL;
    }
    c->copies[worker] = re != NULL ? re : (regex_t *)&c->re;
    return c->copies[worker];
}

static int match_value(const rt__cond_t *c, unsigned worker, const char *p, size_t len)
{
    regmatch_t m;

    switch (c->op) {
    case RT_MATCH_EXACT:
        return len == c->valuelen && (len == 0 || memcmp(p, c->value, len) == 0);
    case RT_MATCH_PREFIX:
        return len >= c->valuelen && (c->valuelen == 0 || memcmp(p, c->value, c->valuelen) == 0);
    default:
        /* REG_STARTEND bounds the match to the span, which need not be NUL-terminated. */
        m.rm_so = 0;
        m.rm_eo = (regoff_t)len;
        return regexec(pattern_for(c, worker), len > 0 ? p : "", 0, &m, REG_STARTEND) == 0;
    }
}

static int match_method(const rt__cond_t *c, rt_span_t m)
{
    const char *s = c->value, *end = c->value + c->valuelen;

    while (s < end) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        size_t n = comma != NULL ? (size_t)(comma - s) : (size_t)(end - s);
        if (n == m.len && memcmp(s, m.p, n) == 0)
            return 1;
        s += n + 1;
    }
    return 0;
}

static int match_header(const rt__cond_t *c, unsigned worker, const rt_request_t *req)
{
    size_t i;

    if (c->cookie) {
        rt__cookie_iter_t it = {0, 0};
        rt_span_t v;
        while (rt__cookie_next(req, c->name, c->namelen, &it, &v))
            if (match_value(c, worker, v.p, v.len))
                return 1;
        return 0;
    }
    for (i = 0; i < req->nheaders; i++) {
        const rt_header_t *h = &req->headers[i];
        if (h->name.len == c->namelen && rt__name_eq(c->name, h->name.p, h->name.len) &&
            match_value(c, worker, h->value.p, h->value.len))
            return 1;
    }
    return 0;
}

void rt__reqctx_init(rt__reqctx_t *ctx, const rt_request_t *req)
{
    const char *q = req->path.len > 0 ? memchr(req->path.p, '?', req->path.len) : NULL;
    size_t i;

    ctx->pathlen = q != NULL ? (size_t)(q - req->path.p) : req->path.len;
    memset(ctx->names, 0, sizeof(ctx->names));
    for (i = 0; i < req->nheaders; i++) {
        unsigned bit = rt__name_bit(req->headers[i].name.p, req->headers[i].name.len);
        ctx->names[bit >> 6] |= (uint64_t)1 << (bit & 63);
    }
}

int rt__route_matches(const rt__route_t *r, unsigned worker, const rt_request_t *req, const rt__reqctx_t *ctx)
{
    unsigned i;

    if (!rt__route_may_match(r, ctx))
        return 0;
    for (i = 0; i < r->nconds; i++) {
        const rt__cond_t *c = &r->conds[r->order[i]];
        int ok;

        switch (c->kind) {
        case RT_COND_METHOD:
            ok = match_method(c, req->method);
            break;
        case RT_COND_PATH:
            ok = match_value(c, worker, req->path.p, ctx->pathlen);
            break;
        default:
            ok = match_header(c, worker, req);
            break;
        }
        if (!ok)
            return 0;
    }
    return 1;
}
