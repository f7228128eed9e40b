/* log.c — text and JSON log lines (see log.h). */
#include "engine/log.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096

/* Set once by main before threads start (log.h); read-only afterwards. */
static pylon_log_format log_format = PYLON_LOG_TEXT;
static pylon_log_level log_min = PYLON_LOG_INFO;
static int log_fd = 2;

void pylon_log_configure(pylon_log_format format, pylon_log_level min_level, int fd)
{
    log_format = format;
    log_min = min_level;
    log_fd = fd;
}

bool pylon_log_enabled(pylon_log_level level)
{
    return level >= log_min;
}

const char *pylon_log_level_name(pylon_log_level level)
{
    switch (level) {
    case PYLON_LOG_DEBUG:
        return "debug";
    case PYLON_LOG_INFO:
        return "info";
    case PYLON_LOG_WARN:
        return "warn";
    case PYLON_LOG_ERROR:
        return "error";
    }
    return "info";
}

/* A bounded appender: writes what fits, always leaves room for the NUL. */
typedef struct out {
    char *p;
    size_t len, cap;
} out;

static void put(out *o, const char *s, size_t n)
{
    if (o->len + 1 >= o->cap) return;
    size_t room = o->cap - 1 - o->len;
    if (n > room) n = room;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void puts_(out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void putf(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(out *o, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) put(o, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* JSON string body: quotes, backslashes and control characters escaped. */
static void put_json_escaped(out *o, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '"':
            puts_(o, "\\\"");
            break;
        case '\\':
            puts_(o, "\\\\");
            break;
        case '\n':
            puts_(o, "\\n");
            break;
        case '\r':
            puts_(o, "\\r");
            break;
        case '\t':
            puts_(o, "\\t");
            break;
        default:
            if (c < 0x20)
                putf(o, "\\u%04x", c);
            else
                put(o, (const char *)&c, 1);
        }
    }
}

/* Text values are bare when they are simple, otherwise quoted like JSON strings, so a line
 * stays one line and stays parseable as key=value. */
static void put_text_value(out *o, const char *s)
{
    bool bare = *s != '\0';
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f) bare = false;
    }
    if (bare) {
        puts_(o, s);
        return;
    }
    puts_(o, "\"");
    put_json_escaped(o, s);
    puts_(o, "\"");
}

static void put_timestamp(out *o)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char buf[40];
    size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof buf - n, ".%03ldZ", ts.tv_nsec / 1000000);
    puts_(o, buf);
}

static void put_field_value(out *o, pylon_log_format format, const pylon_log_field *f)
{
    switch (f->kind) {
    case PYLON_LOG_STR:
        if (format == PYLON_LOG_JSON) {
            puts_(o, "\"");
            put_json_escaped(o, f->v.s ? f->v.s : "");
            puts_(o, "\"");
        } else {
            put_text_value(o, f->v.s ? f->v.s : "");
        }
        break;
    case PYLON_LOG_INT:
        putf(o, "%" PRId64, f->v.i);
        break;
    case PYLON_LOG_UINT:
        putf(o, "%" PRIu64, f->v.u);
        break;
    case PYLON_LOG_DOUBLE:
        /* JSON has no NaN or infinity; huge and tiny values keep their magnitude. */
        if (!isfinite(f->v.d))
            puts_(o, "null");
        else if (f->v.d == 0 || (fabs(f->v.d) >= 1e-3 && fabs(f->v.d) < 1e15))
            putf(o, "%.3f", f->v.d);
        else
            putf(o, "%.6g", f->v.d);
        break;
    case PYLON_LOG_BOOL:
        puts_(o, f->v.b ? "true" : "false");
        break;
    }
}

size_t pylon_log_format_line(char *buf, size_t cap, pylon_log_format format, pylon_log_level level,
                             const char *module, const char *msg, const pylon_log_field *fields,
                             size_t nfields)
{
    if (cap == 0) return 0;
    buf[0] = '\0';
    if (cap < 2) return 0; /* not even room for the newline and the NUL */
    /* Keep one byte for the newline, which is always written, even after truncation. */
    out o = {buf, 0, cap > 1 ? cap - 1 : 1};
    if (format == PYLON_LOG_JSON) {
        puts_(&o, "{\"ts\":\"");
        put_timestamp(&o);
        puts_(&o, "\",\"level\":\"");
        puts_(&o, pylon_log_level_name(level));
        puts_(&o, "\",\"module\":\"");
        put_json_escaped(&o, module);
        puts_(&o, "\",\"msg\":\"");
        put_json_escaped(&o, msg);
        puts_(&o, "\"");
        for (size_t i = 0; i < nfields; i++) {
            puts_(&o, ",\"");
            put_json_escaped(&o, fields[i].key);
            puts_(&o, "\":");
            put_field_value(&o, format, &fields[i]);
        }
        /* A truncated JSON line is still one line; the closing brace is kept when it fits. */
        puts_(&o, "}");
    } else {
        static const char *const upper[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
        put_timestamp(&o);
        puts_(&o, " ");
        puts_(&o, upper[level]);
        puts_(&o, " ");
        puts_(&o, module);
        puts_(&o, ": ");
        for (const char *p = msg; *p; p++) /* one event, one line */
            put(&o, *p == '\n' || *p == '\r' ? " " : p, 1);
        for (size_t i = 0; i < nfields; i++) {
            puts_(&o, " ");
            puts_(&o, fields[i].key);
            puts_(&o, "=");
            put_field_value(&o, format, &fields[i]);
        }
    }
    buf[o.len++] = '\n';
    buf[o.len] = '\0';
    return o.len;
}

void pylon_log_write(pylon_log_level level, const char *module, const char *msg,
                     const pylon_log_field *fields, size_t nfields)
{
    if (!pylon_log_enabled(level)) return;
    char line[LINE_MAX_BYTES];
    size_t n =
        pylon_log_format_line(line, sizeof line, log_format, level, module, msg, fields, nfields);
    /* One write per line: lines from different threads never interleave. */
    ssize_t w;
    do {
        w = write(log_fd, line, n);
    } while (w < 0 && errno == EINTR);
}

void pylon_logf(pylon_log_level level, const char *module, const char *fmt, ...)
{
    if (!pylon_log_enabled(level)) return;
    char msg[LINE_MAX_BYTES / 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pylon_log_write(level, module, msg, NULL, 0);
}
