/* backup.c — see backup.h. */
#include "backup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Copies database `from` into `to` with the online backup API, all pages in one step: one read
 * transaction, so the copy is a consistent snapshot. In WAL mode that read blocks no writer (the
 * server goes on committing; only a checkpoint waits for it to end). Copying in several steps
 * instead restarts the copy whenever another connection commits between two steps, so under a
 * steady writer a database larger than one step never finished. Returns 0, 1 when `from` does
 * not exist, -1 on error. */
static int copy_db(const char *from, const char *to, char *err, size_t errlen)
{
    struct stat st;
    if (strcmp(from, ":memory:") == 0 || stat(from, &st) != 0) return 1;
    sqlite3 *src = NULL, *dst = NULL;
    int rc = sqlite3_open_v2(from, &src, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_open_v2(to, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(src, 5000);
        sqlite3_busy_timeout(dst, 5000);
        sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
        if (!b) {
            rc = sqlite3_errcode(dst);
        } else {
            do {
                rc = sqlite3_backup_step(b, -1);
                if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) sqlite3_sleep(10);
            } while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
            rc = sqlite3_backup_finish(b);
        }
    }
    if (rc == SQLITE_OK) { /* a bundle file stands alone: no WAL next to it */
        rc = sqlite3_exec(dst, "PRAGMA journal_mode=DELETE;", NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK)
        snprintf(err, errlen, "copying %s to %s: %s", from, to,
                 dst ? sqlite3_errmsg(dst) : sqlite3_errstr(rc));
    sqlite3_close(src);
    sqlite3_close(dst);
    return rc == SQLITE_OK ? 0 : -1;
}

static int copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) return errno == ENOENT ? 1 : -1;
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        close(in);
        return -1;
    }
    char buf[65536];
    ssize_t n;
    int rc = 0;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)n) != n) rc = -1;
    if (n < 0) rc = -1;
    if (fsync(out) != 0) rc = -1;
    close(in);
    close(out);
    return rc;
}

/* Recursive copy of a directory tree; returns the number of files, or -1. */
static long copy_tree(const char *from, const char *to)
{
    DIR *d = opendir(from);
    if (!d) return errno == ENOENT ? 0 : -1;
    if (mkdir(to, 0755) != 0 && errno != EEXIST) {
        closedir(d);
        return -1;
    }
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n >= 0) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char a[PATH_MAX], b[PATH_MAX];
        snprintf(a, sizeof a, "%s/%s", from, e->d_name);
        snprintf(b, sizeof b, "%s/%s", to, e->d_name);
        struct stat st;
        if (lstat(a, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            long k = copy_tree(a, b);
            n = k < 0 ? -1 : n + k;
        } else if (S_ISREG(st.st_mode)) {
            n = copy_file(a, b) == 0 ? n + 1 : -1;
        }
    }
    closedir(d);
    return n;
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(path);
}

static bool mkdirs(const char *dir)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return false;
        *p = '/';
    }
    return mkdir(tmp, 0755) == 0 || errno == EEXIST;
}

typedef struct part {
    const char *what, *bundle_name;
    const char *live;
} part;

