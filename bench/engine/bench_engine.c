/*
 * bench_engine — message throughput of pylon's actor runtime against a conventional reference
 * scheduler (ref_queue.h: one mutex+condvar run queue, mutex-protected mailboxes), on the same
 * workloads (workloads.inc), in the same process. See README.md in this directory.
 *
 *   bench_engine [--workers N] [--quick] [--duration SEC] [--reps N] [--only LIST]
 *                [--engine ours|ref|both] [--pairs P] [--producers N] [--consumers M]
 *                [--burst K] [--verbose]
 */
#include "bench_common.h"
#include "engine/actor.h"
#include "engine/runtime.h"
#include "ref_queue.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the workloads, once per engine ---------------------------------------------------------- */
#define E(x) pylon_##x
#define W(x) ours_##x
#include "workloads.inc"
#undef E
#undef W

#define E(x) ref_##x
#define W(x) refq_##x
#include "workloads.inc"
#undef E
#undef W

/* ---- driver ---------------------------------------------------------------------------------- */

typedef bool (*workload_fn)(const bench_params *p, unsigned size, bench_result *out);

typedef struct row {
    const char *workload; /* for --only */
    const char *label;
    unsigned size;
    workload_fn ours, ref;
} row;

#define MAX_REPS        15
#define PINGPONG_TARGET 20e6

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, unsigned n)
{
    double s[MAX_REPS];
    memcpy(s, v, n * sizeof *v);
    qsort(s, n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: bench_engine [options]\n"
        "  --workers N       worker threads for both engines (default 2)\n"
        "  --quick           short runs (0.25 s each): about 10 s in all\n"
        "  --duration SEC    measured phase of each run (default 2.0; --quick 0.25)\n"
        "  --reps N          repetitions per row, median reported (default 3, max %d)\n"
        "  --only LIST       comma-separated subset of: pingpong,fanin,fanout\n"
        "  --engine WHICH    ours, ref or both (default both)\n"
        "  --pairs P         ping-pong pairs of the main row (default 1000; rows P=1, 100 too)\n"
        "  --producers N     fan-in producers (default 64)\n"
        "  --consumers M     fan-out consumers (default 1000)\n"
        "  --burst K         messages a producer sends per go (default 32)\n"
        "  --verbose         print every run with the runtime's statistics\n",
        MAX_REPS);
}

static unsigned parse_uint(const char *opt, const char *s, unsigned min, unsigned max)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s ? s : "", &end, 10);
    if (!s || errno || *end || end == s || v < min || v > max) {
        fprintf(stderr, "bench_engine: %s wants an integer in [%u, %u]\n", opt, min, max);
        exit(2);
    }
    return (unsigned)v;
}

static void print_machine(const bench_params *p, unsigned reps)
{
    char model[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10) == 0) {
                char *c = strchr(line, ':');
                if (c) {
                    c += (c[1] == ' ') ? 2 : 1;
                    c[strcspn(c, "\n")] = 0;
                    snprintf(model, sizeof model, "%s", c);
                }
                break;
            }
        }
        fclose(f);
    }
    double load[3] = {0, 0, 0};
    if (getloadavg(load, 3) < 0) load[0] = load[1] = load[2] = -1;
    printf("pylon engine benchmark\n");
    printf("  machine : %ld cores online (%ld configured), %s\n", sysconf(_SC_NPROCESSORS_ONLN),
           sysconf(_SC_NPROCESSORS_CONF), model);
    printf("  load    : %.2f %.2f %.2f (1/5/15 min, before the run)\n", load[0], load[1], load[2]);
    printf("  workers : %u (both engines), batch 64\n", p->workers);
    printf("  runs    : %.2f s measured each, %u reps per row, median reported\n",
           (double)p->duration_ns / 1e9, reps);
    printf(
        "  fan-in/out: burst %u per go, pool %u per fan-in producer, %u for the fan-out producer\n",
        p->burst, p->pool_fanin, p->pool_fanout);
    printf("  ours = pylon_runtime (engine/runtime.h); ref = one mutex+condvar run queue, mutex "
           "mailboxes\n\n");
}

/* How much of the machine was busy with something else than this benchmark: CPU time that
 * other processes used or the hypervisor stole ("steal" in /proc/stat), as a share of all the
 * CPU time that elapsed. On a shared VM this is the figure that says whether a row is noise. */
typedef struct cpu_sample {
    unsigned long long total, busy, steal; /* /proc/stat ticks, all CPUs */
    uint64_t own_ns;                       /* this process's CPU time */
} cpu_sample;

