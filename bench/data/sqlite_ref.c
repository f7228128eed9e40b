/*
 * sqlite_ref.c — bench_data_sqlite: the reference for the insert benchmark. Inserts the rows
 * the HTTP benchmark inserts (same table as pylon creates for bench.manifest.json, same
 * 40-hex id format, same values) straight into SQLite, in WAL mode with synchronous=NORMAL
 * (pylon's own settings), from one thread with one prepared statement:
 *
 *   --batch 1     one transaction per row (BEGIN IMMEDIATE; INSERT; COMMIT)
 *   --batch 100   100 rows per transaction
 *   --sql-text    each row as its own SQL text through sqlite3_exec (parsed and planned per
 *                 row) instead of the prepared statement: the way a simple program inserts, and
 *                 how raw SQLite reaches the ~66 000 rows/s in 100-row batches that the data
 *                 issue quotes for this machine (the prepared statement does 3x that here)
 *
 * Runs for --duration seconds and prints: batch=100 rows=N secs=S rps=X
 * Usage: bench_data_sqlite --db PATH [--batch N] [--duration S] [--sql-text]
 */
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void check(sqlite3 *db, int rc, const char *what)
{
    if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW) return;
    fprintf(stderr, "bench_data_sqlite: %s: %s\n", what, sqlite3_errmsg(db));
    exit(1);
}

static void exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "bench_data_sqlite: %s: %s\n", sql, msg ? msg : "?");
        exit(1);
    }
}

/* pylon's id: 32 hex digits of Unix-epoch nanoseconds, then an 8-hex counter. */
static void new_id(char out[41], uint32_t counter)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    snprintf(out, 41, "0000000000000000%016llx%08x", (unsigned long long)ns, counter);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int batch = 1;
    double duration = 5;
    bool sql_text = false;
    for (int i = 1; i < argc; i += 2) {
        if (strcmp(argv[i], "--sql-text") == 0) {
            sql_text = true;
            i--;
        } else if (i + 1 >= argc)
            path = NULL, i = argc;
        else if (strcmp(argv[i], "--db") == 0)
            path = argv[i + 1];
        else if (strcmp(argv[i], "--batch") == 0)
            batch = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--duration") == 0)
            duration = atof(argv[i + 1]);
        else
            path = NULL, i = argc;
    }
    if (!path || batch < 1 || duration <= 0) {
        fprintf(stderr,
                "usage: bench_data_sqlite --db PATH [--batch N] [--duration S] [--sql-text]\n");
        return 64;
    }
    sqlite3 *db = NULL;
    check(db,
          sqlite3_open_v2(path, &db,
                          SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL),
          "open");
    exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536;"
             "PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint=1000;");
    exec(db, "CREATE TABLE IF NOT EXISTS \"Item\" (id TEXT PRIMARY KEY NOT NULL, \"label\" TEXT "
             "NOT NULL, "
             "\"n\" INTEGER NOT NULL, \"done\" INTEGER)");
    sqlite3_stmt *ins = NULL, *begin = NULL, *commit = NULL;
    check(db,
          sqlite3_prepare_v2(
              db, "INSERT INTO \"Item\" (\"id\", \"label\", \"n\", \"done\") VALUES (?, ?, ?, ?)",
              -1, &ins, NULL),
          "prepare");
    check(db, sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &begin, NULL), "prepare");
    check(db, sqlite3_prepare_v2(db, "COMMIT", -1, &commit, NULL), "prepare");

    uint64_t t0 = mono_ns(), end = t0 + (uint64_t)(duration * 1e9), rows = 0;
    uint32_t counter = 0;
    char id[41], label[64], sql[256];
    while (mono_ns() < end) {
        check(db, sqlite3_step(begin), "begin");
        sqlite3_reset(begin);
        for (int k = 0; k < batch; k++, rows++) {
            new_id(id, counter++);
            int ll = snprintf(label, sizeof label, "bench row %llu", (unsigned long long)rows);
            if (sql_text) { /* id and label are hex and "bench row N": nothing to escape */
                snprintf(sql, sizeof sql,
                         "INSERT INTO \"Item\" (\"id\", \"label\", \"n\", \"done\") VALUES "
                         "('%s', '%s', %llu, %d)",
                         id, label, (unsigned long long)rows, (int)(rows & 1));
                exec(db, sql);
                continue;
            }
            sqlite3_bind_text(ins, 1, id, 40, SQLITE_TRANSIENT);
            sqlite3_bind_text(ins, 2, label, ll, SQLITE_TRANSIENT);
            sqlite3_bind_int64(ins, 3, (sqlite3_int64)rows);
            sqlite3_bind_int(ins, 4, (int)(rows & 1));
            check(db, sqlite3_step(ins), "insert");
            sqlite3_reset(ins);
        }
        check(db, sqlite3_step(commit), "commit");
        sqlite3_reset(commit);
    }
    double secs = (double)(mono_ns() - t0) / 1e9;
    /* CPU per row: the figure least moved by the VM's neighbours (wall time is not). */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
                 ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
    printf("batch=%d%s rows=%llu secs=%.2f rps=%.1f cpu_us=%.2f\n", batch,
           sql_text ? " sql-text" : "", (unsigned long long)rows, secs, (double)rows / secs,
           rows ? cpu * 1e6 / (double)rows : 0.0);
    sqlite3_finalize(ins);
    sqlite3_finalize(begin);
    sqlite3_finalize(commit);
    sqlite3_close(db);
    return 0;
}
