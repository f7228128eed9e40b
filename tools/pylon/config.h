/*
 * config.h — the server's configuration, read once from the environment and the command line.
 *
 * Owns: the list of PYLON_* variables, their defaults per mode (dev or serve), validation,
 * the refusal rules of DECISIONS.md §1, and printing the effective configuration. It reads the
 * environment only; nothing else in the server calls getenv.
 */
#ifndef PYLON_TOOLS_CONFIG_H
#define PYLON_TOOLS_CONFIG_H

#include "engine/log.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* TOOL: backup/restore read the same paths but no refusal rule applies (no server runs). */
typedef enum { PYLON_MODE_SERVE, PYLON_MODE_DEV, PYLON_MODE_TOOL } pylon_mode;

typedef struct pylon_config {
    pylon_mode mode;
    bool dev;             /* PYLON_DEV_MODE (pylon dev forces it on) */
    const char *host;     /* bind address: 127.0.0.1 in dev, 0.0.0.0 otherwise */
    int port;             /* PYLON_PORT / --port; +1 sync WS, +2 SSE, +3 shards */
    const char *data_dir; /* dev: .pylon */
    const char *db_path, *session_db, *jobs_db, *files_dir, *manifest;
    const char *admin_token;
    bool admin_token_generated; /* pylon dev made one up; printed once at start */
    const char *cors_origin, *csrf_origins;
    const char *ws_url, *sse_url, *shard_url;
    const char *shard_plugins;      /* PYLON_SHARD_PLUGINS */
    unsigned match_size;            /* PYLON_MATCH_SIZE */
    const char *replay_dir;         /* PYLON_REPLAY_DIR */
    unsigned shard_checkpoint_secs; /* PYLON_SHARD_CHECKPOINT_SECS; 0 = no checkpoints */
    const char *match_kind;         /* PYLON_MATCH_KIND */
    unsigned workers;
    unsigned read_pool;
    unsigned sqlite_mmap_mb; /* PYLON_SQLITE_MMAP_MB; 0 = SQLite reads with pread */
    unsigned drain_secs;
    int64_t changelog_retain; /* PYLON_CHANGELOG_RETAIN */
    unsigned write_queue_max; /* PYLON_WRITE_QUEUE_MAX: writes queued before 503 OVERLOADED */
    unsigned room_idle_secs;  /* PYLON_ROOM_IDLE_SECS */
    unsigned io_threads;
    unsigned rate_max, rate_window_s; /* per client IP; 0 = unlimited */
    unsigned trust_proxy_hops;
    uint64_t ws_max_frame, ws_max_backlog;
    unsigned max_conns_per_ip, max_stream_conns_per_ip;
    unsigned header_timeout_s, body_timeout_s, idle_timeout_s;
    /* Read and checked now, used by the features that land with the app backend. */
    int email_provider; /* PYLON_EMAIL_PROVIDER: index into pylon_email_providers, -1 unset */
    const char *email_api_key, *email_from, *email_http_url;
    int files_provider; /* PYLON_FILES_PROVIDER: 0 local, 1 stack0 */
    const char *stack0_api_key, *stack0_folder, *files_url_prefix;
    const char *cookie_domain, *cookie_name;
    int cookie_samesite; /* 0 lax, 1 strict, 2 none */
    bool cookie_secure;
    const char *oauth_google_client_id, *oauth_github_client_id;
    pylon_log_format log_format;
    pylon_log_level log_level;
    char generated_token_[65];
    char paths_[4][1024];
} pylon_config;

extern const char *const pylon_email_providers[]; /* stack0, sendgrid, resend, webhook */

/* Reads everything. On a bad value or a refusal rule, returns false with one line in `err`
 * that names the variable and the fix. `port_flag` is --port's text or NULL. */
bool pylon_config_load(pylon_config *cfg, pylon_mode mode, const char *port_flag, char *err,
                       size_t errlen);

/* The effective configuration, one `name = value` per line; secrets are masked. */
void pylon_config_print(const pylon_config *cfg, FILE *out);

#endif
