/* The control protocol on the decision-plane side (include/rt/ctl.h): framing, tokenizer, requests and the state
 * file. A change is applied to a clone of the current table, so a refused request leaves nothing behind. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "rt/alloc.h"
#include "rt/ctl.h"
#include "rt/parse.h"

#define ERR_MAX 512
#define SHOW_MAX 64 /* bytes of a user's token echoed in an error message */

/* Where a message about the request goes; <err> is always NUL-terminated. */
struct ctx {
    const rt_ctl_tokens_t *tk;
    char err[ERR_MAX];
};

static int is_sep(char c)
{
    return c == ' ' || c == '\t';
}

int rt_ctl_op_is_change(int op)
{
    return op >= RT_CTL_SET_WEIGHT && op <= RT_CTL_DEL_UPSTREAM;
}

long rt_ctl_next_line(const char *buf, size_t len, size_t *linelen)
{
    size_t scan = len < RT_CTL_LINE_MAX + 2 ? len : RT_CTL_LINE_MAX + 2;
    const char *nl = len > 0 ? memchr(buf, '\n', scan) : NULL; /* an empty buffer may be NULL */
    size_t n;

    if (nl == NULL)
        return len >= RT_CTL_LINE_MAX + 2 ? -1 : 0;
    n = (size_t)(nl - buf);
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n > RT_CTL_LINE_MAX)
        return -1;
    *linelen = n;
    return (long)(nl - buf) + 1;
}

size_t rt_ctl_skip_line(const char *buf, size_t len, int *found)
{
    const char *nl = len > 0 ? memchr(buf, '\n', len) : NULL;

    *found = nl != NULL;
    return nl != NULL ? (size_t)(nl - buf) + 1 : len;
}

/* Copies <s> for an error message: at most SHOW_MAX bytes, control bytes as '?', "..." when cut. */
static const char *show(const char *s, size_t n, char *buf)
{
    size_t i, k = n < SHOW_MAX ? n : SHOW_MAX;

    for (i = 0; i < k; i++)
        buf[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    if (k < n) {
        memcpy(buf + k, "...", 3);
        k += 3;
    }
    buf[k] = '\0';
    return buf;
}

static int fail(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct ctx *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
    return RT_CTL_ERROR;
}

/* "<what> 'TOKEN'" about token <i>. */
static int fail_tok(struct ctx *c, const char *what, size_t i)
{
    char b[SHOW_MAX + 4];

    return fail(c, "%s '%s'", what, show(c->tk->v[i], c->tk->len[i], b));
}

int rt_ctl_tokenize(const char *line, size_t len, rt_ctl_tokens_t *out, char *err, size_t errlen)
{
    const char *msg = NULL;
    char *o = out->store;
    size_t i = 0;
    char esc[2] = {0, 0};

    out->n = 0;
    if (len > RT_CTL_LINE_MAX) {
        msg = "line too long";
        goto fail;
    }
    if (len > 0 && memchr(line, '\0', len) != NULL) {
        msg = "NUL byte in request";
        goto fail;
    }
    for (;;) {
        while (i < len && is_sep(line[i]))
            i++;
        if (i == len)
            break;
        if (out->n == RT_CTL_MAX_TOKENS) {
            msg = "more than 70 tokens";
            goto fail;
        }
        out->v[out->n] = o;
        if (line[i] == '"') {
            for (i++;; i++) {
                if (i == len) {
                    msg = "unterminated quote";
                    goto fail;
                }
                if (line[i] == '"')
                    break;
                if (line[i] == '\\') {
                    if (++i == len) {
                        msg = "unterminated quote";
                        goto fail;
                    }
                    if (line[i] != '"' && line[i] != '\\') {
                        esc[0] = ((unsigned char)line[i] < 0x20 || line[i] == 0x7f) ? '?' : line[i];
                        goto fail;
                    }
                }
                *o++ = line[i];
            }
            i++; /* the closing quote */
            if (i < len && !is_sep(line[i])) {
                msg = "missing space after closing quote";
                goto fail;
            }
        } else {
            while (i < len && !is_sep(line[i]))
                *o++ = line[i++];
        }
        out->len[out->n] = (size_t)(o - out->v[out->n]);
        *o++ = '\0';
        out->n++;
    }
    return 0;
fail:
    out->n = 0;
    if (errlen > 0) {
        if (msg != NULL)
            snprintf(err, errlen, "%s", msg);
        else
            snprintf(err, errlen, "bad escape '\\%s' (only \\\" and \\\\)", esc);
    }
    return -1;
}

int rt_ctl_quote(rt_buf_t *out, const char *s, size_t n)
{
    size_t i, start, mark = out->len;
    int quote = n == 0;

    for (i = 0; i < n && !quote; i++)
        quote = (unsigned char)s[i] <= ' ' || s[i] == '"' || s[i] == '\\' || s[i] == 0x7f;
    if (!quote)
        return rt_buf_append(out, s, n);
    if (rt_buf_putc(out, '"') != 0)
        return -1;
    for (i = start = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            if (rt_buf_append(out, s + start, i - start) != 0 || rt_buf_putc(out, '\\') != 0)
                goto oom;
            start = i;
        }
    }
    if (rt_buf_append(out, s + start, n - start) != 0 || rt_buf_putc(out, '"') != 0)
        goto oom;
    return 0;
oom:
    rt_buf_truncate(out, mark);
    return -1;
}

