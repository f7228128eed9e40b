/*
 * main.c — the `pylon` command: parses the command line, loads the configuration and wires
 * the server together. The only place that may exit the process.
 *
 * Exit codes: 0 ok, 1 error (including every refusal), 64 usage, 69 not available here.
 */
#include "backup.h"
#include "config.h"

#include "actors/auth.h"
#include "actors/data_api.h"
#include "actors/manifest.h"
#include "actors/ops.h"
#include "actors/persistence.h"
#include "actors/policy.h"
#include "actors/readers.h"
#include "actors/readiness.h"
#include "actors/store.h"
#include "engine/clock.h"
#include "engine/log.h"
#include "engine/runtime.h"
#include "http/guard.h"
#include "http/router.h"
#include "http/server.h"
#include "shards/matchmaker.h"
#include "shards/plugins.h"
#include "shards/replay.h"
#include "shards/shard_api.h"
#include "sync/hub.h"
#include "sync/rooms.h"
#include "sync/sync_api.h"

#include <errno.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define EXIT_USAGE       64
#define EXIT_UNAVAILABLE 69

static void usage(FILE *out)
{
    fprintf(out,
            "pylon %s — self-hosted realtime backend\n"
            "\n"
            "Usage: pylon <command> [options]\n"
            "\n"
            "Commands:\n"
            "  serve            run the production server (alias: start)\n"
            "  dev              run a development server on 127.0.0.1 with data under .pylon/\n"
            "  backup DIR       copy the databases, manifest and uploads into DIR (safe while\n"
            "                   the server runs)\n"
            "  restore DIR      put a backup back (stop the server first; --yes skips the\n"
            "                   question)\n"
            "  replay FILE      re-run a recorded shard and check its final state hash\n"
            "  version          print the version\n"
            "  help             print this help\n"
            "\n"
            "Options:\n"
            "  --port N         HTTP port (default PYLON_PORT or 4321); N+1..N+3 carry the\n"
            "                   sync WebSocket, SSE and shard transports\n"
            "\n"
            "Configuration comes from PYLON_* environment variables; see the README.\n",
            PYLON_VERSION);
}

static int serve(const pylon_config *cfg);

static int run_server(pylon_mode mode, int argc, char **argv)
{
    const char *port_flag = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port_flag = argv[++i];
        } else if (strncmp(argv[i], "--port=", 7) == 0) {
            port_flag = argv[i] + 7;
        } else {
            fprintf(stderr, "pylon %s: unknown option '%s' (see `pylon help`)\n", argv[1], argv[i]);
            return EXIT_USAGE;
        }
    }
    pylon_config cfg;
    char err[512];
    if (!pylon_config_load(&cfg, mode, port_flag, err, sizeof err)) {
        fprintf(stderr, "pylon: %s\n", err);
        return 1;
    }
    pylon_log_configure(cfg.log_format, cfg.log_level, 2);
    if (mode == PYLON_MODE_DEV) pylon_config_print(&cfg, stderr); /* what dev runs with */
    return serve(&cfg);
}

/* mkdir -p for the directory that will hold `path` (dev keeps everything under .pylon/). */
static bool ensure_parent_dir(const char *path, char *err, size_t errlen)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    char *dir = dirname(tmp);
    if (strcmp(dir, ".") == 0 || strcmp(dir, "/") == 0) return true;
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) goto fail;
        *p = '/';
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) goto fail;
    return true;
fail:
    snprintf(err, errlen, "cannot create directory %s for %s: %s", dir, path, strerror(errno));
    return false;
}

/* The shards' checkpoint sink: the persistence actor. */
static void checkpoint_save(void *writer, const pylon_shard_row *row)
{
    pylon_persistence_shard_save(writer, row);
}

static void checkpoint_drop(void *writer, const char *id)
{
    pylon_persistence_shard_drop(writer, id);
}

