/*
 * json_load.h — json_loadb with a fast path for the plain documents requests carry.
 *
 * jansson's lexer makes two function calls per input byte (its stream reader with the UTF-8
 * check, its token buffer): about 10 000 instructions for a 50-byte insert body, more than half
 * of the I/O thread's own work per insert (callgrind). pylon_json_loadb reads the common
 * subset itself — objects, arrays, strings without \u escapes (any valid UTF-8), integers of
 * up to 18 digits, reals strtod reads in range, true, false, null, nesting up to 64 deep —
 * and builds the tree jansson would build (same types, values and key order). Anything else,
 * every error included, goes to json_loadb itself: what is accepted, its values and every
 * error message and position stay jansson's. tests/unit/test_json_load.c compares the two.
 */
#ifndef PYLON_ACTORS_JSON_LOAD_H
#define PYLON_ACTORS_JSON_LOAD_H

#include <jansson.h>
#include <stddef.h>

/* As json_loadb(buf, len, flags, error). Flags other than JSON_REJECT_DUPLICATES and
 * JSON_DECODE_ANY always take jansson's path. */
json_t *pylon_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *error);

/* How many documents went to jansson since the start (tests, diagnostics). */
size_t pylon_json_loadb_fallbacks(void);

#endif