static int tok_is(const rt_ctl_tokens_t *tk, size_t i, const char *word)
{
    return i < tk->n && strcmp(tk->v[i], word) == 0;
}

/* The requests by their leading words, most specific first; <want> is the exact token count of fixed-arity ones, or
 * the least one when <more> is set. */
static const struct request {
    const char *w[3]; /* NULL: any word, or none */
    int op;
    size_t want; /* 0: checked by the request's own parser */
    int more;    /* <want> tokens or more */
} requests[] = {
    {{"get", "weight", NULL}, RT_CTL_GET_WEIGHT, 2, 0},
    {{"set", "weight", NULL}, RT_CTL_SET_WEIGHT, 0, 0},
    {{"set", "header-route", NULL}, RT_CTL_SET_HEADER_ROUTE, 0, 0},
    {{"set", "mirror-route", NULL}, RT_CTL_SET_MIRROR_ROUTE, 0, 0},
    {{"set", "sticky-salt", NULL}, RT_CTL_SET_STICKY_SALT, 3, 0},
    {{"del", "route", NULL}, RT_CTL_DEL_ROUTE, 3, 0},
    {{"del", "routes", NULL}, RT_CTL_DEL_ROUTES, 2, 0},
    {{"show", "routes", NULL}, RT_CTL_SHOW_ROUTES, 2, 0},
    {{"set", "upstream", NULL}, RT_CTL_SET_UPSTREAM, 4, 1},
    {{"del", "upstream", NULL}, RT_CTL_DEL_UPSTREAM, 3, 0},
    {{"show", "upstreams", NULL}, RT_CTL_SHOW_UPSTREAMS, 2, 0},
    {{"show", "stats", "json"}, RT_CTL_SHOW_STATS_JSON, 3, 0},
    {{"show", "stats", NULL}, RT_CTL_SHOW_STATS, 2, 0},
    {{"reset", "stats", NULL}, RT_CTL_RESET_STATS, 2, 0},
    {{"status", NULL, NULL}, RT_CTL_STATUS, 1, 0},
    {{"auth", NULL, NULL}, RT_CTL_AUTH, 2, 0},
};

/* The request named by the leading tokens, with its arity checked where it is fixed. */
static int classify(struct ctx *c)
{
    const rt_ctl_tokens_t *tk = c->tk;
    const struct request *r = NULL;
    char b0[SHOW_MAX + 4], b1[SHOW_MAX + 4];
    int verb_known = 0;
    size_t i, k;

    if (tk->n == 0)
        return fail(c, "empty request");
    for (i = 0; i < sizeof(requests) / sizeof(requests[0]) && r == NULL; i++) {
        if (!tok_is(tk, 0, requests[i].w[0]))
            continue;
        verb_known = 1;
        for (k = 1; k < 3 && (requests[i].w[k] == NULL || tok_is(tk, k, requests[i].w[k])); k++)
            ;
        if (k == 3)
            r = &requests[i];
    }
    if (!verb_known)
        return fail_tok(c, "unknown command", 0);
    if (r == NULL && tk->n < 2)
        return fail(c, "missing argument");
    if (r == NULL)
        return fail(c, "unknown command '%s %s'", show(tk->v[0], tk->len[0], b0), show(tk->v[1], tk->len[1], b1));
    if (tk->n < r->want)
        return fail(c, "missing argument");
    if (r->want > 0 && tk->n > r->want && r->op == RT_CTL_AUTH) /* do not echo what may be part of a secret */
        return fail(c, "auth takes one token (quote it if it holds spaces)");
    if (r->want > 0 && tk->n > r->want && !r->more)
        return fail_tok(c, "unexpected argument", r->want);
    return r->op;
}

