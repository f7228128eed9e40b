/* config.c — see config.h. */
#include "config.h"

#include "engine/env.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MIN_ADMIN_TOKEN_BYTES 32

const char *const pylon_email_providers[] = {"stack0", "sendgrid", "resend", "webhook", NULL};

/* A value that goes into a response header must not be able to end it. */
static bool header_safe(const char *v)
{
    for (; *v; v++)
        if ((unsigned char)*v < 0x20 || *v == 0x7f) return false;
    return true;
}

static bool has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

/* 32 random bytes as 64 hex characters, from the kernel's generator. */
static bool random_hex_token(char out[65])
{
    unsigned char raw[32];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t n = read(fd, raw, sizeof raw);
    close(fd);
    if (n != (ssize_t)sizeof raw) return false;
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
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
    /* backup/restore next to a `pylon dev` project: its data lives under .pylon/. */
    if (mode == PYLON_MODE_TOOL && !pylon_env_get("PYLON_DB_PATH") &&
        access("pylon.db", F_OK) != 0 && access(".pylon/pylon.db", F_OK) == 0)
        cfg->data_dir = ".pylon";
    cfg->db_path = path_default(cfg, 0, "PYLON_DB_PATH", cfg->data_dir, "/", "pylon.db");
    if (!cfg->db_path) cfg->db_path = "pylon.db"; /* unreachable: the data dir is short */
    /* An in-memory data database keeps everything in memory (no "<:memory:>.sessions.db"). */
    bool memory = strcmp(cfg->db_path, ":memory:") == 0;
    cfg->session_db =
        memory ? pylon_env_str("PYLON_SESSION_DB", ":memory:")
               : path_default(cfg, 1, "PYLON_SESSION_DB", cfg->db_path, "", ".sessions.db");
    cfg->jobs_db = memory ? pylon_env_str("PYLON_JOBS_DB", ":memory:")
                          : path_default(cfg, 2, "PYLON_JOBS_DB", cfg->db_path, "", ".jobs.db");
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
    cfg->shard_plugins = pylon_env_get("PYLON_SHARD_PLUGINS");
    cfg->match_kind = pylon_env_str("PYLON_MATCH_KIND", "arena");
    cfg->replay_dir =
        pylon_env_str("PYLON_REPLAY_DIR", mode == PYLON_MODE_DEV ? ".pylon/replays" : "replays");

    if (!pylon_env_int("PYLON_WORKERS", 0, 0, 256, &v, &e)) goto bad;
    cfg->workers = (unsigned)v; /* 0: one per core */
    if (!pylon_env_int("PYLON_READ_POOL", 4, 1, 64, &v, &e)) goto bad;
    cfg->read_pool = (unsigned)v;
    if (!pylon_env_int("PYLON_SQLITE_MMAP_MB", 256, 0, 1 << 20, &v, &e)) goto bad;
    cfg->sqlite_mmap_mb = (unsigned)v;
    if (!pylon_env_int("PYLON_DRAIN_SECS", 30, 0, 3600, &v, &e)) goto bad;
    cfg->drain_secs = (unsigned)v;

    if (!pylon_env_int("PYLON_MATCH_SIZE", 2, 1, 64, &v, &e)) goto bad;
    cfg->match_size = (unsigned)v;
    if (!pylon_env_int("PYLON_SHARD_CHECKPOINT_SECS", 30, 0, 86400, &v, &e)) goto bad;
    cfg->shard_checkpoint_secs = (unsigned)v;
    if (!pylon_env_int("PYLON_CHANGELOG_RETAIN", 100000, 1, 1000000000, &v, &e)) goto bad;
    cfg->changelog_retain = v;
    if (!pylon_env_int("PYLON_WRITE_QUEUE_MAX", 20000, 1, 1000000, &v, &e)) goto bad;
    cfg->write_queue_max = (unsigned)v;
    if (!pylon_env_int("PYLON_ROOM_IDLE_SECS", 120, 1, 86400, &v, &e)) goto bad;
    cfg->room_idle_secs = (unsigned)v;
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
    if (!pylon_env_size("PYLON_WS_MAX_BACKLOG", 4u << 20, 4096, 1u << 30, &cfg->ws_max_backlog, &e))
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

    /* The rest of the deployment page's variables: checked now, whatever uses them later. */
    if (pylon_env_get("PYLON_EMAIL_PROVIDER")) {
        if (!pylon_env_enum("PYLON_EMAIL_PROVIDER", 0, pylon_email_providers, &choice, &e))
            goto bad;
        cfg->email_provider = choice;
    } else {
        cfg->email_provider = -1;
    }
    cfg->email_api_key = pylon_env_get("PYLON_EMAIL_API_KEY");
    cfg->email_from = pylon_env_get("PYLON_EMAIL_FROM");
    cfg->email_http_url = pylon_env_get("PYLON_EMAIL_HTTP_URL");
    if (!cfg->email_http_url) cfg->email_http_url = pylon_env_get("PYLON_EMAIL_ENDPOINT");
    if (cfg->email_provider == 3 && !cfg->email_http_url) {
        snprintf(err, errlen,
                 "PYLON_EMAIL_PROVIDER=webhook needs PYLON_EMAIL_HTTP_URL (the URL "
                 "that receives each email as a JSON POST)");
        return false;
    }
    if (cfg->email_http_url && !has_prefix(cfg->email_http_url, "http://") &&
        !has_prefix(cfg->email_http_url, "https://")) {
        snprintf(err, errlen,
                 "PYLON_EMAIL_HTTP_URL=\"%.80s\" is not valid: expected an http:// "
                 "or https:// URL",
                 cfg->email_http_url);
        return false;
    }
    if (cfg->email_provider >= 0 && cfg->email_provider != 3 && !cfg->email_api_key) {
        snprintf(err, errlen,
                 "PYLON_EMAIL_PROVIDER=%s needs PYLON_EMAIL_API_KEY (the provider's "
                 "API key)",
                 pylon_email_providers[cfg->email_provider]);
        return false;
    }
    if (cfg->email_from && !strchr(cfg->email_from, '@')) {
        snprintf(err, errlen,
                 "PYLON_EMAIL_FROM=\"%.80s\" is not valid: expected an email "
                 "address such as noreply@yourdomain.com",
                 cfg->email_from);
        return false;
    }
    static const char *const files_providers[] = {"local", "stack0", NULL};
    if (!pylon_env_enum("PYLON_FILES_PROVIDER", 0, files_providers, &choice, &e)) goto bad;
    cfg->files_provider = choice;
    cfg->stack0_api_key = pylon_env_get("PYLON_STACK0_API_KEY");
    cfg->stack0_folder = pylon_env_get("PYLON_STACK0_FOLDER");
    if (cfg->files_provider == 1 && !cfg->stack0_api_key) {
        snprintf(err, errlen,
                 "PYLON_FILES_PROVIDER=stack0 needs PYLON_STACK0_API_KEY (your "
                 "Stack0 API key)");
        return false;
    }
    cfg->files_url_prefix = pylon_env_str("PYLON_FILES_URL_PREFIX", "/api/files");
    if (cfg->files_url_prefix[0] != '/') {
        snprintf(err, errlen,
                 "PYLON_FILES_URL_PREFIX=\"%.80s\" is not valid: expected a path "
                 "starting with /, e.g. /api/files",
                 cfg->files_url_prefix);
        return false;
    }
    cfg->cookie_domain = pylon_env_get("PYLON_COOKIE_DOMAIN");
    cfg->cookie_name = pylon_env_get("PYLON_COOKIE_NAME");
    static const char *const samesite[] = {"lax", "strict", "none", NULL};
    /* The deployment page spells it PYLON_COOKIE_SAMESITE, the original PYLON_COOKIE_SAME_SITE. */
    const char *ss_var =
        pylon_env_get("PYLON_COOKIE_SAMESITE") ? "PYLON_COOKIE_SAMESITE" : "PYLON_COOKIE_SAME_SITE";
    if (!pylon_env_enum(ss_var, 0, samesite, &choice, &e)) goto bad;
    cfg->cookie_samesite = choice;
    if (!pylon_env_bool("PYLON_COOKIE_SECURE", !cfg->dev, &cfg->cookie_secure, &e)) goto bad;
    if (cfg->cookie_samesite == 2 && !cfg->cookie_secure && pylon_env_get("PYLON_COOKIE_SECURE")) {
        snprintf(err, errlen,
                 "PYLON_COOKIE_SAMESITE=none needs PYLON_COOKIE_SECURE=true "
                 "(browsers drop SameSite=None cookies that are not Secure)");
        return false;
    }
    if (cfg->cookie_samesite == 2) cfg->cookie_secure = true;
    cfg->oauth_google_client_id = pylon_env_get("PYLON_OAUTH_GOOGLE_CLIENT_ID");
    cfg->oauth_github_client_id = pylon_env_get("PYLON_OAUTH_GITHUB_CLIENT_ID");
    const struct {
        const char *var;
        const char *const *value;
        bool http; /* http(s) rather than ws(s) */
    } urls[] = {{"PYLON_WS_URL", &cfg->ws_url, false},
                {"PYLON_SHARD_URL", &cfg->shard_url, false},
                {"PYLON_SSE_URL", &cfg->sse_url, true}};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        const char *u = *urls[i].value;
        if (!u) continue;
        bool ok = urls[i].http ? has_prefix(u, "http://") || has_prefix(u, "https://")
                               : has_prefix(u, "ws://") || has_prefix(u, "wss://");
        if (!ok || !header_safe(u) || strchr(u, '"')) {
            snprintf(err, errlen, "%s=\"%.80s\" is not valid: expected a %s URL, e.g. %s",
                     urls[i].var, u, urls[i].http ? "http:// or https://" : "ws:// or wss://",
                     urls[i].http ? "https://your-app.com/events" : "wss://your-app.com/ws");
            return false;
        }
    }
    static const char *const header_vars[] = {"PYLON_CORS_ORIGIN", "PYLON_CSRF_ORIGINS",
                                              "PYLON_COOKIE_DOMAIN", NULL};
    for (int i = 0; header_vars[i]; i++) {
        const char *hv = pylon_env_get(header_vars[i]);
        if (hv && !header_safe(hv)) {
            snprintf(err, errlen,
                     "%s contains control characters: it is sent in HTTP headers, "
                     "so it must be plain text such as https://your-app.com",
                     header_vars[i]);
            return false;
        }
    }

    if (mode == PYLON_MODE_TOOL) return true;

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
            snprintf(err, errlen,
                     "cannot read /dev/urandom to generate PYLON_ADMIN_TOKEN: set "
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
    fprintf(out, "PYLON_CORS_ORIGIN  = %s\n",
            cfg->dev && !cfg->cors_origin ? "* (dev)" : or_unset(cfg->cors_origin));
    fprintf(out, "PYLON_CSRF_ORIGINS = %s\n", or_unset(cfg->csrf_origins));
    fprintf(out, "PYLON_WS_URL       = %s\n", or_unset(cfg->ws_url));
    if (cfg->workers)
        fprintf(out, "PYLON_WORKERS      = %u\n", cfg->workers);
    else
        fprintf(out, "PYLON_WORKERS      = one per core\n");
    fprintf(out, "PYLON_READ_POOL    = %u\n", cfg->read_pool);
    fprintf(out, "PYLON_SQLITE_MMAP_MB = %u\n", cfg->sqlite_mmap_mb);
    fprintf(out, "PYLON_DRAIN_SECS   = %u\n", cfg->drain_secs);
    fprintf(out, "PYLON_ROOM_IDLE_SECS = %u\n", cfg->room_idle_secs);
    fprintf(out, "PYLON_IO_THREADS   = %u\n", cfg->io_threads);
    fprintf(out, "PYLON_RATE_LIMIT   = %u per %u s per IP\n", cfg->rate_max, cfg->rate_window_s);
    fprintf(out, "PYLON_WS_MAX_FRAME = %llu bytes\n", (unsigned long long)cfg->ws_max_frame);
    fprintf(out, "PYLON_LOG_FORMAT   = %s\n", cfg->log_format == PYLON_LOG_JSON ? "json" : "text");
    fprintf(out, "PYLON_LOG_LEVEL    = %s\n", pylon_log_level_name(cfg->log_level));
}
