/* config.c — see config.h. */
#include "config.h"

#include "engine/env.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MIN_ADMIN_TOKEN_BYTES 32

/* 32 random bytes as 64 hex characters, from the kernel's generator. */
static bool random_hex_token(char out[65])
{
    unsigned char raw[32];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t n = read(fd, raw, sizeof raw);
    close(fd);
    if (n != (ssize_t)sizeof raw) return false;
    for (size_t i = 0; i < sizeof raw; i++) snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return true;
}

/* `var`'s value, else dir/file (or base + suffix) built in one of cfg's path slots. NULL when
 * the built path would not fit. */
static const char *path_default(pylon_config *cfg, int slot, const char *var, const char *a,
                                const char *sep, const char *b)
{
    const char *v = pylon_env_get(var);
    if (v) return v;
    int n = snprintf(cfg->paths_[slot], sizeof cfg->paths_[slot], "%s%s%s", a ? a : "",
                     a ? sep : "", b);
    return n >= 0 && (size_t)n < sizeof cfg->paths_[slot] ? cfg->paths_[slot] : NULL;
}

bool pylon_config_load(pylon_config *cfg, pylon_mode mode, const char *port_flag, char *err,
                       size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    pylon_env_error e = {{0}};
    cfg->mode = mode;

    bool dev = false;
    if (!pylon_env_bool("PYLON_DEV_MODE", false, &dev, &e)) goto bad;
    cfg->dev = mode == PYLON_MODE_DEV || dev;
    cfg->host = cfg->dev && mode == PYLON_MODE_DEV ? "127.0.0.1" : "0.0.0.0";

    int64_t v;
    if (port_flag) {
        if (!pylon_parse_int("--port", port_flag, 1, 65532, &v, &e)) goto bad;
    } else if (!pylon_env_int("PYLON_PORT", 4321, 1, 65532, &v, &e)) {
        goto bad;
    }
    cfg->port = (int)v; /* at most 65532: the three transport ports above it must exist too */

    cfg->data_dir = mode == PYLON_MODE_DEV ? ".pylon" : NULL;
    cfg->db_path = path_default(cfg, 0, "PYLON_DB_PATH", cfg->data_dir, "/", "pylon.db");
    if (!cfg->db_path) cfg->db_path = "pylon.db"; /* unreachable: the data dir is short */
    cfg->session_db = path_default(cfg, 1, "PYLON_SESSION_DB", cfg->db_path, "", ".sessions.db");
    cfg->jobs_db = path_default(cfg, 2, "PYLON_JOBS_DB", cfg->db_path, "", ".jobs.db");
    cfg->files_dir = path_default(cfg, 3, "PYLON_FILES_DIR", cfg->data_dir, "/", "uploads");
    if (!cfg->session_db || !cfg->jobs_db || !cfg->files_dir) {
        snprintf(err, errlen, "PYLON_DB_PATH is too long (%zu bytes): use a path under %zu bytes",
                 strlen(cfg->db_path), sizeof cfg->paths_[0] - 16);
        return false;
    }
    cfg->manifest = pylon_env_str("PYLON_MANIFEST", "pylon.manifest.json");

    cfg->admin_token = pylon_env_get("PYLON_ADMIN_TOKEN");
    cfg->cors_origin = pylon_env_get("PYLON_CORS_ORIGIN");
    cfg->csrf_origins = pylon_env_get("PYLON_CSRF_ORIGINS");
    cfg->ws_url = pylon_env_get("PYLON_WS_URL");
    cfg->sse_url = pylon_env_get("PYLON_SSE_URL");
    cfg->shard_url = pylon_env_get("PYLON_SHARD_URL");

    if (!pylon_env_int("PYLON_WORKERS", 0, 0, 256, &v, &e)) goto bad;
    cfg->workers = (unsigned)v; /* 0: one per core */
    if (!pylon_env_int("PYLON_READ_POOL", 4, 1, 64, &v, &e)) goto bad;
    cfg->read_pool = (unsigned)v;
    if (!pylon_env_int("PYLON_DRAIN_SECS", 30, 0, 3600, &v, &e)) goto bad;
    cfg->drain_secs = (unsigned)v;

    if (!pylon_env_int("PYLON_IO_THREADS", 1, 1, 64, &v, &e)) goto bad;
    cfg->io_threads = (unsigned)v;
    /* The original's quirk kept on purpose: the generous limit applies in dev. */
    if (!pylon_env_int("PYLON_RATE_LIMIT_MAX", cfg->dev ? 100000 : 600, 0, 100000000, &v, &e))
        goto bad;
    cfg->rate_max = (unsigned)v;
    if (!pylon_env_int("PYLON_RATE_LIMIT_WINDOW", 60, 1, 86400, &v, &e)) goto bad;
    cfg->rate_window_s = (unsigned)v;
    if (!pylon_env_int("PYLON_TRUST_PROXY_HOPS", 0, 0, 16, &v, &e)) goto bad;
    cfg->trust_proxy_hops = (unsigned)v;
    if (!pylon_env_size("PYLON_WS_MAX_FRAME", 16u << 20, 125, 1u << 30, &cfg->ws_max_frame, &e))
        goto bad;
    if (!pylon_env_size("PYLON_WS_MAX_BACKLOG", 4u << 20, 4096, 1u << 30, &cfg->ws_max_backlog,
                        &e))
        goto bad;
    if (!pylon_env_int("PYLON_MAX_CONNS_PER_IP", 1024, 0, 1000000, &v, &e)) goto bad;
    cfg->max_conns_per_ip = (unsigned)v;
    if (!pylon_env_int("PYLON_MAX_STREAMS_PER_IP", 64, 0, 1000000, &v, &e)) goto bad;
    cfg->max_stream_conns_per_ip = (unsigned)v;
    if (!pylon_env_int("PYLON_HEADER_TIMEOUT_SECS", 10, 1, 3600, &v, &e)) goto bad;
    cfg->header_timeout_s = (unsigned)v;
    if (!pylon_env_int("PYLON_BODY_TIMEOUT_SECS", 30, 1, 3600, &v, &e)) goto bad;
    cfg->body_timeout_s = (unsigned)v;
    if (!pylon_env_int("PYLON_IDLE_TIMEOUT_SECS", 60, 1, 86400, &v, &e)) goto bad;
    cfg->idle_timeout_s = (unsigned)v;

    static const char *const formats[] = {"text", "json", NULL};
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    int choice;
    if (!pylon_env_enum("PYLON_LOG_FORMAT", 0, formats, &choice, &e)) goto bad;
    cfg->log_format = choice == 1 ? PYLON_LOG_JSON : PYLON_LOG_TEXT;
    if (!pylon_env_enum("PYLON_LOG_LEVEL", 1, levels, &choice, &e)) goto bad;
    cfg->log_level = (pylon_log_level)choice;

    /* Refusal rules (DECISIONS.md §1). */
    if (!cfg->dev) {
        if (!cfg->cors_origin) {
            snprintf(err, errlen,
                     "PYLON_CORS_ORIGIN is not set: production needs the exact origin of your app, "
                     "e.g. PYLON_CORS_ORIGIN=https://your-app.com");
            return false;
        }
        if (strcmp(cfg->cors_origin, "*") == 0) {
            snprintf(err, errlen,
                     "PYLON_CORS_ORIGIN=* is refused outside dev mode: set it to your app's "
                     "origin, e.g. PYLON_CORS_ORIGIN=https://your-app.com");
            return false;
        }
    }
    if (!cfg->admin_token && mode == PYLON_MODE_SERVE) {
        snprintf(err, errlen,
                 "PYLON_ADMIN_TOKEN is not set: `pylon serve` needs one (even with "
                 "PYLON_DEV_MODE=true); generate it with `openssl rand -hex 32`");
        return false;
    }
    if (cfg->admin_token && !cfg->dev && strlen(cfg->admin_token) < MIN_ADMIN_TOKEN_BYTES) {
        snprintf(err, errlen,
                 "PYLON_ADMIN_TOKEN is too short (%zu bytes, at least %d outside dev mode): "
                 "generate one with `openssl rand -hex 32`",
                 strlen(cfg->admin_token), MIN_ADMIN_TOKEN_BYTES);
        return false;
    }
    if (!cfg->admin_token) { /* pylon dev only */
        if (!random_hex_token(cfg->generated_token_)) {
            snprintf(err, errlen, "cannot read /dev/urandom to generate PYLON_ADMIN_TOKEN: set "
                                  "PYLON_ADMIN_TOKEN yourself");
            return false;
        }
        cfg->admin_token = cfg->generated_token_;
        cfg->admin_token_generated = true;
    }
    return true;

bad:
    snprintf(err, errlen, "%s", e.msg);
    return false;
}

