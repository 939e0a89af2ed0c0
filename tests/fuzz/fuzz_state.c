/* libFuzzer target: the state-file loader (rt_ctl_load_state), as weir runs it at start on the file it finds. A file
 * it accepts must come back equal after rt_ctl_dump_state() and a second load, keeping its generation, and its
 * routes must run (fuzz.h); a file it refuses gets a message. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rt_table_t *base = fuzz_base_table(), *t;
    char err[256] = "";

    t = rt_ctl_load_state(base, (const char *)data, size, err, sizeof(err));
    if (t != NULL) {
        fuzz_state_round_trip(base, t);
        fuzz_decide_all(t);
        rt_table_free(t);
    } else {
        FUZZ_CHECK(err[0] != '\0');
    }
    rt_table_free(base);
    return 0;
}
