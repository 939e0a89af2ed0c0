/* How many CPUs the process may use, for `workers auto` (SPEC §2): the CPUs of its affinity mask, capped by the CPU
 * quota of its cgroup, so a pod limited to 2 CPUs on a 64-CPU node starts 2 workers, not 64. */
#ifndef PX_CPUS_H
#define PX_CPUS_H

/* The number of workers `workers auto` starts: px_cpus_limit() of sched_getaffinity()'s count (the online CPUs when
 * that fails), /proc/self/mountinfo, /proc/self/cgroup and the real file system. Always at least 1. */
unsigned px_cpus_usable(void);

/* The computation with its inputs given, so tests can point it at a fake cgroup tree.
 * <ncpus>: the CPUs of the affinity mask (0 when unknown: no cap from it).
 * <mountinfo>, <self_cgroup>: the text of /proc/self/mountinfo and /proc/self/cgroup (NULL is read as empty).
 * <prefix>: prepended to every mount point before a file is opened ("" for the real system).
 * Every cgroup v2 mount (fstype cgroup2) and every cgroup v1 mount whose options name the cpu controller is looked at,
 * from the process's own cgroup up to the mount's root: each level's quota (v2 cpu.max "QUOTA PERIOD" or "max ...";
 * v1 cpu.cfs_quota_us, -1 for none, and cpu.cfs_period_us) allows ceil(QUOTA / PERIOD) CPUs, and the smallest of
 * them and <ncpus> is the answer. A level without the files, or with unreadable or malformed ones, sets no limit.
 * Returns at least 1; 0 when nothing limits and <ncpus> is 0 (the caller's fallback applies). */
unsigned px_cpus_limit(unsigned ncpus, const char *mountinfo, const char *self_cgroup, const char *prefix);

#endif