static cpu_sample cpu_sample_now(void)
{
    cpu_sample c = {0, 0, 0, 0};
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) == 0)
        c.own_ns = (uint64_t)ts.tv_sec * PYLON_NS_PER_SEC + (uint64_t)ts.tv_nsec;
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return c;
    unsigned long long v[8] = {0};
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6], &v[7]) == 8) {
        for (int i = 0; i < 8; i++)
            c.total += v[i];
        c.busy = c.total - v[3] - v[4]; /* not idle, not iowait */
        c.steal = v[7];
    }
    fclose(f);
    return c;
}

typedef struct noise {
    double elsewhere; /* % of all CPU time: other processes + steal */
    double steal;     /* % of all CPU time: steal alone */
} noise;

static noise noise_since(cpu_sample prev)
{
    noise n = {0, 0};
    cpu_sample now = cpu_sample_now();
    if (now.total <= prev.total) return n;
    double total = (double)(now.total - prev.total);
    double own = (double)(now.own_ns - prev.own_ns) * (double)sysconf(_SC_CLK_TCK) / 1e9;
    double other = (double)(now.busy - prev.busy) - own;
    n.elsewhere = other > 0 ? 100.0 * other / total : 0;
    n.steal = 100.0 * (double)(now.steal - prev.steal) / total;
    return n;
}

static bool only_has(const char *only, const char *name)
{
    if (!only) return true;
    size_t n = strlen(name);
    for (const char *s = only; *s;) {
        size_t len = strcspn(s, ",");
        if (len == n && strncmp(s, name, n) == 0) return true;
        s += len;
        if (*s == ',') s++;
    }
    return false;
}

