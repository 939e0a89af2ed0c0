/* `workers auto` (SPEC §2, proxy/cpus.c): the affinity mask's CPUs capped by the cgroup CPU quota, rounded up. The
 * cgroup trees are fake ones under a temporary directory, found through mountinfo text as the kernel writes it
 * (cgroup v2 unified and hybrid, v1 cpu controller, container namespaces). proxy/cpus.c is not among the objects unit
 * tests link, so it is included here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "../../proxy/cpus.c"

static char tmp[64];

/* Writes <text> to <tmp>/<rel>, creating the directories on the way. */
static void put_file(const char *rel, const char *text)
{
    char path[PATH_MAX], *p;
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmp, rel);
    for (p = path + strlen(tmp) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        mkdir(path, 0700);
        *p = '/';
    }
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmp, sizeof(tmp), "/tmp/weir-cpus.XXXXXX");
    assert_non_null(mkdtemp(tmp));
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    assert_int_equal(system(cmd), 0);
    return 0;
}

/* A unified (v2-only) host as systemd sets it up. */
static const char mi_unified[] =
    "22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
    "25 28 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
    "28 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n";

static void test_quota_rounding(void **state)
{
    (void)state;
    assert_int_equal(quota_cpus(150000, 100000), 2);
    assert_int_equal(quota_cpus(100000, 100000), 1);
    assert_int_equal(quota_cpus(100001, 100000), 2);
    assert_int_equal(quota_cpus(50000, 100000), 1);
    assert_int_equal(quota_cpus(1000, 100000), 1);
    assert_int_equal(quota_cpus(-1, 100000), 0); /* v1: no limit */
    assert_int_equal(quota_cpus(0, 100000), 0);
    assert_int_equal(quota_cpus(100000, 0), 0);
}

/* A pod's cgroup under kubepods: the container allows 2.5 CPUs (rounded up to 3), the pod 4; the smallest counts
 * and the affinity mask caps it further. */
