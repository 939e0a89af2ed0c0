/* The variants' endpoints and their DNS re-resolution (include/px/resolve.h). Main thread only, except the lookup
 * threads: workers read the results through px_server.variants[].eps and px_server.eps[]. */
#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px/log.h"
#include "px/resolve.h"
#include "px/server.h"

/* One address as given ("HOST:PORT") and the endpoint slots it resolved to. */
typedef struct spec_s {
    char text[PX_HOST_MAX + 16];
    px_hostport_t hp;
    unsigned id; /* matches a lookup's answer to the spec it was asked for (the spec may be gone by then) */
    unsigned numeric : 1, resolved : 1, resolving : 1, warned : 1;
    unsigned nslots;
    unsigned slots[PX_VARIANT_EPS_MAX];
} spec_t;

/* A variant's addresses as applied: <source> is the list they came from, to notice a change. */
typedef struct vstate_s {
    char *source;
    spec_t **specs;
    unsigned nspecs;
} vstate_t;

/* One lookup, owned by its thread until handed to the main loop through <done>. */
typedef struct lookup_s {
    struct lookup_s *next;
    unsigned variant;
    unsigned id;
    char host[PX_HOST_MAX + 1];
    char port[8];
    int status; /* getaddrinfo()'s */
    struct addrinfo *res;
} lookup_t;

/* Lookups run on threads of their own, detached, not on libuv's pool: a resolver that never answers holds only its
 * own thread, and stopping neither waits for it (a pending uv_getaddrinfo keeps the loop alive, and libuv joins its
 * pool at exit) nor lets it touch what is freed: under <lk>, a finished lookup is queued for the main loop while
 * <closing> is 0, and frees itself once it is 1. */
static pthread_mutex_t lk = PTHREAD_MUTEX_INITIALIZER;
static lookup_t *done;
static int closing;
static uv_async_t done_async;

/* Interned strings and addresses: what a worker may have loaded from a slot stays valid while weir runs. They grow
 * with the distinct names and addresses ever used, not with changes. */
typedef struct interned_s {
    struct interned_s *next;
    px_epaddr_t addr;
    char s[];
} interned_t;
static interned_t *interned;

static vstate_t vs[RT_MAX_VARIANTS];
static unsigned next_id = 1;
static uv_loop_t *loop;
static uv_timer_t timer;
static int running, stopped, timer_on;
/* Slots given up, oldest first: reused only once no fresh slot is left, and then the longest-free one. */
static unsigned freeq[PX_MAX_ENDPOINTS], fq_head, fq_len;

static int slot_get(void)
{
    unsigned n = atomic_load(&px_server.neps), s;

    if (n < PX_MAX_ENDPOINTS) {
        atomic_store(&px_server.neps, n + 1);
        return (int)n;
    }
    if (fq_len == 0)
        return -1;
    s = freeq[fq_head];
    fq_head = (fq_head + 1) % PX_MAX_ENDPOINTS;
    fq_len--;
    return (int)s;
}

static void slot_put(unsigned s)
{
    freeq[(fq_head + fq_len) % PX_MAX_ENDPOINTS] = s;
    fq_len++;
}

static int same_addr(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return 0;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return 0;
}

static const char *intern(const char *s)
{
    interned_t *i;

    for (i = interned; i != NULL; i = i->next)
        if (i->addr.sa.ss_family == AF_UNSPEC && strcmp(i->s, s) == 0)
            return i->s;
    if ((i = calloc(1, sizeof(*i) + strlen(s) + 1)) == NULL)
        return NULL;
    strcpy(i->s, s);
    i->next = interned;
    interned = i;
    return i->s;
}

static const px_epaddr_t *intern_addr(const struct sockaddr *sa, socklen_t len)
{
    interned_t *i;
    char ip[INET6_ADDRSTRLEN] = "?";

    for (i = interned; i != NULL; i = i->next)
        if (i->addr.sa.ss_family != AF_UNSPEC && same_addr((const struct sockaddr *)&i->addr.sa, sa))
            return &i->addr;
    if ((i = calloc(1, sizeof(*i) + 1)) == NULL)
        return NULL;
    memcpy(&i->addr.sa, sa, len);
    if (sa->sa_family == AF_INET6) {
        uv_ip6_name((const struct sockaddr_in6 *)sa, ip, sizeof(ip));
        snprintf(i->addr.text, sizeof(i->addr.text), "[%s]:%u", ip,
                 ntohs(((const struct sockaddr_in6 *)sa)->sin6_port));
    } else {
        uv_ip4_name((const struct sockaddr_in *)sa, ip, sizeof(ip));
        snprintf(i->addr.text, sizeof(i->addr.text), "%s:%u", ip, ntohs(((const struct sockaddr_in *)sa)->sin_port));
    }
    i->next = interned;
    interned = i;
    return &i->addr;
}