static void fmt_reps(char *buf, size_t len, const double *v, unsigned n)
{
    size_t off = 0;
    buf[0] = 0;
    for (unsigned i = 0; i < n && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%.2f", i ? " " : "", v[i] / 1e6);
}

int main(int argc, char **argv)
{
    bench_params p = {.workers = 2,
                      .duration_ns = 2 * PYLON_NS_PER_SEC,
                      .burst = 32,
                      .pool_fanin = 128,
                      .pool_fanout = 4096};
    unsigned reps = 3, pairs = 1000, producers = 64, consumers = 1000;
    const char *only = NULL;
    bool run_ours = true, run_ref = true, quick = false, duration_set = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--workers")) {
            p.workers = parse_uint(a, v, 1, 1024), i++;
        } else if (!strcmp(a, "--quick")) {
            quick = true;
        } else if (!strcmp(a, "--duration")) {
            char *end;
            double d = v ? strtod(v, &end) : -1;
            if (!v || *end || !(d >= 0.01 && d <= 600)) {
                fprintf(stderr, "bench_engine: --duration wants seconds in [0.01, 600]\n");
                return 2;
            }
            p.duration_ns = (uint64_t)(d * 1e9);
            duration_set = true;
            i++;
        } else if (!strcmp(a, "--reps")) {
            reps = parse_uint(a, v, 1, MAX_REPS), i++;
        } else if (!strcmp(a, "--only")) {
            if (!v) return usage(stderr), 2;
            only = v, i++;
        } else if (!strcmp(a, "--engine")) {
            if (!v) return usage(stderr), 2;
            run_ours = !strcmp(v, "ours") || !strcmp(v, "both");
            run_ref = !strcmp(v, "ref") || !strcmp(v, "both");
            if (!run_ours && !run_ref) return usage(stderr), 2;
            i++;
        } else if (!strcmp(a, "--pairs")) {
            pairs = parse_uint(a, v, 1, 10000000), i++;
        } else if (!strcmp(a, "--producers")) {
            producers = parse_uint(a, v, 1, 100000), i++;
        } else if (!strcmp(a, "--consumers")) {
            consumers = parse_uint(a, v, 1, 10000000), i++;
        } else if (!strcmp(a, "--burst")) {
            p.burst = parse_uint(a, v, 1, 1000000), i++;
        } else if (!strcmp(a, "--verbose")) {
            p.verbose = true;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "bench_engine: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (quick && !duration_set) p.duration_ns = PYLON_NS_PER_SEC / 4;
    if (p.pool_fanin < p.burst * 4) p.pool_fanin = p.burst * 4;
    if (p.pool_fanout < p.burst * 4) p.pool_fanout = p.burst * 4;

    row rows[5];
    unsigned nrows = 0;
    static const unsigned pp_small[] = {1, 100};
    for (unsigned i = 0; i < 2; i++)
        if (pp_small[i] < pairs)
            rows[nrows++] =
                (row){"pingpong", "ping-pong pairs", pp_small[i], ours_pingpong, refq_pingpong};
    rows[nrows++] = (row){"pingpong", "ping-pong pairs", pairs, ours_pingpong, refq_pingpong};
    rows[nrows++] = (row){"fanin", "fan-in producers", producers, ours_fanin, refq_fanin};
    rows[nrows++] = (row){"fanout", "fan-out consumers", consumers, ours_fanout, refq_fanout};

    print_machine(&p, reps);
    printf("%-17s %7s | %-29s | %-29s | %-8s | %s\n", "workload", "size",
           "ours M msg/s: median [reps]", "ref M msg/s: median [reps]", "ours/ref",
           "busy elsewhere");
    printf("---------------------------------------------------------------------------------------"
           "-----------------------\n");
    fflush(stdout);

    uint64_t t_start = pylon_clock_now_ns();
    cpu_sample cs_start = cpu_sample_now();
    double worst_noise = 0;
    double pp_main_ours = -1;
    for (unsigned r = 0; r < nrows; r++) {
        if (!only_has(only, rows[r].workload)) continue;
        double ours[MAX_REPS], ref[MAX_REPS], row_noise = 0;
        for (unsigned k = 0; k < reps; k++) {
            bench_result res;
            /* Alternate the engines so that slow drifts of a noisy machine hit both alike. */
            for (int e = 0; e < 2; e++) {
                bool is_ours = (k % 2 == 0) ? e == 0 : e == 1;
                if (is_ours ? !run_ours : !run_ref) continue;
                memset(&res, 0, sizeof res);
                cpu_sample cs = cpu_sample_now();
                bool good = (is_ours ? rows[r].ours : rows[r].ref)(&p, rows[r].size, &res);
                noise nz = noise_since(cs);
                if (nz.elsewhere > row_noise) row_noise = nz.elsewhere;
                if (!good) {
                    fprintf(stderr, "bench_engine: %s %u on %s failed\n", rows[r].label,
                            rows[r].size, is_ours ? "ours" : "ref");
                    return 1; /* an engine that wedged cannot be torn down: stop here */
                }
                (is_ours ? ours : ref)[k] = res.rate;
                if (p.verbose)
                    printf("  [%s %s %u rep %u] %llu msgs in %.3f s (drain %.1f ms) = %.2f M/s; "
                           "runs %llu, delivered %llu, "
                           "steals %llu, sleeps %llu, msgs/run %.1f; CPU elsewhere %.0f%% (steal "
                           "%.0f%%)\n",
                           is_ours ? "ours" : "ref ", rows[r].label, rows[r].size, k + 1,
                           (unsigned long long)res.msgs, res.secs, res.drain_secs * 1e3,
                           res.rate / 1e6, (unsigned long long)res.runs,
                           (unsigned long long)res.delivered, (unsigned long long)res.steals,
                           (unsigned long long)res.sleeps,
                           res.runs ? (double)res.delivered / (double)res.runs : 0.0, nz.elsewhere,
                           nz.steal);
            }
        }
        char ob[128] = "-", rb[128] = "-", cell_o[160] = "-", cell_r[160] = "-", ratio[32] = "-";
        double mo = run_ours ? median(ours, reps) : 0, mr = run_ref ? median(ref, reps) : 0;
        if (run_ours) {
            fmt_reps(ob, sizeof ob, ours, reps);
            snprintf(cell_o, sizeof cell_o, "%7.2f [%s]", mo / 1e6, ob);
        }
        if (run_ref) {
            fmt_reps(rb, sizeof rb, ref, reps);
            snprintf(cell_r, sizeof cell_r, "%7.2f [%s]", mr / 1e6, rb);
        }
        if (run_ours && run_ref && mr > 0) snprintf(ratio, sizeof ratio, "%.2fx", mo / mr);
        printf("%-17s %7u | %-29s | %-29s | %-8s | %3.0f%%\n", rows[r].label, rows[r].size, cell_o,
               cell_r, ratio, row_noise);
        if (row_noise > worst_noise) worst_noise = row_noise;
        fflush(stdout);
        if (run_ours && !strcmp(rows[r].workload, "pingpong") && rows[r].size == pairs)
            pp_main_ours = mo;
    }
    noise all = noise_since(cs_start);
    printf("\ntotal time %.1f s. Busy elsewhere = share of the machine's CPU time used by other "
           "processes\n"
           "or stolen by the hypervisor (worst run of the row); this run: %.0f%% on average (steal "
           "%.0f%%),\n"
           "worst run %.0f%%. Rows above ~10%% measure the neighbours as much as the engines.\n",
           (double)(pylon_clock_now_ns() - t_start) / 1e9, all.elsewhere, all.steal, worst_noise);
    if (pp_main_ours >= 0 && p.workers == 2)
        printf("target: ping-pong %u pairs >= %.0f M msg/s on 2 workers: %.2f M msg/s: %s\n", pairs,
               PINGPONG_TARGET / 1e6, pp_main_ours / 1e6,
               pp_main_ours >= PINGPONG_TARGET ? "MET" : "MISSED");
    return 0;
}
