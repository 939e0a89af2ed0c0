/* `workers auto`: the CPUs of the affinity mask, capped by the cgroup CPU quota (include/px/cpus.h).
 *
 * The cgroup file systems are found through /proc/self/mountinfo rather than at fixed paths: cgroup v2 may be
 * mounted at /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid), cgroup v1's cpu controller at
 * /sys/fs/cgroup/cpu or /sys/fs/cgroup/cpu,cpuacct. The process's own cgroup is read from /proc/self/cgroup and
 * taken relative to the mount's root, which in a container with its own cgroup namespace is the container's cgroup.
 * Quotas nest (a child cannot use more than its parent allows), so every level up to the mount's root counts. */
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "px/cpus.h"

#define TEXT_MAX (256 * 1024) /* /proc/self/mountinfo of a host with many containers */
#define LINE_MAX_ 4096        /* a longer mountinfo or cgroup line is skipped */

/* Reads <path> into <buf> (NUL-terminated, cut at <size> - 1 bytes). Returns 0, or -1 when it cannot be opened. */
static int read_text(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "re");
    size_t n;

    if (f == NULL)
        return -1;
    n = fread(buf, 1, size - 1, f);
    buf[n] = '\0';
    fclose(f);
    return 0;
}

/* The integer that <s> holds (leading blanks, an optional trailing newline). Returns 0, or -1 when it holds more. */
static int parse_ll(const char *s, long long *out)
{
    char *end;

    *out = strtoll(s, &end, 10);
    if (end == s)
        return -1;
    while (*end == '\n' || *end == ' ')
        end++;
    return *end == '\0' ? 0 : -1;
}

/* ceil(<quota> / <period>), or 0 for no limit (a quota below 1 is cgroup v1's -1, a period below 1 is invalid). */
static unsigned quota_cpus(long long quota, long long period)
{
    long long n;

    if (quota <= 0 || period <= 0)
        return 0;
    n = quota / period + (quota % period != 0);
    return n > UINT_MAX ? UINT_MAX : (unsigned)n;
}

/* The CPUs the quota files in directory <dir> allow, 0 for no limit (or no readable files). <v2>: cpu.max, else
 * cpu.cfs_quota_us and cpu.cfs_period_us. */
static unsigned level_cpus(const char *dir, int v2)
{
    char path[PATH_MAX], text[128], *sp;
    long long quota, period;

    if (v2) {
        if (snprintf(path, sizeof(path), "%s/cpu.max", dir) >= (int)sizeof(path) ||
            read_text(path, text, sizeof(text)) != 0 || (sp = strchr(text, ' ')) == NULL)
            return 0;
        *sp = '\0';
        if (strcmp(text, "max") == 0 || parse_ll(text, &quota) != 0 || parse_ll(sp + 1, &period) != 0)
            return 0;
        return quota_cpus(quota, period);
    }
    if (snprintf(path, sizeof(path), "%s/cpu.cfs_quota_us", dir) >= (int)sizeof(path) ||
        read_text(path, text, sizeof(text)) != 0 || parse_ll(text, &quota) != 0)
        return 0;
    if (snprintf(path, sizeof(path), "%s/cpu.cfs_period_us", dir) >= (int)sizeof(path) ||
        read_text(path, text, sizeof(text)) != 0 || parse_ll(text, &period) != 0)
        return 0;
    return quota_cpus(quota, period);
}

/* mountinfo escapes blanks and backslashes in paths as \ooo; undoes it in place. */
static void unescape(char *s)
{
    char *o = s;

    for (; *s != '\0'; s++, o++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
            *o = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 3;
        } else {
            *o = *s;
        }
    }
    *o = '\0';
}

/* Whether the comma-separated list <list> holds <word>. */
static int has_word(const char *list, const char *word)
{
    size_t n = strlen(word);

    while (list != NULL && *list != '\0') {
        if (strncmp(list, word, n) == 0 && (list[n] == ',' || list[n] == '\0'))
            return 1;
        list = strchr(list, ',');
        if (list != NULL)
            list++;
    }
    return 0;
}

/* The process's cgroup path in the v2 hierarchy (<v2>) or in the v1 hierarchy of the cpu controller, copied from
 * the text of /proc/self/cgroup into <out>. Returns 0, or -1 when there is none. */