int pylon_backup_run(const pylon_config *cfg, const char *dir, bool json)
{
    if (!mkdirs(dir)) {
        fprintf(stderr, "pylon backup: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    char path[PATH_MAX], err[512];
    snprintf(path, sizeof path, "%s/VERSION", dir);
    FILE *v = fopen(path, "w");
    if (!v || fputs(PYLON_VERSION, v) < 0 || fclose(v) != 0) {
        fprintf(stderr, "pylon backup: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    const part dbs[] = {{"data", "pylon.db", cfg->db_path},
                        {"sessions", "sessions.db", cfg->session_db},
                        {"jobs", "jobs.db", cfg->jobs_db}};
    bool have[3] = {false};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, dbs[i].bundle_name);
        unlink(path); /* a fresh copy, never merged into an old one */
        int rc = copy_db(dbs[i].live, path, err, sizeof err);
        if (rc < 0) {
            fprintf(stderr, "pylon backup: %s\n", err);
            return 1;
        }
        have[i] = rc == 0;
        if (!json) printf("%-9s %s\n", dbs[i].what, have[i] ? dbs[i].live : "(none, skipped)");
    }
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    int mrc = copy_file(cfg->manifest, path);
    if (mrc < 0) {
        fprintf(stderr, "pylon backup: cannot copy %s: %s\n", cfg->manifest, strerror(errno));
        return 1;
    }
    snprintf(path, sizeof path, "%s/uploads", dir);
    remove_tree(path);
    long files = copy_tree(cfg->files_dir, path);
    if (files < 0) {
        fprintf(stderr, "pylon backup: cannot copy %s: %s\n", cfg->files_dir, strerror(errno));
        return 1;
    }
    if (json)
        printf("{\"ok\":true,\"target\":\"%s\",\"db\":%s,\"sessions\":%s,\"jobs\":%s,"
               "\"manifest\":%s,\"uploaded_files\":%ld}\n",
               dir, have[0] ? "true" : "false", have[1] ? "true" : "false",
               have[2] ? "true" : "false", mrc == 0 ? "true" : "false", files);
    else
        printf("manifest  %s\nuploads   %ld file(s)\nbackup written to %s\n",
               mrc == 0 ? cfg->manifest : "(none, skipped)", files, dir);
    return 0;
}

int pylon_restore_run(const pylon_config *cfg, const char *dir, bool yes, bool json)
{
    struct stat st;
    char path[PATH_MAX], err[512];
    snprintf(path, sizeof path, "%s/VERSION", dir);
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || stat(path, &st) != 0) {
        fprintf(stderr,
                "pylon restore: %s is not a backup made by `pylon backup` (no VERSION "
                "file)\n",
                dir);
        return 1;
    }
    if (!yes) {
        fprintf(stderr,
                "This replaces %s, its sessions, jobs, manifest and uploads with the "
                "backup in %s. Stop the server first. Continue? [y/N] ",
                cfg->db_path, dir);
        char answer[16] = "";
        if (!fgets(answer, sizeof answer, stdin) ||
            (strcmp(answer, "y\n") != 0 && strcmp(answer, "yes\n") != 0)) {
            fprintf(stderr, "restore cancelled\n");
            return 0;
        }
    }
    const part dbs[] = {{"data", "pylon.db", cfg->db_path},
                        {"sessions", "sessions.db", cfg->session_db},
                        {"jobs", "jobs.db", cfg->jobs_db}};
    int restored = 0;
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, dbs[i].bundle_name);
        if (stat(path, &st) != 0 || strcmp(dbs[i].live, ":memory:") == 0) continue;
        char dirc[PATH_MAX];
        snprintf(dirc, sizeof dirc, "%s", dbs[i].live);
        char *slash = strrchr(dirc, '/');
        if (slash) {
            *slash = '\0';
            mkdirs(dirc);
        }
        /* Copied beside the live file first: a failed copy leaves the live database as it
         * was. Then the old database and its WAL go entirely (the restored one must not replay
         * them) and the copy takes its name. */
        char side[PATH_MAX], tmp[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s.restoring", dbs[i].live);
        unlink(tmp);
        if (copy_db(path, tmp, err, sizeof err) != 0) {
            unlink(tmp);
            fprintf(stderr, "pylon restore: %s (%s left as it was)\n", err, dbs[i].live);
            return 1;
        }
        snprintf(side, sizeof side, "%s-wal", dbs[i].live);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", dbs[i].live);
        unlink(side);
        if (rename(tmp, dbs[i].live) != 0) {
            fprintf(stderr, "pylon restore: renaming %s to %s: %s\n", tmp, dbs[i].live,
                    strerror(errno));
            return 1;
        }
        restored++;
        if (!json) printf("%-9s -> %s\n", dbs[i].what, dbs[i].live);
    }
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    bool manifest = stat(path, &st) == 0 && copy_file(path, cfg->manifest) == 0;
    snprintf(path, sizeof path, "%s/uploads", dir);
    long files = 0;
    if (stat(path, &st) == 0) {
        remove_tree(cfg->files_dir);
        files = copy_tree(path, cfg->files_dir);
    }
    if (json)
        printf("{\"ok\":true,\"source\":\"%s\",\"databases\":%d,\"manifest\":%s,"
               "\"restored_files\":%ld}\n",
               dir, restored, manifest ? "true" : "false", files);
    else
        printf("manifest  %s\nuploads   %ld file(s)\nrestored from %s\n",
               manifest ? cfg->manifest : "(not in the backup)", files, dir);
    return files < 0 ? 1 : 0;
}