/* Parses token <i> as a percentage; <what> names the quantity in the out-of-range message. */
static int parse_percent(struct ctx *c, size_t i, const char *what, uint32_t *bp)
{
    char msg[48];
    const char *why;

    if (rt_parse_bp(c->tk->v[i], c->tk->len[i], bp, &why) == 0)
        return 0;
    if (strcmp(why, "out of range") == 0) {
        snprintf(msg, sizeof(msg), "%s out of range", what);
        why = msg;
    }
    return fail_tok(c, why, i);
}

static int set_weight(struct ctx *c, rt_table_t *t)
{
    const rt_ctl_tokens_t *tk = c->tk;
    const char *names[RT_MAX_VARIANTS];
    uint32_t bps[RT_MAX_VARIANTS], w[RT_MAX_VARIANTS], sum = 0;
    unsigned nv = rt_table_nvariants(t), stable = rt_table_stable(t), v;
    size_t i, k, n = 0;
    const char *err = NULL;

    if (tk->n < 3)
        return fail(c, "missing argument");
    for (v = 0; v < nv; v++)
        w[v] = rt_table_weight_bp(t, v);
    if (tk->n == 3) {
        names[0] = "canary";
        if (parse_percent(c, 2, "weight", &bps[0]) != 0)
            return RT_CTL_ERROR;
        n = 1;
        v = (unsigned)rt_table_find_variant(t, "canary", 6); /* every table has a canary */
        if (v < nv)
            w[v] = bps[0];
    } else {
        if ((tk->n - 2) % 2 != 0)
            return fail(c, "missing argument");
        for (i = 2; i < tk->n; i += 2) {
            int idx = rt_table_find_variant(t, tk->v[i], tk->len[i]);
            if (idx < 0)
                return fail_tok(c, "unknown variant", i);
            if ((unsigned)idx == stable)
                return fail(c, "stable takes no weight: it gets 100 minus the others");
            for (k = 0; k < n; k++)
                if (strcmp(names[k], tk->v[i]) == 0)
                    return fail_tok(c, "variant given twice", i);
            if (parse_percent(c, i + 1, "weight", &bps[n]) != 0)
                return RT_CTL_ERROR;
            names[n] = tk->v[i];
            w[idx] = bps[n++];
        }
    }
    for (v = 0; v < nv; v++)
        if (v != stable)
            sum += w[v];
    if (sum > RT_BP_MAX)
        return fail(c, "weights sum over 100");
    if (rt_table_set_weights(t, names, bps, n, &err) != 0)
        return fail(c, "%s", err != NULL ? err : "cannot set weights");
    return RT_CTL_SET_WEIGHT;
}

static int parse_op(struct ctx *c, size_t i, enum rt_match_op *op)
{
    if (tok_is(c->tk, i, "exact"))
        *op = RT_MATCH_EXACT;
    else if (tok_is(c->tk, i, "prefix"))
        *op = RT_MATCH_PREFIX;
    else if (tok_is(c->tk, i, "regex"))
        *op = RT_MATCH_REGEX;
    else
        return fail_tok(c, "unknown match (exact, prefix or regex)", i);
    return 0;
}

/* RFC 9110 tchar: what a method or a header name is made of. */
static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static int all_tchar(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (!is_tchar((unsigned char)s[i]))
            return 0;
    return n > 0;
}

/* "GET" or "GET,POST": non-empty methods separated by single commas. */
static int method_list_valid(const char *s, size_t n)
{
    size_t i, start = 0;

    for (i = 0; i <= n; i++) {
        if (i == n || s[i] == ',') {
            if (!all_tchar(s + start, i - start))
                return 0;
            start = i + 1;
        }
    }
    return 1;
}