/* Points slot <s> at <sa>: each field is one atomic store of interned data, the address last (release). Returns 0,
 * or -1 when out of memory (the slot then unchanged). */
static int slot_set(unsigned s, unsigned variant, const char *name, const struct sockaddr *sa, socklen_t len)
{
    px_endpoint_t *ep = &px_server.eps[s];
    const char *n = intern(name);
    const px_epaddr_t *a = intern_addr(sa, len);

    if (n == NULL || a == NULL)
        return -1;
    atomic_store_explicit(&ep->variant, variant, memory_order_relaxed);
    atomic_store_explicit(&ep->name, n, memory_order_release);
    atomic_store(&ep->down_until, 0);
    atomic_store_explicit(&ep->addr, a, memory_order_release);
    atomic_fetch_add_explicit(&ep->cur, 1, memory_order_release);
    return 0;
}

/* Rewrites variant <v>'s endpoint list from its specs, in order. */
static void publish_variant(unsigned v)
{
    px_variant_t *pv = &px_server.variants[v];
    unsigned i, k, n = 0;

    for (i = 0; i < vs[v].nspecs; i++)
        for (k = 0; k < vs[v].specs[i]->nslots && n < PX_VARIANT_EPS_MAX; k++)
            atomic_store(&pv->eps[n++], vs[v].specs[i]->slots[k]);
    atomic_store(&pv->neps, n);
}

/* Gives <sp> the addresses of <res>: slots of addresses still there are kept (with their pools and backoff),
 * the others given up, new addresses get slots. */
static void spec_update(unsigned v, spec_t *sp, const struct addrinfo *res)
{
    unsigned keep[PX_VARIANT_EPS_MAX], nkeep = 0, i, total = 0;
    const struct addrinfo *ai;
    int changed = 0;

    for (i = 0; i < sp->nslots; i++) {
        const struct sockaddr *have = px_endpoint_addr(&px_server.eps[sp->slots[i]]);
        for (ai = res; ai != NULL && !same_addr(have, ai->ai_addr); ai = ai->ai_next)
            ;
        if (ai != NULL) {
            keep[nkeep++] = sp->slots[i];
        } else {
            slot_put(sp->slots[i]);
            changed = 1;
        }
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        const struct addrinfo *dup;
        int s;
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        total++;
        for (i = 0; i < nkeep && !same_addr(px_endpoint_addr(&px_server.eps[keep[i]]), ai->ai_addr); i++)
            ;
        for (dup = res; dup != ai && !same_addr(dup->ai_addr, ai->ai_addr); dup = dup->ai_next)
            ;
        if (i < nkeep || dup != ai)
            continue; /* kept, or listed twice by the resolver */
        if (nkeep == PX_VARIANT_EPS_MAX || (s = slot_get()) < 0) {
            px_log(PX_LOG_ERROR, "resolve", "%s: no room for more endpoints (at most %d per variant, %d in all)",
                   sp->text, PX_VARIANT_EPS_MAX, PX_MAX_ENDPOINTS);
            break;
        }
        if (slot_set((unsigned)s, v, sp->text, ai->ai_addr, ai->ai_addrlen) != 0) {
            slot_put((unsigned)s);
            px_log(PX_LOG_ERROR, "resolve", "%s: out of memory", sp->text);
            break;
        }
        keep[nkeep++] = (unsigned)s;
        changed = 1;
    }
    memcpy(sp->slots, keep, nkeep * sizeof(keep[0]));
    sp->nslots = nkeep;
    if (!sp->resolved || changed)
        px_log(sp->numeric ? PX_LOG_DEBUG : PX_LOG_INFO, "resolve", "%s %s: %u address%s", px_server.variants[v].name,
               sp->text, total, total == 1 ? "" : "es");
    sp->resolved = 1;
    sp->warned = 0;
}

