/*
 * json_load_fuzz.c — libFuzzer target: pylon_json_loadb against json_loadb on arbitrary bytes.
 *
 * Under each flag set the request paths use, both must refuse (with the same error text, line,
 * column and position) or both must build trees that are json_equal and dump to the same bytes
 * (same types, values and key order). Any difference aborts.
 *
 * Build: clang -std=c17 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -I. \
 *          fuzz/json_load_fuzz.c actors/json_load.c -ljansson
 * Run:   ./a.out -max_total_time=60 tests/e2e/fixtures   (any JSON files make a good seed)
 */
#include "actors/json_load.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t flag_sets[] = {0, JSON_REJECT_DUPLICATES, JSON_DECODE_ANY,
                                       JSON_REJECT_DUPLICATES | JSON_DECODE_ANY};
    const char *doc = (const char *)data;
    for (size_t f = 0; f < sizeof flag_sets / sizeof *flag_sets; f++) {
        json_error_t we, ge;
        json_t *want = json_loadb(doc, size, flag_sets[f], &we);
        json_t *got = pylon_json_loadb(doc, size, flag_sets[f], &ge);
        if (!want != !got) abort();
        if (!want) {
            if (strcmp(we.text, ge.text) != 0 || we.line != ge.line || we.column != ge.column ||
                we.position != ge.position)
                abort();
            continue;
        }
        if (!json_equal(want, got)) abort();
        char *a = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY);
        char *b = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!a || !b || strcmp(a, b) != 0) abort();
        free(a);
        free(b);
        json_decref(want);
        json_decref(got);
    }
    return 0;
}