/* Parses the conditions from token <i> on into <conds>. Returns the count, or -1. */
static int parse_conds(struct ctx *c, size_t i, rt_cond_spec_t *conds)
{
    const rt_ctl_tokens_t *tk = c->tk;
    int n = 0;

    while (i < tk->n) {
        rt_cond_spec_t *cd = &conds[n];

        if (n == RT_MAX_CONDS)
            return fail(c, "more than %d conditions", RT_MAX_CONDS);
        memset(cd, 0, sizeof(*cd));
        if (tok_is(tk, i, "method")) {
            if (i + 1 >= tk->n)
                return fail(c, "missing argument");
            if (!method_list_valid(tk->v[i + 1], tk->len[i + 1]))
                return fail_tok(c, "bad method list", i + 1);
            cd->kind = RT_COND_METHOD;
            cd->op = RT_MATCH_EXACT;
            cd->value = tk->v[i + 1];
            i += 2;
        } else if (tok_is(tk, i, "path")) {
            if (i + 2 >= tk->n)
                return fail(c, "missing argument");
            if (parse_op(c, i + 1, &cd->op) != 0)
                return -1;
            cd->kind = RT_COND_PATH;
            cd->value = tk->v[i + 2];
            i += 3;
        } else if (tok_is(tk, i, "header")) {
            const char *name;
            size_t nlen;

            if (i + 3 >= tk->n)
                return fail(c, "missing argument");
            name = tk->v[i + 1];
            nlen = tk->len[i + 1];
            if (nlen > 7 && memcmp(name, "cookie:", 7) == 0 ? !all_tchar(name + 7, nlen - 7) : !all_tchar(name, nlen))
                return fail_tok(c, "bad header name", i + 1);
            if (parse_op(c, i + 2, &cd->op) != 0)
                return -1;
            cd->kind = RT_COND_HEADER;
            cd->name = name;
            cd->value = tk->v[i + 3];
            i += 4;
        } else {
            return fail_tok(c, "unknown condition (method, path or header)", i);
        }
        n++;
    }
    return n;
}

static int set_route(struct ctx *c, rt_table_t *t, int op)
{
    const rt_ctl_tokens_t *tk = c->tk;
    rt_cond_spec_t conds[RT_MAX_CONDS];
    rt_route_spec_t spec;
    size_t i = 3;
    int n;

    memset(&spec, 0, sizeof(spec));
    if (tk->n < 3)
        return fail(c, "missing argument");
    spec.name = tk->v[2];
    spec.kind = op == RT_CTL_SET_MIRROR_ROUTE ? RT_ROUTE_MIRROR : RT_ROUTE_HEADER;
    if (spec.kind == RT_ROUTE_MIRROR) {
        if (tk->n < 4)
            return fail(c, "missing argument");
        if (parse_percent(c, 3, "percent", &spec.percent_bp) != 0)
            return RT_CTL_ERROR;
        i = 4;
    }
    if (tok_is(tk, i, "to")) {
        if (i + 1 >= tk->n)
            return fail(c, "missing argument");
        if (rt_table_find_variant(t, tk->v[i + 1], tk->len[i + 1]) < 0)
            return fail_tok(c, "unknown variant", i + 1);
        spec.to = tk->v[i + 1];
        i += 2;
    }
    n = parse_conds(c, i, conds);
    if (n < 0)
        return RT_CTL_ERROR;
    if (n == 0 && spec.kind == RT_ROUTE_HEADER)
        return fail(c, "a header route needs at least one condition");
    spec.conds = conds;
    spec.nconds = (size_t)n;
    if (rt_table_set_route(t, &spec, c->err, sizeof(c->err)) != 0)
        return RT_CTL_ERROR;
    return op;
}

/* `set upstream VARIANT ADDR...`: the addresses are checked here and kept as one line in sorted order, so a repeat
 * with the same addresses in any order is no change (a rollout engine may build the list from a map); resolving
 * names and connecting are the proxy's business. */