static int own_cgroup(const char *self_cgroup, int v2, char *out, size_t size)
{
    const char *p = self_cgroup;

    while (p != NULL && *p != '\0') {
        const char *eol = strchr(p, '\n'), *c1 = strchr(p, ':'), *c2;
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char line[LINE_MAX_];

        if (len < sizeof(line) && c1 != NULL && c1 < p + len && (c2 = strchr(c1 + 1, ':')) != NULL && c2 < p + len) {
            memcpy(line, p, len);
            line[len] = '\0';
            line[c2 - p] = '\0';
            /* v2: "0::PATH"; v1: "ID:CONTROLLERS:PATH" */
            if (v2 ? strcmp(line, "0:") == 0 : has_word(line + (c1 - p) + 1, "cpu")) {
                if (snprintf(out, size, "%s", line + (c2 - p) + 1) >= (int)size)
                    return -1;
                return 0;
            }
        }
        p = eol ? eol + 1 : NULL;
    }
    return -1;
}

/* The smallest limit from the quota files of <cgroup> (a path in the hierarchy) and each parent, up to the root of the
 * mount at <point> whose root is <root>; 0 for none. A cgroup outside the mount's root cannot be located: none. */
static unsigned mount_cpus(const char *prefix, const char *point, const char *root, const char *cgroup, int v2)
{
    char dir[PATH_MAX];
    size_t rlen = strcmp(root, "/") == 0 ? 0 : strlen(root), base;
    unsigned best = 0, n;
    char *slash;

    if (strncmp(cgroup, root, rlen) != 0 || (cgroup[rlen] != '/' && cgroup[rlen] != '\0'))
        return 0;
    if (snprintf(dir, sizeof(dir), "%s%s", prefix, point) >= (int)sizeof(dir))
        return 0;
    base = strlen(dir);
    if (snprintf(dir + base, sizeof(dir) - base, "%s", cgroup + rlen) >= (int)(sizeof(dir) - base))
        return 0;
    for (;;) {
        while (strlen(dir) > base && dir[strlen(dir) - 1] == '/')
            dir[strlen(dir) - 1] = '\0';
        n = level_cpus(dir, v2);
        if (n != 0 && (best == 0 || n < best))
            best = n;
        if (strlen(dir) <= base || (slash = strrchr(dir + base, '/')) == NULL)
            break;
        *slash = '\0';
    }
    return best;
}

unsigned px_cpus_limit(unsigned ncpus, const char *mountinfo, const char *self_cgroup, const char *prefix)
{
    char v2path[PATH_MAX], v1path[PATH_MAX];
    int have_v2 = own_cgroup(self_cgroup, 1, v2path, sizeof(v2path)) == 0;
    int have_v1 = own_cgroup(self_cgroup, 0, v1path, sizeof(v1path)) == 0;
    const char *p = mountinfo;
    unsigned best = ncpus;

    /* ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS */
    while (p != NULL && *p != '\0') {
        const char *start = p, *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char line[LINE_MAX_], *f[6], *sep, *save = NULL, *fstype, *superopts;
        unsigned i, n = 0;

        p = eol ? eol + 1 : NULL;
        if (len >= sizeof(line))
            continue;
        memcpy(line, start, len);
        line[len] = '\0';
        if ((sep = strstr(line, " - ")) == NULL)
            continue;
        *sep = '\0';
        for (i = 0; i < 6 && (f[i] = strtok_r(i ? NULL : line, " ", &save)) != NULL; i++)
            ;
        save = NULL;
        fstype = strtok_r(sep + 3, " ", &save);
        if (i < 6 || fstype == NULL || strtok_r(NULL, " ", &save) == NULL ||
            (superopts = strtok_r(NULL, " ", &save)) == NULL)
            continue;
        unescape(f[3]);
        unescape(f[4]);
        if (strcmp(fstype, "cgroup2") == 0 && have_v2)
            n = mount_cpus(prefix, f[4], f[3], v2path, 1);
        else if (strcmp(fstype, "cgroup") == 0 && have_v1 && has_word(superopts, "cpu"))
            n = mount_cpus(prefix, f[4], f[3], v1path, 0);
        if (n != 0 && (best == 0 || n < best))
            best = n;
    }
    return best;
}

unsigned px_cpus_usable(void)
{
    char *mountinfo = malloc(TEXT_MAX), cgroup[LINE_MAX_ * 4];
    unsigned ncpus = 0, n;
    cpu_set_t set;

    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        ncpus = (unsigned)CPU_COUNT(&set);
    if (ncpus == 0) { /* more CPUs than a cpu_set_t holds: every online one */
        long on = sysconf(_SC_NPROCESSORS_ONLN);
        ncpus = on > 0 ? (unsigned)on : 1;
    }
    if (mountinfo == NULL || read_text("/proc/self/mountinfo", mountinfo, TEXT_MAX) != 0 ||
        read_text("/proc/self/cgroup", cgroup, sizeof(cgroup)) != 0) {
        free(mountinfo);
        return ncpus;
    }
    n = px_cpus_limit(ncpus, mountinfo, cgroup, "");
    free(mountinfo);
    return n ? n : 1;
}