static void on_resolved(lookup_t *l)
{
    spec_t *sp = NULL;
    unsigned i;

    for (i = 0; i < vs[l->variant].nspecs && sp == NULL; i++)
        if (vs[l->variant].specs[i]->id == l->id)
            sp = vs[l->variant].specs[i];
    if (sp != NULL && !stopped) {
        sp->resolving = 0;
        if (l->status == 0 && l->res != NULL) {
            spec_update(l->variant, sp, l->res);
            publish_variant(l->variant);
        } else if (!sp->warned) {
            sp->warned = 1; /* once per failing spell, not every interval */
            px_log(PX_LOG_WARN, "resolve", "%s %s: %s (%s)", px_server.variants[l->variant].name, sp->text,
                   l->status == EAI_SYSTEM ? "system error" : gai_strerror(l->status),
                   sp->resolved ? "keeping the last good addresses" : "the variant has no endpoint from it yet");
        }
    }
    if (l->res != NULL)
        freeaddrinfo(l->res);
    free(l);
}

static void on_done(uv_async_t *a)
{
    lookup_t *l, *next;

    (void)a;
    pthread_mutex_lock(&lk);
    l = done;
    done = NULL;
    pthread_mutex_unlock(&lk);
    for (; l != NULL; l = next) {
        next = l->next;
        on_resolved(l);
    }
}

static void *lookup_thread(void *arg)
{
    lookup_t *l = arg;
    struct addrinfo hints;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    l->status = getaddrinfo(l->host, l->port, &hints, &l->res);
    pthread_mutex_lock(&lk);
    if (!closing) {
        l->next = done;
        done = l;
        uv_async_send(&done_async); /* under <lk>: the handle is open until <closing> is set */
        l = NULL;
    }
    pthread_mutex_unlock(&lk);
    if (l != NULL) {
        if (l->res != NULL)
            freeaddrinfo(l->res);
        free(l);
    }
    return NULL;
}

static void lookup(unsigned v, spec_t *sp)
{
    pthread_attr_t attr;
    pthread_t th;
    lookup_t *l;
    int rc;

    if (loop == NULL || stopped || sp->numeric || sp->resolving || (l = calloc(1, sizeof(*l))) == NULL)
        return;
    l->variant = v;
    l->id = sp->id;
    snprintf(l->host, sizeof(l->host), "%s", sp->hp.host);
    snprintf(l->port, sizeof(l->port), "%u", sp->hp.port);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&th, &attr, lookup_thread, l);
    pthread_attr_destroy(&attr);
    if (rc != 0) { /* tried again at the next interval */
        px_log(PX_LOG_WARN, "resolve", "%s: cannot start a lookup: %s", sp->text, strerror(rc));
        free(l);
        return;
    }
    sp->resolving = 1;
}

