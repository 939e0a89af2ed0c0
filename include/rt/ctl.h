/* The control protocol (SPEC §4) on the decision-plane side: framing, tokenizer, and the requests that read or
 * change a route table. No I/O here: the proxy reads lines from its sockets, hands each to rt_ctl_exec(), publishes
 * the table it gets back and writes the reply. Requests whose data the router does not have (stats, status, auth)
 * are only recognized and validated; the proxy writes their reply.
 *
 * Typical use on the control thread, for the bytes <in> (an rt_buf_t) received on one connection:
 *
 *     for (;;) {
 *         if (discarding) {                       // the rest of an over-long line
 *             n = rt_ctl_skip_line(in.p, in.len, &found);
 *             rt_buf_consume(&in, n);
 *             if (!found) break;                  // wait for more input
 *             discarding = 0;
 *         }
 *         n = rt_ctl_next_line(in.p, in.len, &linelen);
 *         if (n == 0) break;                      // wait for more input
 *         if (n < 0) { rt_buf_puts(&out, RT_CTL_REPLY_TOO_LONG); discarding = 1; continue; }
 *         op = rt_ctl_exec(cur, in.p, linelen, &next, &out);
 *         ... fill the reply of the proxy's ops; on next != NULL: write rt_ctl_dump_state(next) to the state
 *         ... file, publish next, free cur once no worker uses it
 *         rt_buf_consume(&in, (size_t)n);
 *     }
 */
#ifndef RT_CTL_H
#define RT_CTL_H
#include <stddef.h>

#include "rt/buf.h"
#include "rt/table.h"

#define RT_CTL_LINE_MAX 8192 /* bytes of one request line, its "\n" or "\r\n" not counted */
/* Tokens in one request line: the longest route weir can hold and writes back into its state file,
 * `set mirror-route NAME PERCENT to VARIANT` and RT_MAX_CONDS four-token conditions, must fit. */
#define RT_CTL_MAX_TOKENS 70
_Static_assert(RT_CTL_MAX_TOKENS >= 6 + 4 * RT_MAX_CONDS, "a full route must fit in one control line");
#define RT_CTL_REPLY_TOO_LONG "error: line too long\n\n"

/* What a request line was. Reads and changes get their whole reply from rt_ctl_exec(); the ops from
 * RT_CTL_SHOW_STATS on leave the reply to the proxy. */
enum rt_ctl_op {
    RT_CTL_ERROR = -1,       /* refused (syntax, value, unknown name...): <reply> got "error: MESSAGE\n\n" */
    RT_CTL_GET_WEIGHT = 0,   /* `get weight`: reply written */
    RT_CTL_SHOW_ROUTES,      /* `show routes`: reply written */
    RT_CTL_SET_WEIGHT,       /* `set weight ...`: change, reply "ok" written */
    RT_CTL_SET_HEADER_ROUTE, /* `set header-route ...`: change */
    RT_CTL_SET_MIRROR_ROUTE, /* `set mirror-route ...`: change */
    RT_CTL_SET_STICKY_SALT,  /* `set sticky-salt VALUE`: change */
    RT_CTL_DEL_ROUTE,        /* `del route NAME`: change */
    RT_CTL_DEL_ROUTES,       /* `del routes`: change */
    RT_CTL_SET_UPSTREAM,     /* `set upstream VARIANT ADDR...`: change (the proxy applies the endpoints) */
    RT_CTL_DEL_UPSTREAM,     /* `del upstream VARIANT`: change */
    RT_CTL_SHOW_STATS,       /* `show stats`: the proxy writes the reply */
    RT_CTL_SHOW_STATS_JSON,  /* `show stats json`: the proxy writes the reply */
    RT_CTL_RESET_STATS,      /* `reset stats`: the proxy zeroes its counters and writes "ok\n\n" */
    RT_CTL_STATUS,           /* `status`: the proxy writes the reply */
    RT_CTL_AUTH,             /* `auth TOKEN`: the proxy checks rt_ctl_auth_token() and writes the reply */
    RT_CTL_SHOW_UPSTREAMS,   /* `show upstreams`: the proxy writes the reply (endpoints and their state) */
};

/* Returns 1 when <op> is one of the changes (RT_CTL_SET_* and RT_CTL_DEL_*), else 0. */
int rt_ctl_op_is_change(int op);

/* Framing. Looks for the end of the first line in <buf> (<len> bytes). Returns:
 *   > 0  the bytes that line takes, its '\n' included; <*linelen> gets its length without "\n" or "\r\n";
 *   0    no complete line yet and not too long so far: wait for more input;
 *   -1   the line is longer than RT_CTL_LINE_MAX (known as soon as RT_CTL_LINE_MAX + 2 bytes carry no '\n'):
 *        reply RT_CTL_REPLY_TOO_LONG once and drop input with rt_ctl_skip_line() until it reports the '\n'. */
long rt_ctl_next_line(const char *buf, size_t len, size_t *linelen);

/* For discarding the rest of an over-long line: returns how many bytes of <buf> to drop, and sets <*found> to 1
 * when they end with the line's '\n' (discarding is over; what follows is the next request) or to 0 when all of
 * <buf> belongs to the long line. */
size_t rt_ctl_skip_line(const char *buf, size_t len, int *found);