static int set_upstream(struct ctx *c, rt_table_t *t)
{
    const rt_ctl_tokens_t *tk = c->tk;
    char host[RT_HOST_MAX + 1], addrs[RT_CTL_LINE_MAX + 1];
    size_t i, k, len = 0, n = 0, order[RT_CTL_MAX_TOKENS];
    const char *why;
    uint16_t port;

    if (!rt_variant_name_valid(tk->v[2], tk->len[2]))
        return fail_tok(c, "bad variant name ([a-z0-9][a-z0-9-]{0,31})", 2);
    for (i = 3; i < tk->n; i++) {
        if (rt_parse_hostport(tk->v[i], host, &port, &why) != 0) {
            char b[SHOW_MAX + 4];
            return fail(c, "bad address '%s': %s", show(tk->v[i], tk->len[i], b), why);
        }
        for (k = n; k > 0 && strcmp(tk->v[order[k - 1]], tk->v[i]) > 0; k--)
            order[k] = order[k - 1];
        if (k > 0 && strcmp(tk->v[order[k - 1]], tk->v[i]) == 0)
            return fail_tok(c, "address given twice", i);
        order[k] = i;
        n++;
    }
    for (k = 0; k < n; k++) {
        /* the tokens come from one line of at most RT_CTL_LINE_MAX bytes, separators included: this fits */
        if (len > 0)
            addrs[len++] = ' ';
        memcpy(addrs + len, tk->v[order[k]], tk->len[order[k]]);
        len += tk->len[order[k]];
    }
    addrs[len] = '\0';
    if (rt_table_find_variant(t, tk->v[2], tk->len[2]) < 0 && rt_table_add_variant(t, tk->v[2]) < 0)
        return fail(c, "too many variants (at most %d)", RT_MAX_VARIANTS);
    if (rt_table_set_upstreams(t, tk->v[2], addrs) < 0)
        return fail(c, "out of memory");
    return RT_CTL_SET_UPSTREAM;
}

/* Applies the change <op> (from classify()) to <t>, which only this thread can see. Returns <op> or RT_CTL_ERROR;
 * <t> may be partly changed on error and must then be dropped. */
static int apply(struct ctx *c, rt_table_t *t, int op)
{
    const rt_ctl_tokens_t *tk = c->tk;

    switch (op) {
    case RT_CTL_SET_WEIGHT:
        return set_weight(c, t);
    case RT_CTL_SET_HEADER_ROUTE:
    case RT_CTL_SET_MIRROR_ROUTE:
        return set_route(c, t, op);
    case RT_CTL_SET_STICKY_SALT:
        if (rt_table_set_salt(t, tk->v[2]) != 0)
            return fail(c, "out of memory");
        return op;
    case RT_CTL_DEL_ROUTE:
        if (rt_table_del_route(t, tk->v[2]) != 0)
            return fail_tok(c, "unknown route", 2);
        return op;
    case RT_CTL_DEL_ROUTES:
        rt_table_del_routes(t);
        return op;
    case RT_CTL_SET_UPSTREAM:
        return set_upstream(c, t);
    case RT_CTL_DEL_UPSTREAM: {
        const char *why;
        if (rt_table_del_variant(t, tk->v[2], &why) != 0) {
            char b[SHOW_MAX + 4];
            return fail(c, "%s '%s'", why, show(tk->v[2], tk->len[2], b));
        }
        return op;
    }
    default:
        return fail(c, "not a change");
    }
}

static int get_weight(const rt_table_t *t, rt_buf_t *reply)
{
    unsigned nv = rt_table_nvariants(t), stable = rt_table_stable(t), v;
    char pct[8];
    int rc = rt_buf_puts(reply, "ok\n");

    /* bucket order: canary (index 0), the others as declared, stable last */
    for (v = 0; v <= nv && rc == 0; v++) {
        unsigned idx = v < nv ? v : stable;
        if ((v < nv && v == stable) || rt_table_variant_name(t, idx) == NULL)
            continue;
        rt_format_bp(rt_table_weight_bp(t, idx), pct);
        rc = rt_buf_printf(reply, "%s %s\n", rt_table_variant_name(t, idx), pct);
    }
    if (rc == 0)
        rc = rt_buf_printf(reply, "generation %llu\n\n", (unsigned long long)rt_table_generation(t));
    return rc;
}

/* Appends route <i> of <t> as its control line, without the newline. */
static int put_route(const rt_table_t *t, unsigned i, rt_buf_t *out)
{
    size_t need = rt_table_format_route(t, i, NULL, 0);

    if (rt_buf_reserve(out, need) != 0)
        return -1;
    rt_table_format_route(t, i, out->p + out->len, out->cap - out->len);
    out->len += need;
    return 0;
}

