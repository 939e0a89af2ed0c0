/* The route table (include/rt/table.h): variants, weights, sticky settings and the route list, built by the control
 * thread and read by workers. Matching lives in match.c, the split in split.c, the decision in decide.c. */
#include <string.h>
#include <xxhash.h>

#include "rt/alloc.h"
#include "table-int.h"

static int add_name(rt_table_t *t, const char *name, size_t len)
{
    unsigned i = t->nvariants;

    memcpy(t->names[i], name, len);
    t->names[i][len] = '\0';
    t->namelen[i] = (uint8_t)len;
    t->weight[i] = 0;
    t->gone[i] = 0;
    t->upstreams[i] = NULL;
    t->nvariants++;
    return (int)i;
}

rt_table_t *rt_table_new(void)
{
    rt_table_t *t = rt_calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    t->salt = rt_strdup("");
    if (t->salt == NULL) {
        rt_free(t);
        return NULL;
    }
    t->seed = XXH64("", 0, 0);
    add_name(t, "canary", 6);
    t->stable = (unsigned)add_name(t, "stable", 6);
    rt__split_update(t);
    return t;
}

rt_table_t *rt_table_clone(const rt_table_t *t)
{
    rt_table_t *c = rt_malloc(sizeof(*c));
    unsigned i;

    if (c == NULL)
        return NULL;
    memcpy(c, t, sizeof(*c));
    c->salt = rt_strdup(t->salt);
    c->sticky_name = t->sticky_name != NULL ? rt_strdup(t->sticky_name) : NULL;
    if (c->salt == NULL || (t->sticky_name != NULL && c->sticky_name == NULL)) {
        rt_free(c->salt);
        rt_free(c->sticky_name);
        rt_free(c);
        return NULL;
    }
    for (i = 0; i < c->nvariants; i++) {
        if (t->upstreams[i] != NULL && (c->upstreams[i] = rt_strdup(t->upstreams[i])) == NULL) {
            while (i-- > 0)
                rt_free(c->upstreams[i]);
            rt_free(c->salt);
            rt_free(c->sticky_name);
            rt_free(c);
            return NULL;
        }
    }
    for (i = 0; i < c->nroutes; i++)
        c->routes[i]->refs++;
    return c;
}

void rt_table_free(rt_table_t *t)
{
    unsigned i;

    if (t == NULL)
        return;
    for (i = 0; i < t->nroutes; i++)
        rt__route_release(t->routes[i]);
    for (i = 0; i < t->nvariants; i++)
        rt_free(t->upstreams[i]);
    rt_free(t->salt);
    rt_free(t->sticky_name);
    rt_free(t);
}

int rt_table_add_variant(rt_table_t *t, const char *name)
{
    size_t len = strlen(name);
    unsigned i;
    int idx;

    if (!rt_variant_name_valid(name, len))
        return -1;
    idx = rt_table_find_variant(t, name, len);
    if (idx >= 0)
        return idx;
    /* A removed variant's slot: its own name first (the proxy's counters of that slot are that variant's), then a
     * fresh slot, and only when the table is full the slot of another removed variant. */
    for (i = 0; i < t->nvariants && idx < 0; i++)
        if (t->gone[i] && t->namelen[i] == len && memcmp(t->names[i], name, len) == 0)
            idx = (int)i;
    if (idx < 0 && t->nvariants < RT_MAX_VARIANTS)
        idx = add_name(t, name, len);
    for (i = 0; i < t->nvariants && idx < 0; i++)
        if (t->gone[i])
            idx = (int)i;
    if (idx < 0)
        return -1;
    memcpy(t->names[idx], name, len + 1);
    t->namelen[idx] = (uint8_t)len;
    t->gone[idx] = 0;
    t->weight[idx] = 0;
    rt__split_update(t);
    return idx;
}