/* A request line split into tokens: separated by spaces or tabs; a token that starts with '"' runs to the next
 * unescaped '"' and may hold spaces, with \" and \\ as its only escapes; any other token is taken verbatim. */
typedef struct rt_ctl_tokens_s {
    size_t n;                         /* tokens found */
    const char *v[RT_CTL_MAX_TOKENS]; /* unescaped, NUL-terminated, pointing into <store> */
    size_t len[RT_CTL_MAX_TOKENS];    /* bytes of v[i] */
    char store[RT_CTL_LINE_MAX + 2];  /* unescaped tokens never take more than the line plus one NUL */
} rt_ctl_tokens_t;

/* Splits <line> (<len> bytes, no line terminator) into <out>. Returns 0, or -1 with a NUL-terminated message in
 * <err> ("unterminated quote", "bad escape '\x'", "missing space after closing quote", "more than 70 tokens",
 * "NUL byte in request", "line too long"). */
int rt_ctl_tokenize(const char *line, size_t len, rt_ctl_tokens_t *out, char *err, size_t errlen);

/* Appends <s> (<n> bytes) to <out> as one token, in double quotes with \" and \\ escapes when it is empty or holds
 * a space, a control byte, '"' or '\\'. Returns 0, or -1 when out of memory (<out> unchanged). A token holding
 * '\r' or '\n' is written but cannot be read back from a line: callers that need that check it first. */
int rt_ctl_quote(rt_buf_t *out, const char *s, size_t n);

/* Executes one request line (<len> bytes; a trailing "\n" or "\r\n" is ignored) against <cur> (borrowed, never
 * modified) and appends its reply to <reply>. Returns an enum rt_ctl_op:
 *   - a change: when it leaves the routing as it was, <*next> = NULL (no new generation); otherwise <*next> is a
 *     new table, owned by the caller, equal to <cur> plus the change with generation + 1. Reply "ok\n\n".
 *   - RT_CTL_GET_WEIGHT, RT_CTL_SHOW_ROUTES: the full reply; <*next> = NULL.
 *   - RT_CTL_SHOW_STATS ... RT_CTL_AUTH: syntax checked, nothing appended, <*next> = NULL.
 *   - RT_CTL_ERROR: nothing changes, <*next> = NULL, "error: MESSAGE\n\n" appended. When even that cannot be
 *     allocated, nothing is appended: an RT_CTL_ERROR with no reply means out of memory (close the connection).
 * Grammar (SPEC §4):
 *   get weight | show routes | show stats [json] | reset stats | status | auth TOKEN | show upstreams
 *   set weight PERCENT                                  the canary's weight
 *   set weight VARIANT PERCENT [VARIANT PERCENT ...]    stable gets 100 - sum of all non-stable weights
 *   set header-route NAME [to VARIANT] CONDITION...     at least one condition (see below)
 *   set mirror-route NAME PERCENT [to VARIANT] [CONDITION...]
 *   set sticky-salt VALUE | del route NAME | del routes
 *   set upstream VARIANT HOST:PORT [HOST:PORT ...]      declares VARIANT or replaces its endpoints
 *   del upstream VARIANT                                not stable/canary; weight 0 and no route sending to it
 *   show upstreams
 *   CONDITION: method M[,M...] | path exact|prefix|regex VALUE | header NAME exact|prefix|regex VALUE
 *              (NAME may be cookie:NAME)
 * A header route without conditions would take every request away from the weights, which is what `set weight`
 * is for; a mirror route without conditions copies a share of all traffic, which is the usual shadow test. So the
 * former is refused and the latter accepted. */
int rt_ctl_exec(const rt_table_t *cur, const char *line, size_t len, rt_table_t **next, rt_buf_t *reply);

/* For a line that rt_ctl_exec() classified as RT_CTL_AUTH: stores the unescaped token in <token> (replacing its
 * contents). Returns 0, or -1 when <line> is not a valid `auth TOKEN` request or out of memory. */
int rt_ctl_auth_token(const char *line, size_t len, rt_buf_t *token);

/* Appends the routing state of <t> (what the control socket can change: generation, sticky salt, run-time
 * endpoints, weights, routes, removed variants) as the text of a state file: a comment, "generation N", then control
 * lines ("set sticky-salt ...", one "set upstream VARIANT ADDR..." per variant given endpoints at run time,
 * "set weight canary X [VARIANT Y ...]", one "set header-route"/"set mirror-route" per route in order, one
 * "del upstream VARIANT" per removed variant).
 * Returns 0, or -1 when out of memory or when the salt holds a line break, which no line can carry (<out> is then
 * as before the call). */
int rt_ctl_dump_state(const rt_table_t *t, rt_buf_t *out);

/* Rebuilds a table from a state file's <text> (<len> bytes): a clone of <base> (which brings the configured
 * variants and sticky kind) whose routes are replaced by the file's, with the file's salt and weights, and the
 * generation the file names (<base>'s when it names none). Blank lines and lines starting with '#' are skipped; so
 * is "del upstream" of a variant <base> does not have (it was declared at run time, and is gone either way).
 * Returns the new table (caller owns it), or NULL with "line N: MESSAGE" in <err> when a line is not a valid
 * change or generation line (e.g. a variant the configuration no longer declares), or "out of memory". */
rt_table_t *rt_ctl_load_state(const rt_table_t *base, const char *text, size_t len, char *err, size_t errlen);

#endif