static int show_routes(const rt_table_t *t, rt_buf_t *reply)
{
    unsigned i, n = rt_table_nroutes(t);
    int rc = rt_buf_puts(reply, "ok\n");

    for (i = 0; i < n && rc == 0; i++)
        if ((rc = put_route(t, i, reply)) == 0)
            rc = rt_buf_putc(reply, '\n');
    return rc == 0 ? rt_buf_putc(reply, '\n') : rc;
}

/* Drops a trailing "\n" or "\r\n" so callers may pass a line with its terminator. */
static size_t chomp(const char *line, size_t len)
{
    if (len > 0 && line[len - 1] == '\n')
        len--;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    return len;
}

/* Tokenizes and classifies <line>. Returns the op, or RT_CTL_ERROR with the message in <c->err>. */
static int parse_line(struct ctx *c, rt_ctl_tokens_t *tk, const char *line, size_t len)
{
    c->tk = tk;
    c->err[0] = '\0';
    if (rt_ctl_tokenize(line, chomp(line, len), tk, c->err, sizeof(c->err)) != 0)
        return RT_CTL_ERROR;
    return classify(c);
}

int rt_ctl_exec(const rt_table_t *cur, const char *line, size_t len, rt_table_t **next, rt_buf_t *reply)
{
    rt_ctl_tokens_t *tk = rt_malloc(sizeof(*tk)); /* 8 KiB: kept off the caller's stack */
    size_t mark = reply->len;
    rt_table_t *t = NULL;
    struct ctx c;
    int op, rc = 0;

    *next = NULL;
    if (tk == NULL) {
        op = fail(&c, "out of memory");
        goto error;
    }
    op = parse_line(&c, tk, line, len);
    if (rt_ctl_op_is_change(op)) {
        t = rt_table_clone(cur);
        if (t == NULL) {
            op = fail(&c, "out of memory");
        } else if ((op = apply(&c, t, op)) != RT_CTL_ERROR) {
            if (rt_buf_puts(reply, "ok\n\n") != 0) {
                op = fail(&c, "out of memory");
            } else if (!rt_table_equal(cur, t)) {
                rt_table_set_generation(t, rt_table_generation(cur) + 1);
                *next = t;
                t = NULL;
            }
        }
        rt_table_free(t);
    } else if (op == RT_CTL_GET_WEIGHT) {
        rc = get_weight(cur, reply);
    } else if (op == RT_CTL_SHOW_ROUTES) {
        rc = show_routes(cur, reply);
    }
    if (rc != 0)
        op = fail(&c, "out of memory");
    rt_free(tk);
    if (op != RT_CTL_ERROR)
        return op;
error:
    rt_buf_truncate(reply, mark);
    if (rt_buf_printf(reply, "error: %s\n\n", c.err) != 0)
        rt_buf_truncate(reply, mark);
    return RT_CTL_ERROR;
}

int rt_ctl_auth_token(const char *line, size_t len, rt_buf_t *token)
{
    rt_ctl_tokens_t *tk = rt_malloc(sizeof(*tk));
    struct ctx c;
    int rc = -1;

    if (tk == NULL)
        return -1;
    if (parse_line(&c, tk, line, len) == RT_CTL_AUTH) {
        rt_buf_reset(token);
        rc = rt_buf_append(token, tk->v[1], tk->len[1]);
    }
    /* the token is a secret: do not leave it in freed memory */
    memset(tk, 0, sizeof(*tk));
    rt_free(tk);
    return rc;
}