int rt_table_del_variant(rt_table_t *t, const char *name, const char **err)
{
    int idx = rt_table_find_variant(t, name, strlen(name));
    unsigned i;

    if (idx < 0) {
        *err = "unknown variant";
        return -1;
    }
    if ((unsigned)idx == t->stable || idx == 0) {
        *err = "stable and canary always exist";
        return -1;
    }
    if (t->weight[idx] != 0) {
        *err = "variant has a weight: set it to 0 first";
        return -1;
    }
    for (i = 0; i < t->nroutes; i++) {
        if (t->routes[i]->to == (unsigned)idx) {
            *err = "a route sends to the variant: delete it first";
            return -1;
        }
    }
    t->gone[idx] = 1;
    rt_free(t->upstreams[idx]);
    t->upstreams[idx] = NULL;
    return 0;
}

int rt_table_set_upstreams(rt_table_t *t, const char *name, const char *addrs)
{
    char *copy = rt_strdup(addrs);
    int idx;

    if (copy == NULL || (idx = rt_table_add_variant(t, name)) < 0) {
        rt_free(copy);
        return -1;
    }
    rt_free(t->upstreams[idx]);
    t->upstreams[idx] = copy;
    return idx;
}

const char *rt_table_upstreams(const rt_table_t *t, unsigned idx)
{
    return idx < t->nvariants && !t->gone[idx] ? t->upstreams[idx] : NULL;
}

int rt_table_find_variant(const rt_table_t *t, const char *name, size_t len)
{
    unsigned i;

    for (i = 0; i < t->nvariants; i++)
        if (!t->gone[i] && t->namelen[i] == len && memcmp(t->names[i], name, len) == 0)
            return (int)i;
    return -1;
}

unsigned rt_table_nvariants(const rt_table_t *t)
{
    return t->nvariants;
}

const char *rt_table_variant_name(const rt_table_t *t, unsigned idx)
{
    return idx < t->nvariants && !t->gone[idx] ? t->names[idx] : NULL;
}

const char *rt_table_removed_name(const rt_table_t *t, unsigned idx)
{
    return idx < t->nvariants && t->gone[idx] ? t->names[idx] : NULL;
}

uint32_t rt_table_weight_bp(const rt_table_t *t, unsigned idx)
{
    return idx < t->nvariants ? t->weight[idx] : 0;
}

unsigned rt_table_stable(const rt_table_t *t)
{
    return t->stable;
}

uint64_t rt_table_generation(const rt_table_t *t)
{
    return t->gen;
}

void rt_table_set_generation(rt_table_t *t, uint64_t gen)
{
    t->gen = gen;
}

int rt_table_set_weights(rt_table_t *t, const char *const *names, const uint32_t *bps, size_t n, const char **err)
{
    uint32_t w[RT_MAX_VARIANTS];
    uint32_t sum = 0;
    const char *dummy;
    size_t k;
    unsigned i;

    if (err == NULL)
        err = &dummy;
    memcpy(w, t->weight, sizeof(w));
    for (k = 0; k < n; k++) {
        int idx = rt_table_find_variant(t, names[k], strlen(names[k]));
        if (idx < 0) {
            *err = "unknown variant";
            return -1;
        }
        if ((unsigned)idx == t->stable) {
            *err = "stable gets the rest and takes no weight";
            return -1;
        }
        if (bps[k] > RT_BP_MAX) {
            *err = "weight out of range";
            return -1;
        }
        w[idx] = bps[k];
    }
    for (i = 0; i < t->nvariants; i++)
        if (i != t->stable)
            sum += w[i];
    if (sum > RT_BP_MAX) {
        *err = "weights add up to more than 100";
        return -1;
    }
    memcpy(t->weight, w, sizeof(w));
    rt__split_update(t);
    return 0;
}

int rt_table_set_sticky(rt_table_t *t, enum rt_sticky_kind kind, const char *name)
{
    char *copy = NULL;
    size_t len = 0, i;

    switch (kind) {
    case RT_STICKY_OFF:
    case RT_STICKY_IP:
        break;
    case RT_STICKY_HEADER:
    case RT_STICKY_COOKIE:
        if (name == NULL || !rt__is_token(name, len = strlen(name)))
            return -1;
        copy = rt_strdup(name);
        if (copy == NULL)
            return -1;
        if (kind == RT_STICKY_HEADER) /* header names are case-insensitive, cookie names are not */
            for (i = 0; i < len; i++)
                copy[i] = (char)rt__lower[(unsigned char)copy[i]];
        break;
    default:
        return -1;
    }
    rt_free(t->sticky_name);
    t->sticky = kind;
    t->sticky_name = copy;
    t->sticky_namelen = len;
    return 0;
}

