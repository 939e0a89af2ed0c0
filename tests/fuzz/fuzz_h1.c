/* libFuzzer target: the request path from bytes to the block sent upstream, as proxy/conn.c runs it. llhttp parses
 * with the same settings (pause at the end of the header block and of the message), then the header block goes
 * through px_h1_scan(), px_h1_request_line(), a routing decision and px_h1_build_request(); pipelined requests and
 * bodies follow. What weir forwards must itself be a valid request head: llhttp parses it to its end, px_h1_scan()
 * accepts it, and it carries the same method and target. */
#include "fuzz.h"
#include "fuzz_http.h"

static const llhttp_settings_t settings = {
    .on_headers_complete = pause_cb,
    .on_message_complete = pause_cb,
};

static rt_table_t *table;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    rt_cond_spec_t hdr = {RT_COND_HEADER, RT_MATCH_REGEX, "x-user", "[a-z]+-(1|2)"};
    rt_cond_spec_t ck = {RT_COND_HEADER, RT_MATCH_EXACT, "cookie:user", "bob"};
    rt_cond_spec_t path[2] = {{RT_COND_METHOD, RT_MATCH_EXACT, NULL, "GET,POST"},
                              {RT_COND_PATH, RT_MATCH_PREFIX, NULL, "/api"}};
    rt_route_spec_t routes[] = {
        {"beta", RT_ROUTE_HEADER, "canary", 0, &hdr, 1},
        {"cookie", RT_ROUTE_HEADER, "blue", 0, &ck, 1},
        {"shadow", RT_ROUTE_MIRROR, "canary", 5000, path, 2},
    };
    char err[256];
    size_t i;

    (void)argc;
    (void)argv;
    table = fuzz_base_table();
    for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        FUZZ_CHECK(rt_table_set_route(table, &routes[i], err, sizeof(err)) == 0);
    return 0;
}

/* Checks the forwarded head <out> (<len> bytes) against the received request's <method> and <target>. */
static void check_forwarded(const char *out, size_t len, rt_span_t method, rt_span_t target)
{
    rt_span_t line, m, t;

    fuzz_check_head(HTTP_REQUEST, out, len, &line);
    FUZZ_CHECK(px_h1_request_line(line, &m, &t) == 0);
    FUZZ_CHECK(m.len == method.len && memcmp(m.p, method.p, m.len) == 0);
    FUZZ_CHECK(t.len == target.len && memcmp(t.p, target.p, t.len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static rt_header_t hdrs[PX_H1_MAX_HEADERS];
    static char out[65536];
    /* A copy with a NUL after it: the sanitizers' regexec() interceptor reads the subject up to a NUL, ignoring
     * REG_STARTEND, which glibc honours; weir's spans always lie inside a larger buffer. */
    char *buf = malloc(size + 1);
    const char *pos = buf, *end = buf + size;
    llhttp_t p;
    int msgs;

    FUZZ_CHECK(buf != NULL);
    memcpy(buf, data, size);
    buf[size] = '\0';

    llhttp_init(&p, HTTP_REQUEST, &settings);
    for (msgs = 0; msgs < 8 && pos < end; msgs++) {
        const char *head = pos;
        rt_span_t line, method, target;
        px_h1_fwd_req_t fr;
        rt_request_t req;
        rt_decision_t d;
        size_t len;
        int n;

        if (llhttp_execute(&p, pos, (size_t)(end - pos)) != HPE_PAUSED)
            break;
        pos = llhttp_get_error_pos(&p);
        llhttp_resume(&p);
        n = px_h1_scan(head, (size_t)(pos - head), &line, hdrs, PX_H1_MAX_HEADERS);
        if (n >= 0 && px_h1_request_line(line, &method, &target) == 0) {
            memset(&req, 0, sizeof(req));
            req.method = method;
            req.path = target;
            req.headers = hdrs;
            req.nheaders = (size_t)n;
            req.client_ip = (rt_span_t){"192.0.2.1", 9};
            rt_decide_worker(table, 0, &req, 42, &d);
            FUZZ_CHECK(d.variant < rt_table_nvariants(table));
            memset(&fr, 0, sizeof(fr));
            fr.method = method;
            fr.target = target;
            fr.client_ip = "192.0.2.1";
            fr.host = "10.0.0.7:8080";
            fr.upgrade = p.upgrade;
            len = px_h1_build_request(out, sizeof(out), &fr, hdrs, (size_t)n);
            if (len > 0)
                check_forwarded(out, len, method, target);
        }
        if (p.upgrade)
            break; /* opaque bytes follow */
        /* The body, up to the end of the message. */
        if (llhttp_execute(&p, pos, (size_t)(end - pos)) != HPE_PAUSED)
            break;
        pos = llhttp_get_error_pos(&p);
        llhttp_resume(&p);
    }
    free(buf);
    return 0;
}