static void test_v2_nested(void **state)
{
    (void)state;
    put_file("sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "250000 100000\n");
    put_file("sys/fs/cgroup/kubepods/pod1/cpu.max", "400000 100000\n");
    put_file("sys/fs/cgroup/kubepods/cpu.max", "max 100000\n");
    assert_int_equal(px_cpus_limit(8, mi_unified, "0::/kubepods/pod1/ctr\n", tmp), 3);
    assert_int_equal(px_cpus_limit(2, mi_unified, "0::/kubepods/pod1/ctr\n", tmp), 2);
    /* a parent's limit below the child's counts */
    put_file("sys/fs/cgroup/kubepods/pod1/cpu.max", "100000 100000\n");
    assert_int_equal(px_cpus_limit(8, mi_unified, "0::/kubepods/pod1/ctr\n", tmp), 1);
    /* "max" everywhere: the affinity mask alone */
    put_file("sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n");
    put_file("sys/fs/cgroup/kubepods/pod1/cpu.max", "max 100000\n");
    assert_int_equal(px_cpus_limit(8, mi_unified, "0::/kubepods/pod1/ctr\n", tmp), 8);
    /* nothing limits and the mask is unknown: 0, the caller's fallback */
    assert_int_equal(px_cpus_limit(0, mi_unified, "0::/kubepods/pod1/ctr\n", tmp), 0);
}

/* Inside a container with its own cgroup namespace the process's cgroup is "/" and the mount's root is the
 * container's cgroup: its cpu.max is read at the mount point. */
static void test_v2_namespaced(void **state)
{
    (void)state;
    put_file("sys/fs/cgroup/cpu.max", "150000 100000\n");
    assert_int_equal(px_cpus_limit(16, mi_unified, "0::/\n", tmp), 2);
    put_file("sys/fs/cgroup/cpu.max", "50000 100000\n"); /* half a CPU still runs one worker */
    assert_int_equal(px_cpus_limit(16, mi_unified, "0::/\n", tmp), 1);
}

/* A hybrid host (this layout: v1 controllers, v2 at /sys/fs/cgroup/unified) with the cpu controller co-mounted
 * with cpuacct, a cpuset-only mount that must not be read as cpu, and a docker container's cgroup that is also the
 * mount's root (no cgroup namespace). */
static void test_v1_hybrid(void **state)
{
    (void)state;
    const char mi[] =
        "30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw\n"
        "31 25 0:27 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:6 - cgroup cgroup rw,cpu,cpuacct\n"
        "32 25 0:28 /docker/abc /sys/fs/cgroup/cpuset rw,nosuid shared:7 - cgroup cgroup rw,cpuset\n";
    const char cg[] = "12:cpuset:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/docker/abc\n";

    put_file("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "300000\n");
    put_file("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    put_file("sys/fs/cgroup/cpuset/cpu.cfs_quota_us", "100000\n"); /* not the cpu controller: ignored */
    put_file("sys/fs/cgroup/cpuset/cpu.cfs_period_us", "100000\n");
    assert_int_equal(px_cpus_limit(8, mi, cg, tmp), 3);
    /* -1 is no limit */
    put_file("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
    assert_int_equal(px_cpus_limit(8, mi, cg, tmp), 8);
    /* with both hierarchies limiting, the smaller limit wins */
    put_file("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "300000\n");
    put_file("sys/fs/cgroup/unified/cpu.max", "200000 100000\n");
    assert_int_equal(px_cpus_limit(8, mi, cg, tmp), 2);
}

/* A v1 host cgroup below the mount's root (/ here), walked up level by level, and a mount point written with
 * mountinfo's octal escapes. */
static void test_v1_levels_and_escapes(void **state)
{
    (void)state;
    const char mi[] = "40 25 0:30 / /mnt/cg\\040cpu rw - cgroup cgroup rw,cpuacct,cpu\n";

    put_file("mnt/cg cpu/system.slice/web.service/cpu.cfs_quota_us", "-1\n");
    put_file("mnt/cg cpu/system.slice/web.service/cpu.cfs_period_us", "100000\n");
    put_file("mnt/cg cpu/system.slice/cpu.cfs_quota_us", "120000\n");
    put_file("mnt/cg cpu/system.slice/cpu.cfs_period_us", "100000\n");
    assert_int_equal(px_cpus_limit(4, mi, "5:cpuacct,cpu:/system.slice/web.service\n", tmp), 2);
}

/* What cannot be read or located sets no limit: no files, malformed ones, a cgroup outside the mount's root, no
 * hierarchy line for the controller, missing texts. */
static void test_no_limit(void **state)
{
    (void)state;
    const char mi_v2_sub[] = "25 28 0:24 /other /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";

    assert_int_equal(px_cpus_limit(4, mi_unified, "0::/nowhere\n", tmp), 4);
    put_file("sys/fs/cgroup/a/cpu.max", "lots 100000\n");
    assert_int_equal(px_cpus_limit(4, mi_unified, "0::/a\n", tmp), 4);
    put_file("sys/fs/cgroup/a/cpu.max", "100000\n");
    assert_int_equal(px_cpus_limit(4, mi_unified, "0::/a\n", tmp), 4);
    put_file("sys/fs/cgroup/a/cpu.max", "100000 0\n");
    assert_int_equal(px_cpus_limit(4, mi_unified, "0::/a\n", tmp), 4);
    put_file("sys/fs/cgroup/a/cpu.max", "100000 100000\n");
    assert_int_equal(px_cpus_limit(4, mi_v2_sub, "0::/a\n", tmp), 4);     /* /a is not below the mount's /other */
    assert_int_equal(px_cpus_limit(4, mi_unified, "1:cpu:/a\n", tmp), 4); /* no v2 line */
    assert_int_equal(px_cpus_limit(4, NULL, "0::/a\n", tmp), 4);
    assert_int_equal(px_cpus_limit(4, mi_unified, NULL, tmp), 4);
    assert_int_equal(px_cpus_limit(4, mi_unified, "0::/a\n", tmp), 1); /* and the same tree does limit */
}

/* The real system: never more than the affinity mask, never 0, and 1 with a mask of one CPU (`taskset -c 0`). */
static void test_usable_follows_affinity(void **state)
{
    cpu_set_t old, one;
    (void)state;

    assert_int_equal(sched_getaffinity(0, sizeof(old), &old), 0);
    unsigned n = px_cpus_usable();
    assert_true(n >= 1 && n <= (unsigned)CPU_COUNT(&old));
    CPU_ZERO(&one);
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &old)) {
            CPU_SET(i, &one);
            break;
        }
    assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
    n = px_cpus_usable();
    assert_int_equal(sched_setaffinity(0, sizeof(old), &old), 0);
    assert_int_equal(n, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quota_rounding),
        cmocka_unit_test_setup_teardown(test_v2_nested, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v2_namespaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v1_hybrid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v1_levels_and_escapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_limit, setup, teardown),
        cmocka_unit_test(test_usable_follows_affinity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