/* Each checkpointed shard comes back; one that cannot is logged and skipped (its row stays,
 * for inspection, until a shard with that id writes a new one). */
static void restore_one(void *shards, const pylon_shard_row *row)
{
    char err[300];
    int rc = pylon_shards_restore(shards, row, err, sizeof err);
    if (rc == 0)
        pylon_log_info("shard", "shard %s (%s) restored from its checkpoint at tick %llu", row->id,
                       row->kind, (unsigned long long)row->tick);
    else
        pylon_log_error("shard",
                        "shard %s (%s): checkpoint at tick %llu skipped, cannot restore: %s",
                        row->id, row->kind, (unsigned long long)row->tick, err);
}

static void restore_shards(pylon_shards *shards, const pylon_config *cfg, const pylon_manifest *m)
{
    pylon_store_error serr = {0};
    pylon_store_conn *rc = pylon_store_sqlite.open(cfg->db_path, false, m, &serr);
    if (!rc || !pylon_store_sqlite.shard_rows(rc, restore_one, shards, &serr))
        pylon_log_error("shard", "shard checkpoints not read: %s", serr.message);
    if (rc) pylon_store_sqlite.close(rc);
}

static int serve(const pylon_config *cfg)
{
    /* Signals are taken by sigwait below; every thread created from here inherits the mask.
     * SIGPIPE is ignored: a client that vanishes mid-write is an error code, not a crash. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[512];
    if (cfg->mode == PYLON_MODE_DEV && !ensure_parent_dir(cfg->db_path, err, sizeof err)) {
        pylon_log_error("pylon", "%s", err);
        return 1;
    }
    pylon_runtime_options ro = {.workers = cfg->workers};
    pylon_runtime *rt = pylon_runtime_create(&ro, err, sizeof err);
    if (!rt) {
        pylon_log_error("pylon", "cannot start the actor runtime: %s", err);
        return 1;
    }
    int rc = 1;
    pylon_router *router = pylon_router_new();
    pylon_guard *guard = NULL;
    pylon_http_server *srv = NULL;
    pylon_readiness *ready = NULL;
    pylon_manifest *manifest = NULL;
    pylon_policy_set *policies = NULL;
    pylon_persistence *writer = NULL;
    pylon_readers *readers = NULL;
    pylon_auth *auth = NULL;
    pylon_hub *hub = NULL;
    pylon_matchmaker *matchmaker = NULL;
    pylon_shards *shards = pylon_shards_new(rt);
    if (!shards || !pylon_plugins_load(shards, cfg->shard_plugins, err, sizeof err)) {
        pylon_log_error("pylon", "%s", shards ? err : "out of memory");
        goto out;
    }
    if (!pylon_shards_kind(shards, cfg->match_kind)) {
        pylon_log_error("pylon",
                        "PYLON_MATCH_KIND=%s: no simulation of that kind (built in: arena, turns; "
                        "others come from PYLON_SHARD_PLUGINS)",
                        cfg->match_kind);
        goto out;
    }
    pylon_store_error serr = {0};

    /* The manifest: an invalid one stops the start with every problem and where it is. */
    pylon_manifest_errors *merrs = NULL;
    manifest = pylon_manifest_load_file(cfg->manifest, &merrs);
    if (!manifest && merrs && merrs->not_found && cfg->mode == PYLON_MODE_DEV) {
        pylon_log_warn("pylon", "no manifest at PYLON_MANIFEST=%s: starting with no entities",
                       cfg->manifest);
        manifest = pylon_manifest_new_empty();
    }
    if (!manifest) {
        pylon_log_error("pylon", "PYLON_MANIFEST=%s is not valid:\n%s", cfg->manifest,
                        pylon_manifest_errors_text(merrs));
        pylon_manifest_errors_free(merrs);
        goto out;
    }
    pylon_manifest_errors_free(merrs);
    policies = pylon_policy_set_build(manifest->policies_json, err, sizeof err);
    if (!policies) {
        pylon_log_error("pylon", "PYLON_MANIFEST=%s: %s", cfg->manifest, err);
        goto out;
    }
    pylon_auth_options ao = {.session_db = cfg->session_db,
                             .admin_token = cfg->admin_token,
                             .dev = cfg->dev,
                             .session_ttl_s = manifest->auth.session_expires_in,
                             .cookie_name = cfg->cookie_name,
                             .app_name = manifest->name,
                             .cookie_domain = cfg->cookie_domain,
                             .cookie_samesite = cfg->cookie_samesite,
                             .cookie_secure = cfg->cookie_secure};
    if (!(auth = pylon_auth_start(rt, &ao, err, sizeof err))) {
        pylon_log_error("pylon", "%s", err);
        goto out;
    }
    if (!(hub = pylon_hub_start(rt, manifest, policies, auth, cfg->room_idle_secs))) {
        pylon_log_error("pylon", "cannot start the sync hub (out of memory)");
        goto out;
    }
    pylon_store_sqlite_set_mmap((int64_t)cfg->sqlite_mmap_mb << 20);
    pylon_persistence_options po = {.backend = &pylon_store_sqlite,
                                    .target = cfg->db_path,
                                    .manifest = manifest,
                                    .queue_max = cfg->write_queue_max,
                                    .retain = cfg->changelog_retain,
                                    .on_changes = pylon_hub_on_changes,
                                    .listener_ctx = hub};
    if (!(writer = pylon_persistence_start(rt, &po, &serr)) ||
        !(readers =
              pylon_readers_start(rt, &pylon_store_sqlite, cfg->db_path, manifest, cfg->read_pool,
                                  pylon_persistence_commits(writer), &serr))) {
        pylon_log_error("pylon", "database PYLON_DB_PATH=%s: %s", cfg->db_path, serr.message);
        goto out;
    }
    pylon_shard_checkpoints ck = {.ctx = writer,
                                  .save = checkpoint_save,
                                  .drop = checkpoint_drop,
                                  .default_secs = cfg->shard_checkpoint_secs};
    pylon_shards_set_checkpoints(shards, &ck);
    restore_shards(shards, cfg, manifest); /* before any client can create one */
    pylon_data_api data = {.m = manifest,
                           .policies = policies,
                           .writer = writer,
                           .readers = readers,
                           .auth = auth,
                           .reset_allowed = cfg->dev && strcmp(cfg->db_path, ":memory:") == 0};
    if (!(ready = pylon_readiness_start(rt, writer, readers))) {
        pylon_log_error("pylon", "cannot start the readiness probe (out of memory)");
        goto out;
    }
    if (!pylon_data_routes(router, &data) || !pylon_auth_routes(router, auth) ||
        !pylon_sync_routes(router, &data) || !pylon_rooms_routes(router, hub, auth)) {
        pylon_log_error("pylon", "cannot build the routes (out of memory)");
        goto out;
    }
    pylon_ops ops = {.rt = rt,
                     .writer = writer,
                     .more_prometheus = pylon_shards_prometheus,
                     .more_ctx = shards,
                     .dev = cfg->dev,
                     .admin_token = cfg->admin_token,
                     .host = cfg->host,
                     .port = cfg->port,
                     .ws_url = cfg->ws_url,
                     .sse_url = cfg->sse_url,
                     .shard_url = cfg->shard_url,
                     .start_ns = pylon_clock_now_ns()};
    atomic_init(&ops.server, NULL);
    if (!router || !pylon_ops_routes(router, &ops) ||
        !pylon_router_add_actor(router, PYLON_M_GET | PYLON_M_HEAD, "/readyz",
                                pylon_readiness_actor(ready), 0, NULL)) {
        pylon_log_error("pylon", "cannot build the routes (out of memory)");
        goto out;
    }
    pylon_guard_config gc = {.dev = cfg->dev,
                             .cors_origin = cfg->cors_origin,
                             .csrf_origins = cfg->csrf_origins,
                             .rate_max = cfg->rate_max,
                             .rate_window_s = cfg->rate_window_s,
                             .trust_proxy_hops = cfg->trust_proxy_hops};
    guard = pylon_guard_new(&gc);
    pylon_stream_handlers sync_ws, sse, shard_ws, shard_sse;
    pylon_hub_ws_handlers(hub, &sync_ws);
    pylon_hub_sse_handlers(hub, &sse);
    pylon_shard_api shard_api = {.shards = shards, .auth = auth, .replay_dir = cfg->replay_dir};
    if (mkdir(cfg->replay_dir, 0755) != 0 && errno != EEXIST)
        pylon_log_warn("pylon", "PYLON_REPLAY_DIR=%s cannot be created: %s", cfg->replay_dir,
                       strerror(errno));
    pylon_shard_ws_handlers(&shard_api, &shard_ws);
    pylon_shard_sse_handlers(&shard_api, &shard_sse);
    pylon_matchmaker_options mo = {.size = cfg->match_size, .kind = cfg->match_kind};
    if (!(matchmaker = pylon_matchmaker_start(rt, shards, auth, &mo)) ||
        !pylon_shard_routes(router, &shard_api) || !pylon_matchmaker_routes(router, matchmaker)) {
        pylon_log_error("pylon", "cannot build the routes (out of memory)");
        goto out;
    }
    pylon_http_server_options so = {.host = cfg->host,
                                    .port = cfg->port,
                                    .io_threads = cfg->io_threads,
                                    .max_header_bytes = 16 * 1024,
                                    .max_body_bytes = 10 * 1024 * 1024,
                                    .header_timeout_s = cfg->header_timeout_s,
                                    .body_timeout_s = cfg->body_timeout_s,
                                    .idle_timeout_s = cfg->idle_timeout_s,
                                    .max_conns_per_ip = cfg->max_conns_per_ip,
                                    .max_stream_conns_per_ip = cfg->max_stream_conns_per_ip,
                                    .ws_max_frame = cfg->ws_max_frame,
                                    .stream_max_backlog = cfg->ws_max_backlog,
                                    .ws_ping_s = 30,
                                    .ws_dead_s = 75,
                                    .sse_keepalive_s = 30,
                                    .trust_proxy_hops = cfg->trust_proxy_hops,
                                    .router = router,
                                    .guard = guard,
                                    .streams = {[PYLON_STREAM_SYNC_WS] = &sync_ws,
                                                [PYLON_STREAM_SSE] = &sse,
                                                [PYLON_STREAM_SHARD_WS] = &shard_ws,
                                                [PYLON_STREAM_SHARD_SSE] = &shard_sse}};
    if (!guard || !(srv = pylon_http_server_start(&so, err, sizeof err))) {
        pylon_log_error("pylon", "%s", guard ? err : "out of memory");
        goto out;
    }
    atomic_store(&ops.server, srv);
    pylon_log_info("pylon", "pylon %s %s on http://%s:%d (sync ws :%d, sse :%d, shards :%d), db %s",
                   PYLON_VERSION, cfg->mode == PYLON_MODE_DEV ? "dev" : "serve", cfg->host,
                   cfg->port, cfg->port + 1, cfg->port + 2, cfg->port + 3, cfg->db_path);
    if (cfg->admin_token_generated)
        pylon_log_info("pylon", "admin token (generated, shown once): %s", cfg->admin_token);

    int sig = 0;
    sigwait(&stop, &sig);
    pylon_log_info("pylon", "%s received: shutting down (drain cap %u s)",
                   sig == SIGINT ? "SIGINT" : "SIGTERM", cfg->drain_secs);
    /* The deployment page's five steps: stop accepting; finish in-flight requests; close
     * WebSockets (1001) and SSE; flush the database; exit 0. */
    pylon_readiness_set_draining(ready);
    pylon_http_server_shutdown(srv, cfg->drain_secs);
    rc = 0;
out:
    /* Nothing reaches the actors once the server is down: stop them, the writer last so it
     * commits what is queued and checkpoints the WAL. */
    pylon_http_server_destroy(srv);
    pylon_readiness_stop(ready);
    pylon_matchmaker_stop(matchmaker);
    pylon_shards_free(shards);
    pylon_auth_stop(auth);
    pylon_readers_stop(readers);
    pylon_persistence_stop(writer); /* its last commit still reaches the hub */
    pylon_hub_stop(hub);
    if (rc == 0) pylon_log_info("pylon", "database flushed; bye");
    pylon_router_free(router);
    pylon_guard_free(guard);
    pylon_runtime_destroy(rt);
    pylon_auth_free(auth);
    pylon_policy_set_free(policies);
    pylon_manifest_free(manifest);
    return rc;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "help";
    pylon_store_sqlite_global_init();
    if (strcmp(cmd, "serve") == 0 || strcmp(cmd, "start") == 0)
        return run_server(PYLON_MODE_SERVE, argc, argv);
    if (strcmp(cmd, "dev") == 0) return run_server(PYLON_MODE_DEV, argc, argv);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
        printf("pylon %s\n", PYLON_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "backup") == 0 || strcmp(cmd, "restore") == 0) {
        const char *dir = NULL;
        bool yes = false, json = false;
        for (int i = 2; i < argc; i++) {
            if (!strcmp(argv[i], "--yes") || !strcmp(argv[i], "-y"))
                yes = true;
            else if (!strcmp(argv[i], "--json"))
                json = true;
            else if (argv[i][0] != '-' && !dir)
                dir = argv[i];
            else {
                fprintf(stderr, "pylon %s: unknown option '%s'\n", cmd, argv[i]);
                return EXIT_USAGE;
            }
        }
        if (!dir) {
            fprintf(stderr, "pylon %s: which directory? e.g. pylon %s /var/backups/pylon/today\n",
                    cmd, cmd);
            return EXIT_USAGE;
        }
        /* Paths come from the same variables the server reads; refusal rules do not apply. */
        pylon_config cfg;
        char err[512];
        if (!pylon_config_load(&cfg, PYLON_MODE_TOOL, NULL, err, sizeof err)) {
            fprintf(stderr, "pylon: %s\n", err);
            return 1;
        }
        return cmd[0] == 'b' ? pylon_backup_run(&cfg, dir, json)
                             : pylon_restore_run(&cfg, dir, yes, json);
    }
    if (strcmp(cmd, "replay") == 0) {
        if (argc != 3) {
            fprintf(stderr,
                    "pylon replay: which file? e.g. pylon replay .pylon/replays/m1.replay\n");
            return EXIT_USAGE;
        }
        pylon_config cfg;
        char err[512];
        if (!pylon_config_load(&cfg, PYLON_MODE_TOOL, NULL, err, sizeof err)) {
            fprintf(stderr, "pylon: %s\n", err);
            return 1;
        }
        pylon_shards *kinds = pylon_shards_new(NULL);
        if (!kinds || !pylon_plugins_load(kinds, cfg.shard_plugins, err, sizeof err)) {
            fprintf(stderr, "pylon: %s\n", kinds ? err : "out of memory");
            pylon_shards_free(kinds);
            return 1;
        }
        int rc = pylon_replay_run(kinds, argv[2]);
        pylon_shards_free(kinds);
        return rc;
    }
    if (strcmp(cmd, "login") == 0 || strcmp(cmd, "deploy") == 0) {
        fprintf(stderr,
                "pylon %s: Pylon Cloud is not available in a self-hosted build; run "
                "`pylon serve` on your own machine instead (see the README)\n",
                cmd);
        return EXIT_UNAVAILABLE;
    }
    fprintf(stderr, "pylon: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return EXIT_USAGE;
}