int rt_ctl_dump_state(const rt_table_t *t, rt_buf_t *out)
{
    unsigned nv = rt_table_nvariants(t), stable = rt_table_stable(t), v, i;
    const char *salt = rt_table_salt(t);
    size_t mark = out->len;
    char pct[8];
    int rc;

    if (strpbrk(salt, "\r\n") != NULL)
        return -1;
    rc = rt_buf_printf(out, "# weir routing state: control lines replayed at start\ngeneration %llu\n",
                       (unsigned long long)rt_table_generation(t));
    if (rc == 0)
        rc = rt_buf_puts(out, "set sticky-salt ");
    if (rc == 0)
        rc = rt_ctl_quote(out, salt, strlen(salt));
    if (rc == 0)
        rc = rt_buf_putc(out, '\n');
    /* run-time variants before the weights that name them */
    for (v = 0; v < nv && rc == 0; v++)
        if (rt_table_upstreams(t, v) != NULL)
            rc = rt_buf_printf(out, "set upstream %s %s\n", rt_table_variant_name(t, v), rt_table_upstreams(t, v));
    if (rc == 0)
        rc = rt_buf_puts(out, "set weight");
    for (v = 0; v < nv && rc == 0; v++) {
        if (v == stable || rt_table_variant_name(t, v) == NULL)
            continue;
        rt_format_bp(rt_table_weight_bp(t, v), pct);
        rc = rt_buf_printf(out, " %s %s", rt_table_variant_name(t, v), pct);
    }
    if (rc == 0)
        rc = rt_buf_putc(out, '\n');
    for (i = 0; i < rt_table_nroutes(t) && rc == 0; i++)
        if ((rc = put_route(t, i, out)) == 0)
            rc = rt_buf_putc(out, '\n');
    /* removals last: by then no weight or route names the variant */
    for (v = 0; v < nv && rc == 0; v++)
        if (rt_table_removed_name(t, v) != NULL)
            rc = rt_buf_printf(out, "del upstream %s\n", rt_table_removed_name(t, v));
    if (rc != 0)
        rt_buf_truncate(out, mark);
    return rc;
}

/* Parses a decimal uint64 with no sign, no spaces and no leading zeros beyond "0". */
static int parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (n == 0 || (n > 1 && s[0] == '0'))
        return -1;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

/* One line of a state file, applied to <t>. Returns 0, or -1 with the message in <c->err>. */
static int load_line(struct ctx *c, rt_ctl_tokens_t *tk, const rt_table_t *base, rt_table_t *t, const char *line,
                     size_t len, int *have_gen)
{
    char b0[SHOW_MAX + 4], b1[SHOW_MAX + 4];
    size_t i = 0;
    uint64_t gen;
    int op;

    while (i < len && is_sep(line[i]))
        i++;
    if (i == len || line[i] == '#') /* before tokenizing: a comment may hold an odd number of quotes */
        return 0;
    if (rt_ctl_tokenize(line, len, tk, c->err, sizeof(c->err)) != 0)
        return -1;
    c->tk = tk;
    if (tok_is(tk, 0, "generation")) {
        if (tk->n != 2)
            return fail(c, tk->n < 2 ? "missing argument" : "unexpected argument");
        if (parse_u64(tk->v[1], tk->len[1], &gen) != 0)
            return fail_tok(c, "bad generation", 1);
        if ((*have_gen)++)
            return fail(c, "generation given twice");
        rt_table_set_generation(t, gen);
        return 0;
    }
    op = classify(c);
    if (op == RT_CTL_ERROR)
        return -1;
    if (!rt_ctl_op_is_change(op))
        return fail(c, "not a state line: '%s%s%s'", show(tk->v[0], tk->len[0], b0), tk->n > 1 ? " " : "",
                    tk->n > 1 ? show(tk->v[1], tk->len[1], b1) : "");
    /* Declared at run time before a restart and removed since: nothing to remove now. Declared by the
     * configuration: the configuration wins over an earlier removal, which never stops weir from starting. */
    if (op == RT_CTL_DEL_UPSTREAM &&
        (rt_table_find_variant(t, tk->v[2], tk->len[2]) < 0 || rt_table_find_variant(base, tk->v[2], tk->len[2]) >= 0))
        return 0;
    return apply(c, t, op) == RT_CTL_ERROR ? -1 : 0;
}

rt_table_t *rt_ctl_load_state(const rt_table_t *base, const char *text, size_t len, char *err, size_t errlen)
{
    rt_ctl_tokens_t *tk = rt_malloc(sizeof(*tk));
    rt_table_t *t = rt_table_clone(base);
    size_t pos = 0, lineno = 0;
    int have_gen = 0;
    struct ctx c;

    if (tk == NULL || t == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    /* the file says which routes exist: none survive from <base> */
    rt_table_del_routes(t);
    while (pos < len) {
        const char *line = text + pos, *nl = memchr(line, '\n', len - pos);
        size_t n = nl != NULL ? (size_t)(nl - line) : len - pos;

        pos += n + (nl != NULL);
        lineno++;
        if (load_line(&c, tk, base, t, line, chomp(line, n), &have_gen) != 0) {
            snprintf(err, errlen, "line %zu: %s", lineno, c.err);
            goto fail;
        }
    }
    rt_free(tk);
    return t;
fail:
    rt_free(tk);
    rt_table_free(t);
    return NULL;
}
