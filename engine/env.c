/* env.c — typed environment variables with errors that name the variable and the fix. */
#include "engine/env.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *pylon_env_get(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

const char *pylon_env_str(const char *name, const char *def)
{
    const char *v = pylon_env_get(name);
    return v ? v : def;
}

static bool fail(pylon_env_error *err, const char *name, const char *text, const char *expected)
{
    if (err) {
        /* Quote at most 60 bytes of the bad value (a huge value would drown the message), with
         * control characters shown as '?' so the message stays one line. */
        char shown[61];
        size_t n = 0;
        for (; text[n] && n < 60; n++)
            shown[n] = (unsigned char)text[n] < 0x20 ? '?' : text[n];
        shown[n] = '\0';
        snprintf(err->msg, sizeof err->msg, "%s=\"%s%s\" is not valid: expected %s", name, shown,
                 strlen(text) > 60 ? "..." : "", expected);
    }
    return false;
}

bool pylon_parse_int(const char *name, const char *text, int64_t min, int64_t max, int64_t *out,
                     pylon_env_error *err)
{
    char expected[96];
    snprintf(expected, sizeof expected, "a whole number from %" PRId64 " to %" PRId64, min, max);
    const char *p = text;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '\0') return fail(err, name, text, expected);
    errno = 0;
    char *end;
    long long v = strtoll(p, &end, 10);
    while (isspace((unsigned char)*end))
        end++;
    if (errno == ERANGE || *end != '\0' || end == p || v < min || v > max)
        return fail(err, name, text, expected);
    *out = v;
    return true;
}

bool pylon_parse_bool(const char *name, const char *text, bool *out, pylon_env_error *err)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0) return *out = true, true;
        if (strcasecmp(text, no[i]) == 0) return *out = false, true;
    }
    return fail(err, name, text, "true or false (also 1/0, yes/no, on/off)");
}

bool pylon_parse_size(const char *name, const char *text, uint64_t min, uint64_t max, uint64_t *out,
                      pylon_env_error *err)
{
    char expected[128];
    snprintf(expected, sizeof expected,
             "a size in bytes from %" PRIu64 " to %" PRIu64 ", optionally with K, M or G", min,
             max);
    const char *p = text;
    while (isspace((unsigned char)*p))
        p++;
    if (!isdigit((unsigned char)*p)) return fail(err, name, text, expected);
    errno = 0;
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    if (errno == ERANGE) return fail(err, name, text, expected);
    while (isspace((unsigned char)*end))
        end++;
    uint64_t mul = 1;
    if (*end) {
        switch (toupper((unsigned char)*end)) {
        case 'B':
            mul = 1;
            break;
        case 'K':
            mul = 1ull << 10;
            break;
        case 'M':
            mul = 1ull << 20;
            break;
        case 'G':
            mul = 1ull << 30;
            break;
        default:
            return fail(err, name, text, expected);
        }
        end++;
        /* Accept K, KB, KiB (all powers of 1024); nothing else may follow. */
        if (mul > 1 && (*end == 'i' || *end == 'I')) end++;
        if (mul > 1 && (*end == 'b' || *end == 'B')) end++;
        while (isspace((unsigned char)*end))
            end++;
        if (*end) return fail(err, name, text, expected);
    }
    if (v > UINT64_MAX / mul) return fail(err, name, text, expected);
    uint64_t bytes = (uint64_t)v * mul;
    if (bytes < min || bytes > max) return fail(err, name, text, expected);
    *out = bytes;
    return true;
}

bool pylon_env_int(const char *name, int64_t def, int64_t min, int64_t max, int64_t *out,
                   pylon_env_error *err)
{
    const char *v = pylon_env_get(name);
    if (!v) return *out = def, true;
    return pylon_parse_int(name, v, min, max, out, err);
}

bool pylon_env_bool(const char *name, bool def, bool *out, pylon_env_error *err)
{
    const char *v = pylon_env_get(name);
    if (!v) return *out = def, true;
    return pylon_parse_bool(name, v, out, err);
}

bool pylon_env_size(const char *name, uint64_t def, uint64_t min, uint64_t max, uint64_t *out,
                    pylon_env_error *err)
{
    const char *v = pylon_env_get(name);
    if (!v) return *out = def, true;
    return pylon_parse_size(name, v, min, max, out, err);
}

bool pylon_env_enum(const char *name, int def, const char *const *choices, int *out,
                    pylon_env_error *err)
{
    const char *v = pylon_env_get(name);
    if (!v) return *out = def, true;
    for (int i = 0; choices[i]; i++)
        if (strcasecmp(v, choices[i]) == 0) return *out = i, true;
    char expected[200] = "one of ";
    for (int i = 0; choices[i]; i++) {
        size_t n = strlen(expected);
        snprintf(expected + n, sizeof expected - n, "%s%s", i ? ", " : "", choices[i]);
    }
    return fail(err, name, v, expected);
}
