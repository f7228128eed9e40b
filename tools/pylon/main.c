/*
 * main.c — the `pylon` command: parses the command line, loads the configuration and wires
 * the server together. The only place that may exit the process.
 *
 * Exit codes: 0 ok, 1 error (including every refusal), 64 usage, 69 not available here.
 */
#include "config.h"

#include "engine/log.h"

#include <stdio.h>
#include <string.h>

#define EXIT_USAGE 64
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
    printf("pylon %s\n", PYLON_VERSION);
    pylon_config_print(&cfg, stdout);
    if (cfg.admin_token_generated) printf("admin token (shown once): %s\n", cfg.admin_token);
    printf("The HTTP server is not built yet in this version: configuration checked, exiting.\n");
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "help";
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
    if (strcmp(cmd, "login") == 0 || strcmp(cmd, "deploy") == 0) {
        fprintf(stderr, "pylon %s: Pylon Cloud is not available in a self-hosted build; run "
                        "`pylon serve` on your own machine instead (see the README)\n",
                cmd);
        return EXIT_UNAVAILABLE;
    }
    fprintf(stderr, "pylon: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return EXIT_USAGE;
}
