/*
 * manifest_fuzz.c — libFuzzer target: arbitrary bytes as a manifest.
 *
 * Every input must either be refused with at least one error or load; a manifest that loads
 * is then applied to an in-memory SQLite database, which must succeed (the loader's rules are
 * what make the generated SQL safe), and its lookups are exercised.
 *
 * Build: clang -std=c17 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -I. \
 *          fuzz/manifest_fuzz.c actors/manifest.c actors/schema.c -ljansson -lsqlite3
 * Run:   ./a.out -max_total_time=60 examples/manifests   (the examples are a good seed corpus)
 */
#include "actors/manifest.h"
#include "actors/schema.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pylon_manifest_errors *errs = NULL;
    pylon_manifest *m = pylon_manifest_parse((const char *)data, size, &errs);
    if (!m) {
        if (errs && (errs->count == 0 || errs->total < errs->count || !errs->text)) abort();
        for (size_t i = 0; errs && i < errs->count; i++)
            if (!errs->items[i].code || !errs->items[i].message) abort();
        pylon_manifest_errors_free(errs);
        return 0;
    }
    if (errs) abort();

    char buf[256];
    for (size_t i = 0; i < m->nentities; i++) {
        const pylon_entity *e = &m->entities[i];
        if (pylon_manifest_entity(m, e->name) != e) abort();
        pylon_entity_unknown_column(e, "x", buf, sizeof buf);
        for (size_t k = 0; k < e->nfields; k++)
            if (!pylon_entity_has_column(e, e->fields[k].name)) abort();
    }

    sqlite3 *db = NULL;
    if (sqlite3_open(":memory:", &db) == SQLITE_OK) {
        char err[512], *summary = NULL;
        /* Twice: the second run must find nothing to do and still succeed. */
        if (pylon_schema_apply(db, m, "fuzz", &summary, err, sizeof err) != 0) {
            fprintf(stderr, "valid manifest failed to apply: %s\n", err);
            abort();
        }
        free(summary);
        if (pylon_schema_apply(db, m, "fuzz", NULL, err, sizeof err) != 0) {
            fprintf(stderr, "second apply failed: %s\n", err);
            abort();
        }
    }
    sqlite3_close(db);
    pylon_manifest_free(m);
    return 0;
}