/* Address literals are endpoints at once (no DNS involved); names are looked up in the background. */
static void resolve_now(unsigned v, spec_t *sp)
{
    struct addrinfo hints, *res = NULL;
    char port[8];

    if (!sp->numeric) {
        lookup(v, sp);
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    snprintf(port, sizeof(port), "%u", sp->hp.port);
    if (getaddrinfo(sp->hp.host, port, &hints, &res) != 0)
        return; /* the router checked it: cannot happen */
    spec_update(v, sp, res);
    freeaddrinfo(res);
}

static void spec_free(spec_t *sp)
{
    unsigned i;

    for (i = 0; i < sp->nslots; i++)
        slot_put(sp->slots[i]);
    free(sp);
}

static spec_t *spec_new(const char *text, size_t len)
{
    spec_t *sp = calloc(1, sizeof(*sp));
    struct in6_addr a6;

    if (sp == NULL)
        return NULL;
    snprintf(sp->text, sizeof(sp->text), "%.*s", (int)len, text);
    if (px_parse_hostport(sp->text, &sp->hp) != 0) { /* the router checked it; a bad line here is a bug */
        free(sp);
        return NULL;
    }
    sp->numeric = inet_pton(AF_INET, sp->hp.host, &a6) == 1 || inet_pton(AF_INET6, sp->hp.host, &a6) == 1;
    sp->id = next_id++;
    return sp;
}

/* Gives variant <v> the addresses of <source> ("HOST:PORT HOST:PORT...", "" for none); specs already there are
 * kept as they are, with their endpoints. */
static void apply_variant(unsigned v, const char *source)
{
    vstate_t *st = &vs[v];
    spec_t **specs;
    unsigned n = 0, i;
    const char *p = source;

    if (st->source != NULL && strcmp(st->source, source) == 0)
        return;
    specs = calloc(strlen(source) / 2 + 1, sizeof(*specs)); /* "a:1" is the shortest address plus a space */
    if (specs == NULL)
        goto oom;
    while (*p != '\0') {
        size_t len = strcspn(p, " ");
        spec_t *sp = NULL;
        for (i = 0; i < st->nspecs && sp == NULL; i++) {
            if (st->specs[i] != NULL && strlen(st->specs[i]->text) == len && memcmp(st->specs[i]->text, p, len) == 0) {
                sp = st->specs[i];
                st->specs[i] = NULL;
            }
        }
        if (len > 0 && sp == NULL && (sp = spec_new(p, len)) != NULL)
            resolve_now(v, sp);
        if (sp != NULL)
            specs[n++] = sp;
        p += len;
        p += *p == ' ';
    }
    for (i = 0; i < st->nspecs; i++)
        if (st->specs[i] != NULL)
            spec_free(st->specs[i]);
    free(st->specs);
    free(st->source);
    st->specs = specs;
    st->nspecs = n;
    st->source = strdup(source);
    publish_variant(v);
    return;
oom:
    px_log(PX_LOG_ERROR, "resolve", "out of memory: the endpoints of %s are not changed", px_server.variants[v].name);
}

/* The configured addresses of variant <name>, as one line (caller frees), or NULL when out of memory. */
static char *configured(const char *name)
{
    const px_config_t *cfg = px_server.cfg;
    rt_buf_t b = RT_BUF_INIT;
    size_t i;
    int rc = rt_buf_reserve(&b, 1); /* "" for none, not NULL */

    for (i = 0; i < cfg->nupstreams && rc == 0; i++) {
        char hp[PX_HOST_MAX + 16];
        if (strcmp(cfg->upstreams[i].variant, name) != 0)
            continue;
        px_format_hostport(&cfg->upstreams[i].addr, hp, sizeof(hp));
        rc = rt_buf_printf(&b, "%s%s", b.len > 0 ? " " : "", hp);
    }
    if (rc != 0) {
        rt_buf_dispose(&b);
        return NULL;
    }
    b.p[b.len] = '\0';
    return b.p;
}

static void apply(const rt_table_t *t)
{
    unsigned v, n = rt_table_nvariants(t);

    for (v = 0; v < n; v++) {
        const char *name = rt_table_variant_name(t, v), *set = rt_table_upstreams(t, v);
        const char *have = atomic_load_explicit(&px_server.variants[v].name, memory_order_relaxed), *in;
        const char *want = name != NULL ? name : rt_table_removed_name(t, v) != NULL ? rt_table_removed_name(t, v) : "";
        char *cfg = NULL;
        /* a removed variant keeps its last name (stats still show it); one never named gets one all the same */
        if ((name != NULL || have == NULL) && (have == NULL || strcmp(have, want) != 0) && (in = intern(want)) != NULL)
            atomic_store_explicit(&px_server.variants[v].name, in, memory_order_release);
        if (name != NULL && set == NULL && (cfg = configured(name)) == NULL) {
            px_log(PX_LOG_ERROR, "resolve", "out of memory: the endpoints of %s are not changed", name);
            continue;
        }
        apply_variant(v, name == NULL ? "" : set != NULL ? set : cfg);
        free(cfg);
    }
    if (n > px_server.nvariants)
        px_server.nvariants = n;
}

int px_resolve_init(const rt_table_t *t)
{
    px_server.eps = calloc(PX_MAX_ENDPOINTS, sizeof(*px_server.eps));
    if (px_server.eps == NULL)
        return -1;
    apply(t);
    return 0;
}

void px_resolve_apply(const rt_table_t *t)
{
    apply(t);
}

static int show_variant(unsigned v, uint64_t now, rt_buf_t *out)
{
    const char *name = px_server.variants[v].name;
    unsigned i, k;
    int rc = 0;

    for (i = 0; i < vs[v].nspecs && rc == 0; i++) {
        const spec_t *sp = vs[v].specs[i];
        if (!sp->resolved)
            rc = rt_buf_printf(out, "%s %s unresolved\n", name, sp->text);
        for (k = 0; k < sp->nslots && rc == 0; k++) {
            px_endpoint_t *ep = &px_server.eps[sp->slots[k]];
            const char *state = atomic_load(&ep->down_until) > now ? "backoff" : "up";
            rc = rt_buf_printf(out, "%s %s %s\n", name, px_endpoint_text(ep), state);
        }
    }
    return rc;
}

int px_resolve_show(const rt_table_t *t, rt_buf_t *out)
{
    unsigned v, n = rt_table_nvariants(t), stable = rt_table_stable(t);
    uint64_t now = uv_hrtime() / 1000000;
    size_t mark = out->len;
    int rc = rt_buf_puts(out, "ok\n");

    /* get weight's order: canary, the others as declared, stable last */
    for (v = 0; v <= n && rc == 0; v++) {
        unsigned idx = v < n ? v : stable;
        if ((v < n && v == stable) || rt_table_variant_name(t, idx) == NULL || idx >= px_server.nvariants)
            continue;
        rc = show_variant(idx, now, out);
    }
    if (rc == 0)
        rc = rt_buf_putc(out, '\n');
    if (rc != 0)
        rt_buf_truncate(out, mark);
    return rc;
}

/* Looks up every name again, or (<all> 0) only those that never resolved. */
static void lookup_all(int all)
{
    unsigned v, i;

    for (v = 0; v < px_server.nvariants; v++)
        for (i = 0; i < vs[v].nspecs; i++)
            if (all || !vs[v].specs[i]->resolved)
                lookup(v, vs[v].specs[i]);
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
    lookup_all(1);
}

void px_resolve_start(uv_loop_t *l, uint64_t interval_ms)
{
    int rc;

    loop = l;
    /* both fail only when out of descriptors or memory: names then stay unresolved, weir serves the rest */
    if ((rc = uv_async_init(loop, &done_async, on_done)) != 0) {
        px_log(PX_LOG_ERROR, "resolve", "host names will not be resolved: %s", uv_strerror(rc));
        loop = NULL;
        return;
    }
    if ((rc = uv_timer_init(loop, &timer)) != 0)
        px_log(PX_LOG_ERROR, "resolve", "host names will not be re-resolved: %s", uv_strerror(rc));
    else
        uv_timer_start(&timer, on_tick, interval_ms, interval_ms);
    timer_on = rc == 0;
    running = 1;
    lookup_all(0); /* every configured name: in the background, the loop serves meanwhile */
}

void px_resolve_stop(void)
{
    stopped = 1;
    if (!running)
        return;
    running = 0;
    /* Lookups still running are abandoned: their threads free what they hold when they end, if ever. */
    pthread_mutex_lock(&lk);
    closing = 1;
    pthread_mutex_unlock(&lk);
    if (timer_on)
        uv_close((uv_handle_t *)&timer, NULL);
    uv_close((uv_handle_t *)&done_async, NULL);
}

void px_resolve_dispose(void)
{
    unsigned v, i;

    for (v = 0; v < RT_MAX_VARIANTS; v++) {
        for (i = 0; i < vs[v].nspecs; i++)
            free(vs[v].specs[i]);
        free(vs[v].specs);
        free(vs[v].source);
        memset(&vs[v], 0, sizeof(vs[v]));
    }
    pthread_mutex_lock(&lk);
    closing = 1;
    while (done != NULL) {
        lookup_t *l = done;
        done = l->next;
        if (l->res != NULL)
            freeaddrinfo(l->res);
        free(l);
    }
    pthread_mutex_unlock(&lk);
    free(px_server.eps);
    px_server.eps = NULL;
    while (interned != NULL) { /* the workers are joined: nobody reads them any more */
        interned_t *i = interned;
        interned = i->next;
        free(i);
    }
    for (v = 0; v < RT_MAX_VARIANTS; v++)
        atomic_store(&px_server.variants[v].name, NULL);
}
