/*
 * log.h — one line per event on stderr, as text or as JSON lines.
 *
 * Text:  2026-11-28T08:00:00.123Z INFO  http: listening addr=0.0.0.0:4321
 * JSON:
 * {"ts":"2026-11-28T08:00:00.123Z","level":"info","module":"http","msg":"listening","addr":"0.0.0.0:4321"}
 *
 * Each line is written with a single write(2), so lines from different threads never
 * interleave. The format and minimum level are set once by main (pylon_log_configure) before
 * threads start; they are the only process-wide settings the engine keeps.
 */
#ifndef PYLON_ENGINE_LOG_H
#define PYLON_ENGINE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { PYLON_LOG_DEBUG, PYLON_LOG_INFO, PYLON_LOG_WARN, PYLON_LOG_ERROR } pylon_log_level;
typedef enum { PYLON_LOG_TEXT, PYLON_LOG_JSON } pylon_log_format;

typedef enum {
    PYLON_LOG_STR,
    PYLON_LOG_INT,
    PYLON_LOG_UINT,
    PYLON_LOG_DOUBLE,
    PYLON_LOG_BOOL
} pylon_log_kind;

/* A structured field: `key=value` in text, `"key":value` in JSON. */
typedef struct pylon_log_field {
    const char *key;
    pylon_log_kind kind;
    union {
        const char *s;
        int64_t i;
        uint64_t u;
        double d;
        bool b;
    } v;
} pylon_log_field;

#define PYLON_LF_STR(k, x)    ((pylon_log_field){.key = (k), .kind = PYLON_LOG_STR, .v.s = (x)})
#define PYLON_LF_INT(k, x)    ((pylon_log_field){.key = (k), .kind = PYLON_LOG_INT, .v.i = (x)})
#define PYLON_LF_UINT(k, x)   ((pylon_log_field){.key = (k), .kind = PYLON_LOG_UINT, .v.u = (x)})
#define PYLON_LF_DOUBLE(k, x) ((pylon_log_field){.key = (k), .kind = PYLON_LOG_DOUBLE, .v.d = (x)})
#define PYLON_LF_BOOL(k, x)   ((pylon_log_field){.key = (k), .kind = PYLON_LOG_BOOL, .v.b = (x)})

void pylon_log_configure(pylon_log_format format, pylon_log_level min_level, int fd);
bool pylon_log_enabled(pylon_log_level level);

/* Formats one line into `out` (always NUL-terminated, truncated to fit); returns its length.
 * Exposed for tests; pylon_log_write uses it. */
size_t pylon_log_format_line(char *out, size_t cap, pylon_log_format format, pylon_log_level level,
                             const char *module, const char *msg, const pylon_log_field *fields,
                             size_t nfields);

void pylon_log_write(pylon_log_level level, const char *module, const char *msg,
                     const pylon_log_field *fields, size_t nfields);

/* printf-style message, no fields. */
void pylon_logf(pylon_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define pylon_log_debug(mod, ...) pylon_logf(PYLON_LOG_DEBUG, mod, __VA_ARGS__)
#define pylon_log_info(mod, ...)  pylon_logf(PYLON_LOG_INFO, mod, __VA_ARGS__)
#define pylon_log_warn(mod, ...)  pylon_logf(PYLON_LOG_WARN, mod, __VA_ARGS__)
#define pylon_log_error(mod, ...) pylon_logf(PYLON_LOG_ERROR, mod, __VA_ARGS__)

const char *pylon_log_level_name(pylon_log_level level);

#endif
