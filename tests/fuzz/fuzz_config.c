/* libFuzzer target: the configuration file parser (proxy/config.c), through px_config_load() as `weir -c FILE`
 * calls it. The input is the file, served from a memfd so nothing touches the disk. Accepted or refused, the
 * loader must not crash or leak (ASan), and a refusal says why. */
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "px/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    px_config_t cfg;
    char path[64], err[512] = "";
    char *argv[] = {"weir", "-c", path, NULL};
    int fd = memfd_create("weir-fuzz-config", 0), rc;

    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(size == 0 || write(fd, data, size) == (ssize_t)size);
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    px_config_init(&cfg);
    rc = px_config_load(&cfg, 3, argv, err, sizeof(err));
    FUZZ_CHECK(rc == PX_CONFIG_OK || err[0] != '\0');
    px_config_free(&cfg);
    close(fd);
    return 0;
}
