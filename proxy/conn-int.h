/* Internal to the client-connection module (proxy/conn.c: accept, request side, cycle; proxy/conn_res.c: the
 * response side). The types of a connection and its request cycle, and the functions the two files share. */
#ifndef PX_CONN_INT_H
#define PX_CONN_INT_H
#include <llhttp.h>
#include <netinet/in.h>
#include <uv.h>

#include "px/conn.h"
#include "px/h1.h"
#include "px/mirror.h"
#include "px/stats.h"
#include "px/upstream.h"

enum req_state {
    REQ_HEAD = 0, /* reading the header block */
    REQ_BODY,     /* relaying the body */
    REQ_DONE,     /* the whole request was read */
};

enum res_state {
    RES_NONE = 0, /* no request in flight */
    RES_WAIT,     /* waiting for an upstream connection or the first response byte */
    RES_HEAD,     /* reading the upstream's header block */
    RES_BODY,     /* relaying the body (or sending a response of our own) */
    RES_DONE,     /* the whole response was read; its last write may be in flight */
};

enum timer_phase {
    PH_NONE = 0, /* nothing to time (the timer may still be running: it is re-armed lazily) */
    PH_IDLE,     /* keep-alive: idle-timeout */
    PH_HEADER,   /* request header block: header-timeout */
    PH_CONNECT,  /* upstream connect: connect-timeout */
    PH_UPSTREAM, /* waiting for upstream bytes: upstream-timeout */
    PH_LINGER,   /* after the last response on a closing connection */
};

enum px_end {
    PX_END_NONE = 0,    /* still open, or closed after a normal cycle */
    PX_END_CLI_TIMEOUT, /* idle, header or linger timeout */
    PX_END_CLI_CLOSED,  /* the client closed or reset */
    PX_END_SRV_TIMEOUT, /* the upstream went silent after the response started */
    PX_END_SRV_CLOSED,  /* the upstream closed or broke framing after the response started */
    PX_END_PROTOCOL,    /* the client broke HTTP framing */
    PX_END_RESOURCE,    /* out of memory or buffers */
    PX_END_DRAIN,       /* closed by drain */
};

#define LINGER_MS 2000 /* how long a closing connection reads and discards after its last response */

/* What a connection needs only while a request is in flight: the timer, the write and shutdown requests, the
 * parser and the cycle's state. Pooled per worker and attached when a request's first byte arrives, so an idle
 * keep-alive connection is its socket and a few words (STYLE §2.9; the benchmark's target is under 0.5 KB). The
 * timer stays initialised in the pool: attaching costs no handle setup. */
typedef struct px_cycle_s px_cycle_t;
struct px_cycle_s {
    uv_timer_t timer; /* timer.data == the connection, NULL while pooled; unreferenced (conns keep the loop) */
    uv_write_t wreq;
    uv_shutdown_t sreq;
    px_cycle_t *next_free;
    llhttp_t parser;
    size_t rpos;     /* bytes of conn->rbuf the parser consumed */
    size_t msg;      /* start of the current request */
    size_t fwd;      /* request bytes before this offset were relayed (or are in flight) upstream */
    size_t up_end;   /* end of the request bytes in the upstream write in flight */
    px_buf_t *upbuf; /* request header block for the upstream; kept until the response starts (retry) */
    px_buf_t *obuf;  /* response header block, or a response of our own */
    px_upconn_t *up;
    px_mirror_t *mirror; /* the copy of the request in flight, if any (fed with the body, told the status) */
    size_t res_end;      /* end of the response bytes in the client write in flight */
    size_t dechunk_end;  /* dechunked body bytes are compacted up to here in up->rbuf */
    uint64_t tried;      /* endpoints of the variant already tried (bit = position) */
    uint64_t bytes_out;  /* response body bytes written to the client (access log) */
    int last_ep;         /* endpoint of the last connection attempt, -1 before any */
    unsigned variant;
    int route;              /* index of the matched route in the table of the decision, -1 for none */
    unsigned route_slot;    /* its counter slot (px_stats_route_slot), valid when route >= 0 */
    int status;             /* status sent to the client */
    uint64_t start_ns;      /* uv_hrtime() at the request's first byte */
    uint64_t deadline;      /* loop time (ms) at which <phase> expires */
    enum px_err_reason err; /* why weir answered itself or gave up, when it did; PX_ERR_COUNT otherwise */
    enum req_state req;
    enum res_state res;
    enum timer_phase phase;
    unsigned writing : 1, keep_alive : 1, close_after : 1, lingering : 1, http10 : 1, head : 1, dechunk : 1,
        upbuf_sent : 1, obuf_sent : 1, req_body : 1, routed : 1, res_started : 1,
        by_route : 1,         /* a header route chose the variant (counted with its route label) */
        upgrade : 1,          /* the request asked to switch protocols */
        tunnel : 1,           /* the upstream agreed (101): bytes flow both ways unparsed */
        tunnel_eof : 1,       /* the upstream closed its side of the tunnel */
        up_eof : 1;           /* the upstream closed or reset: judged once every byte read before was parsed */
    int up_eof_status;        /* UV_EOF, or the error that ended the upstream connection */
    char ip[PX_H1_ADDR_TEXT]; /* the client's address as text (X-Forwarded-For, sticky ip) */
    char cookie[17];          /* sticky-set-cookie: the id given to a client that had none, "" otherwise */
};