int rt_table_set_salt(rt_table_t *t, const char *salt)
{
    char *copy;

    if (salt == NULL || (copy = rt_strdup(salt)) == NULL)
        return -1;
    rt_free(t->salt);
    t->salt = copy;
    t->seed = XXH64(salt, strlen(salt), 0);
    return 0;
}

enum rt_sticky_kind rt_table_sticky(const rt_table_t *t)
{
    return t->sticky;
}

const char *rt_table_sticky_name(const rt_table_t *t)
{
    return t->sticky_name;
}

const char *rt_table_salt(const rt_table_t *t)
{
    return t->salt;
}

/* SPEC §3: [A-Za-z0-9][A-Za-z0-9_.:~-]{0,62}. '~' and ':' let a rollout engine name the alternatives of one rule
 * (Argo's NAME~1) and namespace its routes; a leading letter or digit keeps "~other" free for the stats. */
static int route_name_valid(const char *s)
{
    size_t i;

    for (i = 0; s[i] != '\0'; i++) {
        char ch = s[i];
        int alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (i == RT_ROUTE_NAME_MAX)
            return 0;
        if (!alnum && (i == 0 || strchr("_.:~-", ch) == NULL))
            return 0;
    }
    return i > 0;
}

static int find_route(const rt_table_t *t, const char *name)
{
    unsigned i;

    for (i = 0; i < t->nroutes; i++)
        if (strcmp(t->routes[i]->name, name) == 0)
            return (int)i;
    return -1;
}

int rt_table_set_route(rt_table_t *t, const rt_route_spec_t *spec, char *err, size_t errlen)
{
    const char *to = spec->to != NULL ? spec->to : "canary";
    rt__route_t *r;
    int idx, pos;

    if (spec->name == NULL || !route_name_valid(spec->name))
        return rt__fail(err, errlen, "invalid route name '%.80s'", spec->name != NULL ? spec->name : "");
    if (spec->kind != RT_ROUTE_HEADER && spec->kind != RT_ROUTE_MIRROR)
        return rt__fail(err, errlen, "unknown route kind");
    idx = rt_table_find_variant(t, to, strlen(to));
    if (idx < 0)
        return rt__fail(err, errlen, "unknown variant '%.40s'", to);
    if (spec->kind == RT_ROUTE_MIRROR && spec->percent_bp > RT_BP_MAX)
        return rt__fail(err, errlen, "mirror percent out of range");
    pos = find_route(t, spec->name);
    if (pos < 0 && t->nroutes == RT_MAX_ROUTES)
        return rt__fail(err, errlen, "too many routes (at most %d)", RT_MAX_ROUTES);
    if (rt__route_build(spec, (unsigned)idx, &r, err, errlen) < 0)
        return -1;
    if (pos >= 0) {
        rt__route_release(t->routes[pos]);
        t->routes[pos] = r;
    } else {
        t->routes[t->nroutes++] = r;
    }
    return 0;
}

int rt_table_del_route(rt_table_t *t, const char *name)
{
    int pos = find_route(t, name);

    if (pos < 0)
        return -1;
    rt__route_release(t->routes[pos]);
    memmove(&t->routes[pos], &t->routes[pos + 1], (t->nroutes - (unsigned)pos - 1) * sizeof(t->routes[0]));
    t->nroutes--;
    return 0;
}

void rt_table_del_routes(rt_table_t *t)
{
    unsigned i;

    for (i = 0; i < t->nroutes; i++)
        rt__route_release(t->routes[i]);
    t->nroutes = 0;
}

unsigned rt_table_nroutes(const rt_table_t *t)
{
    return t->nroutes;
}