static const char *or_unset(const char *s)
{
    return s ? s : "(unset)";
}

void pylon_config_print(const pylon_config *cfg, FILE *out)
{
    fprintf(out, "mode               = %s\n", cfg->mode == PYLON_MODE_DEV ? "dev" : "serve");
    fprintf(out, "PYLON_DEV_MODE     = %s\n", cfg->dev ? "true" : "false");
    fprintf(out, "listen             = %s:%d (sync WS %d, SSE %d, shards %d)\n", cfg->host,
            cfg->port, cfg->port + 1, cfg->port + 2, cfg->port + 3);
    fprintf(out, "PYLON_DB_PATH      = %s\n", cfg->db_path);
    fprintf(out, "PYLON_SESSION_DB   = %s\n", cfg->session_db);
    fprintf(out, "PYLON_JOBS_DB      = %s\n", cfg->jobs_db);
    fprintf(out, "PYLON_FILES_DIR    = %s\n", cfg->files_dir);
    fprintf(out, "PYLON_MANIFEST     = %s\n", cfg->manifest);
    fprintf(out, "PYLON_ADMIN_TOKEN  = %s\n",
            cfg->admin_token_generated ? "(generated, printed below)" : "(set, hidden)");
    fprintf(out, "PYLON_CORS_ORIGIN  = %s\n", cfg->dev && !cfg->cors_origin ? "* (dev)"
                                                                            : or_unset(cfg->cors_origin));
    fprintf(out, "PYLON_CSRF_ORIGINS = %s\n", or_unset(cfg->csrf_origins));
    fprintf(out, "PYLON_WS_URL       = %s\n", or_unset(cfg->ws_url));
    if (cfg->workers)
        fprintf(out, "PYLON_WORKERS      = %u\n", cfg->workers);
    else
        fprintf(out, "PYLON_WORKERS      = one per core\n");
    fprintf(out, "PYLON_READ_POOL    = %u\n", cfg->read_pool);
    fprintf(out, "PYLON_DRAIN_SECS   = %u\n", cfg->drain_secs);
    fprintf(out, "PYLON_IO_THREADS   = %u\n", cfg->io_threads);
    fprintf(out, "PYLON_RATE_LIMIT   = %u per %u s per IP\n", cfg->rate_max, cfg->rate_window_s);
    fprintf(out, "PYLON_WS_MAX_FRAME = %llu bytes\n", (unsigned long long)cfg->ws_max_frame);
    fprintf(out, "PYLON_LOG_FORMAT   = %s\n", cfg->log_format == PYLON_LOG_JSON ? "json" : "text");
    fprintf(out, "PYLON_LOG_LEVEL    = %s\n", pylon_log_level_name(cfg->log_level));
}
