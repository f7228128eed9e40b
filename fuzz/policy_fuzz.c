/*
 * policy_fuzz.c — libFuzzer target for the policy language (actors/policy.h).
 *
 * Each input is one expression. Compiling must either succeed or fail with a NUL-terminated
 * message that names a column; a compiled expression is evaluated against fixed environments
 * (anonymous, a user with roles, admin, each over rows holding every JSON kind) and must give
 * the same answer twice. The sanitizers do the rest.
 *
 * Build and run (clang):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. actors/policy.c fuzz/policy_fuzz.c \
 *         -ljansson -o /tmp/policy_fuzz && /tmp/policy_fuzz -max_total_time=60
 */
#include "actors/policy.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static json_t *g_rows[3];
static json_t *g_input;

static const char *const roles[] = {"editor", "viewer"};
static const char *const admin_roles[] = {"admin"};
static const pylon_identity g_ids[] = {
    {0},
    {.user_id = "u_alice", .tenant_id = "t1", .roles = roles, .nroles = 2},
    {.user_id = "__admin__", .is_admin = true, .roles = admin_roles, .nroles = 1},
};

static void setup(void)
{
    /* A full row, a sparse one with extreme numbers and a NUL, and a row that is an array. */
    static const char *const rows[] = {
        ("{\"userId\":\"u_alice\",\"title\":\"hi\",\"count\":3,\"price\":9.5,\"done\":false,"
         "\"n\":null,\"members\":[\"u_alice\",2,true,null,{\"a\":1},[1]],"
         "\"obj\":{\"a\":{\"b\":\"c\"}},\"s\":\"10\",\"e\":\"\",\"\":{\"\":\"x\"},"
         "\"big\":9223372036854775807,\"r\":1e300}"),
        ("{\"userId\":\"u_bob\",\"count\":-9223372036854775807,\"price\":-0.0,\"s\":\"abc\","
         "\"members\":[],\"nul\":\"a\\u0000b\"}"),
        "[1,\"2\",null]",
    };
    for (size_t i = 0; i < 3; i++)
        g_rows[i] = json_loads(rows[i], JSON_ALLOW_NUL, NULL);
    g_input = json_loads("{\"amount\":12,\"tags\":[\"a\",\"b\"]}", 0, NULL);
    if (!g_rows[0] || !g_rows[1] || !g_rows[2] || !g_input) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_input) setup();
    char *src = malloc(size + 1);
    if (!src) return 0;
    memcpy(src, data, size);
    src[size] = '\0'; /* an embedded NUL simply ends the expression, as in a C string */

    char err[200];
    memset(err, 'x', sizeof err);
    pylon_policy_expr *e = pylon_policy_compile(src, err, sizeof err);
    if (!e) {
        if (!memchr(err, '\0', sizeof err) || !strstr(err, "column")) abort();
    } else {
        for (size_t id = 0; id < sizeof g_ids / sizeof *g_ids; id++) {
            for (size_t r = 0; r < 3; r++) {
                pylon_policy_env env = {.auth = &g_ids[id],
                                        .data = g_rows[r],
                                        .existing = g_rows[(r + 1) % 3],
                                        .input = g_input};
                bool a = pylon_policy_eval(e, &env);
                if (pylon_policy_eval(e, &env) != a) abort();
            }
        }
        pylon_policy_env none = {0};
        (void)pylon_policy_eval(e, &none);
        (void)pylon_policy_eval(e, NULL);
        (void)pylon_policy_expr_reads_row(e);
        pylon_policy_expr_free(e);
    }
    free(src);
    return 0;
}
