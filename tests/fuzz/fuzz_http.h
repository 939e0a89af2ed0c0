/* What the HTTP targets (fuzz_h1, fuzz_response) share: llhttp's pause callback as proxy/conn.c uses it, and the
 * check of a head weir would send. Include after fuzz.h. */
#ifndef FUZZ_HTTP_H
#define FUZZ_HTTP_H
#include <llhttp.h>

#include "px/h1.h"

static int pause_cb(llhttp_t *p)
{
    (void)p;
    return HPE_PAUSED;
}

/* The head <out> (<len> bytes) that weir would send must parse, as a <type> head, exactly to its end, and
 * px_h1_scan() must accept it; stores its first line in <first_line>. */
static inline void fuzz_check_head(llhttp_type_t type, const char *out, size_t len, rt_span_t *first_line)
{
    static rt_header_t hdrs[PX_H1_MAX_HEADERS + 8];
    static const llhttp_settings_t head_only = {.on_headers_complete = pause_cb};
    llhttp_t p;
    llhttp_errno_t err;

    llhttp_init(&p, type, &head_only);
    err = llhttp_execute(&p, out, len);
    if (err != HPE_PAUSED || llhttp_get_error_pos(&p) != out + len) {
        fprintf(stderr, "the head weir would send does not parse (%s):\n%.*s\n", llhttp_errno_name(err), (int)len, out);
        FUZZ_CHECK(0);
    }
    FUZZ_CHECK(px_h1_scan(out, len, first_line, hdrs, PX_H1_MAX_HEADERS + 8) >= 0);
}

#endif