const char *rt_table_route_name(const rt_table_t *t, unsigned idx)
{
    return idx < t->nroutes ? t->routes[idx]->name : NULL;
}

/* An snprintf-like writer: counts every byte, stores those that fit and keeps <buf> NUL-terminated. */
typedef struct out_s {
    char *buf;
    size_t size;
    size_t len;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->len < o->size) {
        size_t room = o->size - 1 - o->len;
        memcpy(o->buf + o->len, s, n < room ? n : room);
        o->buf[o->len + (n < room ? n : room)] = '\0';
    }
    o->len += n;
}

static void put_str(out_t *o, const char *s)
{
    put(o, s, strlen(s));
}

/* Writes " TOKEN", in double quotes with \" and \\ escapes when the control tokenizer would otherwise split it or
 * read it differently. */
static void put_token(out_t *o, const char *s, size_t n)
{
    size_t i, start;
    int quote = n == 0;

    for (i = 0; i < n && !quote; i++)
        quote = (unsigned char)s[i] <= ' ' || s[i] == '"' || s[i] == '\\' || s[i] == 0x7f;
    put(o, " ", 1);
    if (!quote) {
        put(o, s, n);
        return;
    }
    put(o, "\"", 1);
    for (i = start = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            put(o, s + start, i - start);
            put(o, "\\", 1);
            start = i;
        }
    }
    put(o, s + start, n - start);
    put(o, "\"", 1);
}

static const char *const op_names[] = {"exact", "prefix", "regex"};

size_t rt_table_format_route(const rt_table_t *t, unsigned idx, char *buf, size_t size)
{
    out_t o = {buf, size, 0};
    const rt__route_t *r;
    char pct[8];
    unsigned i;

    if (size > 0)
        buf[0] = '\0';
    if (idx >= t->nroutes)
        return 0;
    r = t->routes[idx];
    put_str(&o, r->kind == RT_ROUTE_HEADER ? "set header-route " : "set mirror-route ");
    put_str(&o, r->name);
    if (r->kind == RT_ROUTE_MIRROR) {
        put(&o, " ", 1);
        put(&o, pct, rt_format_bp(r->percent_bp, pct));
    }
    put_str(&o, " to ");
    put_str(&o, t->names[r->to]);
    for (i = 0; i < r->nconds; i++) {
        const rt__cond_t *c = &r->conds[i];
        switch (c->kind) {
        case RT_COND_METHOD:
            put_str(&o, " method");
            break;
        case RT_COND_PATH:
            put_str(&o, " path ");
            put_str(&o, op_names[c->op]);
            break;
        default:
            put_str(&o, " header");
            if (c->cookie) {
                put_str(&o, " cookie:");
                put(&o, c->name, c->namelen);
            } else {
                put_token(&o, c->name, c->namelen);
            }
            put(&o, " ", 1);
            put_str(&o, op_names[c->op]);
            break;
        }
        put_token(&o, c->value, c->valuelen);
    }
    return o.len;
}

int rt_table_equal(const rt_table_t *a, const rt_table_t *b)
{
    unsigned i;

    if (a->nvariants != b->nvariants || a->stable != b->stable || a->sticky != b->sticky || a->nroutes != b->nroutes)
        return 0;
    for (i = 0; i < a->nvariants; i++) {
        const char *ua = a->upstreams[i], *ub = b->upstreams[i];
        if (strcmp(a->names[i], b->names[i]) != 0 || a->weight[i] != b->weight[i] || a->gone[i] != b->gone[i] ||
            (ua == NULL) != (ub == NULL) || (ua != NULL && strcmp(ua, ub) != 0))
            return 0;
    }
    if ((a->sticky == RT_STICKY_HEADER || a->sticky == RT_STICKY_COOKIE) && strcmp(a->sticky_name, b->sticky_name) != 0)
        return 0;
    if (strcmp(a->salt, b->salt) != 0)
        return 0;
    for (i = 0; i < a->nroutes; i++)
        if (a->routes[i] != b->routes[i] && !rt__route_same(a->routes[i], b->routes[i]))
            return 0;
    return 1;
}