struct px_conn_s {
    uv_tcp_t tcp; /* tcp.data == this */
    px_worker_t *w;
    px_conn_t *next, *prev;   /* the worker's list of open connections; <next> links the freelist */
    px_conn_t *inext, *iprev; /* the worker's fresh or idle list while <x> is NULL */
    px_cycle_t *x;            /* the request cycle; NULL while idle */
    px_buf_t *rbuf;           /* bytes from the client; NULL while idle */
    uint64_t deadline;        /* loop time (ms) at which an idle or fresh connection is closed */
    struct sockaddr_in6 peer; /* the client's address (sockaddr_in when AF_INET) */
    enum px_end end;
    uint8_t ilist; /* IL_NONE, IL_FRESH or IL_IDLE */
    unsigned closing : 1, reading : 1;
};

enum {
    IL_NONE = 0, /* on no list: a request is in flight */
    IL_FRESH,    /* accepted, no byte yet: closed after header-timeout */
    IL_IDLE,     /* keep-alive between requests: closed after idle-timeout */
};

/* Header spans of the block being rewritten: filled and used within one parser pause, so one array per thread. */
extern __thread rt_header_t px__conn_hdrs[PX_H1_MAX_HEADERS];

/* The phase timeout. Arming only moves a deadline unless it comes before the timer's due time, and disarming
 * only clears the phase: a request changes phase three or four times, and each uv_timer_start/stop is a heap
 * operation. The timer, when it fires early, re-arms itself for the deadline (on_timer in conn.c). */
void px__conn_arm(px_conn_t *c, enum timer_phase phase, uint64_t ms);
void px__conn_disarm(px_conn_t *c);
/* Idempotent close; the memory is recycled in the socket's close callback. */
void px__conn_close(px_conn_t *c, enum px_end end);
/* FIN, then read and discard until the client closes or LINGER_MS passes. */
void px__conn_linger(px_conn_t *c);
/* Writes to the client (synchronously when the socket takes it all); completion runs the client write callback. */
void px__conn_cli_write(px_conn_t *c, const uv_buf_t *bufs, unsigned n);
/* A response made by weir itself; once a response head went out (or a client write is in flight), a close. */
void px__conn_local_reply(px_conn_t *c, int status, const char *body);
/* A request on a reused keep-alive connection that the upstream closed unanswered may go out again. */
int px__conn_retryable(const px_conn_t *c);
void px__conn_retry_fresh(px_conn_t *c);
/* Parses and relays what the client sent, as far as the state allows. */
void px__conn_cli_process(px_conn_t *c);
/* Parses and relays what the upstream sent, one client write at a time (conn_res.c). */
void px__conn_res_process(px_conn_t *c);
/* Starts or stops reading an in-use upstream connection (conn_res.c). */
void px__conn_up_update_read_state(px_conn_t *c);
/* The response and the request both ended: pool or close the upstream connection, keep-alive or close. */
void px__conn_finish_cycle(px_conn_t *c);

#endif
