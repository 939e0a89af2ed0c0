/* Periodic DNS re-resolution of upstream host names (include/px/resolve.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px/log.h"
#include "px/resolve.h"
#include "px/server.h"

typedef struct lookup_s {
    uv_getaddrinfo_t req;
    unsigned ep;
} lookup_t;

static uv_timer_t timer;
static int running;

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    lookup_t *l = req->data;
    px_endpoint_t *ep = &px_server.eps[l->ep];

    ep->resolving = 0;
    if (status != 0 || res == NULL) {
        if (status != UV_ECANCELED)
            px_log(PX_LOG_WARN, "resolve", "%s: %s (keeping the last good address)", ep->name, uv_strerror(status));
    } else {
        unsigned cur = atomic_load(&ep->cur) & 1;
        struct sockaddr_storage *next = &ep->addr[cur ^ 1];
        if (memcmp(res->ai_addr, &ep->addr[cur], res->ai_addrlen) != 0) {
            memset(next, 0, sizeof(*next));
            memcpy(next, res->ai_addr, res->ai_addrlen);
            atomic_store_explicit(&ep->cur, atomic_load(&ep->cur) + 1, memory_order_release);
            px_log(PX_LOG_INFO, "resolve", "%s: address changed", ep->name);
        }
    }
    uv_freeaddrinfo(res);
    free(l);
}

static void on_tick(uv_timer_t *t)
{
    struct addrinfo hints;
    char port[8];
    unsigned i;
    (void)t;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    for (i = 0; i < px_server.neps; i++) {
        px_endpoint_t *ep = &px_server.eps[i];
        lookup_t *l;
        if (ep->numeric || ep->resolving || (l = malloc(sizeof(*l))) == NULL)
            continue;
        l->ep = i;
        l->req.data = l;
        snprintf(port, sizeof(port), "%u", ep->port);
        if (uv_getaddrinfo(t->loop, &l->req, on_resolved, ep->host, port, &hints) != 0) {
            free(l);
            continue;
        }
        ep->resolving = 1;
    }
}

void px_resolve_start(uv_loop_t *loop, uint64_t interval_ms)
{
    unsigned i;
    int any = 0;

    for (i = 0; i < px_server.neps; i++)
        any |= !px_server.eps[i].numeric;
    if (!any)
        return; /* nothing to re-resolve: no timer keeps the loop busy */
    uv_timer_init(loop, &timer);
    uv_timer_start(&timer, on_tick, interval_ms, interval_ms);
    running = 1;
}

void px_resolve_stop(void)
{
    if (!running)
        return;
    running = 0;
    uv_close((uv_handle_t *)&timer, NULL);
}
