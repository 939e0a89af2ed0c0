/* libFuzzer target: control lines (SPEC §4) through the framing, tokenizer and executor the control listener uses
 * (rt_ctl_next_line, rt_ctl_exec, rt_ctl_auth_token), each change applied to the table the next line sees, as the
 * control thread does. After every change the table must survive the state file: rt_ctl_dump_state() then
 * rt_ctl_load_state() gives an equal table. The last table's routes are run against a few requests (fuzz.h), so a
 * regex that is slow or huge to compile or to run is found: tests/run.sh runs this with memory limits and a timeout. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rt_table_t *base = fuzz_base_table(), *cur = rt_table_clone(base);
    rt_buf_t reply = RT_BUF_INIT, token = RT_BUF_INIT;
    const char *p = (const char *)data;
    size_t left = size;
    int lines = 0;

    FUZZ_CHECK(cur != NULL);
    while (left > 0 && lines++ < 64) {
        size_t linelen = 0;
        long n = rt_ctl_next_line(p, left, &linelen);
        rt_table_t *next = NULL;
        int op;

        if (n == 0) { /* the last line, without its '\n': the listener waits for more; take it as it is */
            n = (long)left;
            linelen = left;
        } else if (n < 0) {
            size_t skip;
            int found = 0;
            skip = rt_ctl_skip_line(p, left, &found);
            FUZZ_CHECK(skip <= left);
            p += skip;
            left -= skip;
            continue;
        }
        FUZZ_CHECK((size_t)n <= left && linelen <= (size_t)n);
        rt_buf_reset(&reply);
        op = rt_ctl_exec(cur, p, linelen, &next, &reply);
        if (op == RT_CTL_AUTH)
            (void)rt_ctl_auth_token(p, linelen, &token);
        if (next != NULL) {
            FUZZ_CHECK(rt_ctl_op_is_change(op));
            rt_table_free(cur);
            cur = next;
            fuzz_state_round_trip(base, cur);
        }
        p += n;
        left -= (size_t)n;
    }
    fuzz_decide_all(cur); /* once, on the last table: a regex that is merely slow to run must not add up */
    rt_buf_dispose(&reply);
    rt_buf_dispose(&token);
    rt_table_free(cur);
    rt_table_free(base);
    return 0;
}
