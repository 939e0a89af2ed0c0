/* The access log (SPEC §2 `access-log`): one JSON object per line. Workers queue lines into a bounded buffer that
 * one writer thread writes out (O_APPEND), so lines never interleave and a slow or full log never blocks a worker:
 * past the buffer, lines are dropped and counted. SIGHUP reopens the file (log rotation). */
#ifndef PX_ACCESSLOG_H
#define PX_ACCESSLOG_H
#include <stddef.h>
#include <stdint.h>

#include "rt/table-t.h"

typedef struct px_accesslog_entry_s {
    rt_span_t method, path; /* empty when the request was not understood */
    int status;
    const char *variant;  /* NULL when none was chosen */
    const char *route;    /* NULL when no route matched */
    const char *upstream; /* endpoint "host:port", NULL when none was connected */
    uint64_t duration_ns;
    uint64_t bytes; /* response body bytes sent to the client */
} px_accesslog_entry_t;

/* Opens <path> ("-" is stdout; NULL disables the log) and starts the writer thread. Returns 0 or -1 with errno set.
 * Main thread, at start. */
int px_accesslog_open(const char *path);
/* Reopens the same path in place (the descriptor number stays, so workers need no notice). Returns 0 or -1. */
int px_accesslog_reopen(void);
/* Stops the writer once it wrote what is queued (waiting at most 2 s: a log nobody reads is abandoned) and closes
 * the log. After the workers were joined. */
void px_accesslog_close(void);
/* 1 when a log is open. Cheap: workers call it per request. */
int px_accesslog_enabled(void);
/* Formats one line and queues it, or drops and counts it when the queue is full. Thread-safe; never blocks on I/O. */
void px_accesslog_write(const px_accesslog_entry_t *e);
/* Lines dropped since start: the queue was full, or the log refused a write. Thread-safe. */
uint64_t px_accesslog_dropped(void);

/* Writes <s> as the body of a JSON string (no quotes) into <out> (<cap> bytes); returns the length, or <cap> when
 * it did not fit. Control bytes become \u00XX, '"' and '\\' are escaped, other bytes pass unchanged. */
size_t px_json_escape(char *out, size_t cap, const char *s, size_t len);

#endif
