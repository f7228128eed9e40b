/*
 * test_log.c — log line formatting and writing (engine/log.h).
 *
 * Proves: text and JSON lines have the documented shape (exact strings for fixed inputs, the
 * timestamp checked separately as a current UTC time), every field kind renders its value,
 * JSON escaping of quotes, backslashes, newlines and control characters is right and every
 * JSON line parses back (a small strict JSON parser below, since jansson is not linked here)
 * to the original strings, including for all ASCII bytes and for NaN/huge doubles; text lines
 * stay one line; truncation keeps the output NUL-terminated inside `cap` and returns its
 * length; level filtering follows pylon_log_configure; pylon_log_write/pylon_logf write one
 * complete line per call to the configured fd, also from 4 threads at once.
 */
#include "engine/log.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "support.h"

/* ---------------------------------------------------------------------------------------- */
/* A minimal strict JSON reader: one flat object of string keys to scalar values.            */
/* ---------------------------------------------------------------------------------------- */

enum { J_STR, J_NUM, J_TRUE, J_FALSE, J_NULL };

typedef struct jkv {
    char key[128];
    int kind;
    char val[8192]; /* decoded string, or the number's text */
} jkv;

typedef struct jobj {
    jkv kv[24];
    int n;
} jobj;

static const char *j_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int j_hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return 0;
        v = v * 16 + (unsigned)h;
    }
    *out = v;
    return 1;
}

static size_t utf8_put(char *o, unsigned cp)
{
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xc0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3f)), 2;
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Parses a JSON string at *pp (on the opening quote) and decodes it into out. */
static int j_str(const char **pp, char *out, size_t cap)
{
    const char *p = *pp;
    size_t n = 0;
    if (*p++ != '"') return 0;
    for (;;) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') break;
        if (c < 0x20) return 0; /* raw control characters (and NUL) are not allowed */
        if (n + 5 >= cap) return 0;
        if (c != '\\') {
            out[n++] = (char)c;
            p++;
            continue;
        }
        p++;
        switch (*p) {
        case '"':
            out[n++] = '"';
            break;
        case '\\':
            out[n++] = '\\';
            break;
        case '/':
            out[n++] = '/';
            break;
        case 'b':
            out[n++] = '\b';
            break;
        case 'f':
            out[n++] = '\f';
            break;
        case 'n':
            out[n++] = '\n';
            break;
        case 'r':
            out[n++] = '\r';
            break;
        case 't':
            out[n++] = '\t';
            break;
        case 'u': {
            unsigned cp;
            if (!j_hex4(p + 1, &cp)) return 0;
            p += 4;
            if (cp >= 0xd800 && cp < 0xdc00) {
                unsigned lo;
                if (p[1] != '\\' || p[2] != 'u' || !j_hex4(p + 3, &lo) || lo < 0xdc00 ||
                    lo >= 0xe000)
                    return 0;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            }
            n += utf8_put(out + n, cp);
            break;
        }
        default:
            return 0;
        }
        p++;
    }
    out[n] = '\0';
    *pp = p + 1;
    return 1;
}

/* JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int j_num(const char **pp, char *out, size_t cap)
{
    const char *p = *pp, *s = p;
    if (*p == '-') p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (*p >= '0' && *p <= '9')
            p++;
    else
        return 0;
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9')) return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!(*p >= '0' && *p <= '9')) return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if ((size_t)(p - s) >= cap) return 0;
    memcpy(out, s, (size_t)(p - s));
    out[p - s] = '\0';
    *pp = p;
    return 1;
}

/* Whole line: one object, optional trailing newline, nothing else. */
static int json_parse(const char *line, jobj *o)
{
    const char *p = j_ws(line);
    o->n = 0;
    if (*p++ != '{') return 0;
    p = j_ws(p);
    if (*p == '}') {
        p++;
    } else {
        for (;;) {
            if (o->n == (int)(sizeof o->kv / sizeof o->kv[0])) return 0;
            jkv *kv = &o->kv[o->n++];
            p = j_ws(p);
            if (!j_str(&p, kv->key, sizeof kv->key)) return 0;
            p = j_ws(p);
            if (*p++ != ':') return 0;
            p = j_ws(p);
            if (*p == '"') {
                kv->kind = J_STR;
                if (!j_str(&p, kv->val, sizeof kv->val)) return 0;
            } else if (!strncmp(p, "true", 4)) {
                kv->kind = J_TRUE, p += 4;
            } else if (!strncmp(p, "false", 5)) {
                kv->kind = J_FALSE, p += 5;
            } else if (!strncmp(p, "null", 4)) {
                kv->kind = J_NULL, p += 4;
            } else {
                kv->kind = J_NUM;
                if (!j_num(&p, kv->val, sizeof kv->val)) return 0;
            }
            p = j_ws(p);
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p++ != '}') return 0;
            break;
        }
    }
    if (*p == '\n') p++;
    return *p == '\0';
}

static const jkv *jget(const jobj *o, const char *key)
{
    for (int i = 0; i < o->n; i++)
        if (!strcmp(o->kv[i].key, key)) return &o->kv[i];
    return NULL;
}

Test(log_selftest, json_reader_rejects_bad_json)
{
    static jobj o;
    cr_assert(json_parse("{\"a\":\"x\\u0001\\\"\",\"b\":-1.5e3,\"c\":true}\n", &o));
    cr_assert_eq(o.n, 3);
    cr_assert_str_eq(jget(&o, "a")->val, "x\x01\"");
    cr_assert_not(json_parse("{\"a\":\"x\ny\"}", &o), "raw newline accepted");
    cr_assert_not(json_parse("{\"a\":nan}", &o));
    cr_assert_not(json_parse("{\"a\":inf}", &o));
    cr_assert_not(json_parse("{\"a\":1}x", &o));
    cr_assert_not(json_parse("{\"a\":\"\\q\"}", &o));
    cr_assert_not(json_parse("{\"a\":01}", &o));
    cr_assert_not(json_parse("{\"a\":1", &o));
}

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                   */
/* ---------------------------------------------------------------------------------------- */

#define TS_LEN 24 /* 2026-11-28T08:00:00.123Z */

/* Checks `ts` is "YYYY-MM-DDTHH:MM:SS.mmmZ" and within a minute of now (UTC). */
static void check_timestamp(const char *ts)
{
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (int i = 0; i < TS_LEN; i++) {
        if (shape[i] == 'd')
            cr_assert(ts[i] >= '0' && ts[i] <= '9', "timestamp '%.*s' char %d", TS_LEN, ts, i);
        else
            cr_assert_eq(ts[i], shape[i], "timestamp '%.*s' char %d", TS_LEN, ts, i);
    }
    struct tm tm = {0};
    char tmp[TS_LEN + 1];
    memcpy(tmp, ts, TS_LEN);
    tmp[TS_LEN] = 0;
    cr_assert_not_null(strptime(tmp, "%Y-%m-%dT%H:%M:%S", &tm));
    time_t t = timegm(&tm), now = time(NULL);
    cr_assert(t >= now - 60 && t <= now + 1, "timestamp %s is not the current UTC time", tmp);
}

static char line[8192];

/* Formats into `line`, checks the length/termination invariants, strips one trailing '\n'
 * (a line may carry its newline) and returns the length without it. */
static size_t fmt(pylon_log_format f, pylon_log_level lv, const char *module, const char *msg,
                  const pylon_log_field *fields, size_t n)
{
    memset(line, 0x5a, sizeof line);
    size_t len = pylon_log_format_line(line, sizeof line, f, lv, module, msg, fields, n);
    cr_assert_lt(len, sizeof line);
    cr_assert_eq(line[len], '\0');
    cr_assert_eq(strlen(line), len, "returned length %zu, strlen %zu", len, strlen(line));
    if (len > 0 && line[len - 1] == '\n') line[--len] = '\0';
    cr_assert_null(memchr(line, '\n', len), "newline inside the line: %s", line);
    return len;
}

/* The text line without its timestamp and the space after it. */
static const char *text_body(void)
{
    check_timestamp(line);
    cr_assert_eq(line[TS_LEN], ' ', "no space after the timestamp: %s", line);
    return line + TS_LEN + 1;
}

/* The JSON line with its "ts" member checked and cut out: {"level":...}. */
static char json_rest[8192];
static const char *json_body(void)
{
    const char *pre = "{\"ts\":\"";
    cr_assert_eq(strncmp(line, pre, strlen(pre)), 0, "JSON line does not start with ts: %s", line);
    check_timestamp(line + strlen(pre));
    const char *after = line + strlen(pre) + TS_LEN;
    cr_assert_eq(strncmp(after, "\",", 2), 0, "after ts: %s", after);
    snprintf(json_rest, sizeof json_rest, "{%s", after + 2);
    return json_rest;
}

/* ---------------------------------------------------------------------------------------- */
/* Text                                                                                      */
/* ---------------------------------------------------------------------------------------- */

Test(log, text_line_exact)
{
    pylon_log_field f[] = {PYLON_LF_STR("addr", "0.0.0.0:4321")};
    fmt(PYLON_LOG_TEXT, PYLON_LOG_INFO, "http", "listening", f, 1);
    cr_assert_str_eq(text_body(), "INFO  http: listening addr=0.0.0.0:4321");
}

Test(log, text_levels_padded)
{
    fmt(PYLON_LOG_TEXT, PYLON_LOG_DEBUG, "m", "x", NULL, 0);
    cr_assert_str_eq(text_body(), "DEBUG m: x");
    fmt(PYLON_LOG_TEXT, PYLON_LOG_INFO, "m", "x", NULL, 0);
    cr_assert_str_eq(text_body(), "INFO  m: x");
    fmt(PYLON_LOG_TEXT, PYLON_LOG_WARN, "m", "x", NULL, 0);
    cr_assert_str_eq(text_body(), "WARN  m: x");
    fmt(PYLON_LOG_TEXT, PYLON_LOG_ERROR, "m", "x", NULL, 0);
    cr_assert_str_eq(text_body(), "ERROR m: x");
}

Test(log, text_all_field_kinds)
{
    pylon_log_field f[] = {
        PYLON_LF_INT("n", -42),    PYLON_LF_INT("min", INT64_MIN), PYLON_LF_UINT("u", UINT64_MAX),
        PYLON_LF_BOOL("ok", true), PYLON_LF_BOOL("no", false),     PYLON_LF_STR("s", "plain"),
        PYLON_LF_DOUBLE("d", 1.5),
    };
    fmt(PYLON_LOG_TEXT, PYLON_LOG_WARN, "db", "commit", f, 7);
    const char *body = text_body();
    const char *want = "WARN  db: commit n=-42 min=-9223372036854775808 u=18446744073709551615 "
                       "ok=true no=false s=plain d=";
    cr_assert_eq(strncmp(body, want, strlen(want)), 0, "got: %s", body);
    char *end;
    double d = strtod(body + strlen(want), &end);
    cr_assert_eq(d, 1.5, "double rendered as %s", body + strlen(want));
    cr_assert_eq(*end, '\0', "junk after the double: %s", end);
}

Test(log, text_stays_one_line_and_quotes_odd_values)
{
    pylon_log_field f[] = {PYLON_LF_STR("v", "two\nlines"), PYLON_LF_STR("w", "a b")};
    fmt(PYLON_LOG_TEXT, PYLON_LOG_INFO, "m", "first\nsecond\r\nthird", f, 2);
    const char *body = text_body();
    cr_assert_null(strchr(body, '\r'), "raw CR in a text line: %s", body);
    cr_assert(strstr(body, "first") && strstr(body, "second") && strstr(body, "third"));
    cr_assert_not_null(strstr(body, " w=\"a b\""), "value with a space not quoted: %s", body);
}

/* ---------------------------------------------------------------------------------------- */
/* JSON                                                                                      */
/* ---------------------------------------------------------------------------------------- */

Test(log, json_line_exact)
{
    pylon_log_field f[] = {PYLON_LF_STR("addr", "0.0.0.0:4321")};
    fmt(PYLON_LOG_JSON, PYLON_LOG_INFO, "http", "listening", f, 1);
    cr_assert_str_eq(json_body(),
                     "{\"level\":\"info\",\"module\":\"http\",\"msg\":\"listening\",\"addr\":\"0."
                     "0.0.0:4321\"}");
    static jobj o;
    cr_assert(json_parse(line, &o), "not JSON: %s", line);
}

Test(log, json_level_names)
{
    const char *names[] = {"debug", "info", "warn", "error"};
    pylon_log_level lv[] = {PYLON_LOG_DEBUG, PYLON_LOG_INFO, PYLON_LOG_WARN, PYLON_LOG_ERROR};
    static jobj o;
    for (int i = 0; i < 4; i++) {
        fmt(PYLON_LOG_JSON, lv[i], "m", "x", NULL, 0);
        cr_assert(json_parse(line, &o), "not JSON: %s", line);
        cr_assert_str_eq(jget(&o, "level")->val, names[i]);
        cr_assert_eq(strcasecmp(pylon_log_level_name(lv[i]), names[i]), 0);
    }
}

Test(log, json_all_field_kinds)
{
    pylon_log_field f[] = {
        PYLON_LF_INT("n", -42),      PYLON_LF_INT("min", INT64_MIN), PYLON_LF_UINT("u", UINT64_MAX),
        PYLON_LF_BOOL("ok", true),   PYLON_LF_BOOL("no", false),     PYLON_LF_STR("s", "plain"),
        PYLON_LF_DOUBLE("d", -0.25),
    };
    fmt(PYLON_LOG_JSON, PYLON_LOG_ERROR, "db", "commit", f, 7);
    const char *body = json_body();
    const char *want = "{\"level\":\"error\",\"module\":\"db\",\"msg\":\"commit\",\"n\":-42,"
                       "\"min\":-9223372036854775808,\"u\":18446744073709551615,\"ok\":true,"
                       "\"no\":false,\"s\":\"plain\",\"d\":";
    cr_assert_eq(strncmp(body, want, strlen(want)), 0, "got: %s", body);
    static jobj o;
    cr_assert(json_parse(line, &o), "not JSON: %s", line);
    cr_assert_eq(o.n, 11);
    const jkv *d = jget(&o, "d");
    cr_assert(d && d->kind == J_NUM);
    cr_assert_eq(strtod(d->val, NULL), -0.25);
}

/* Doubles must come out as valid JSON numbers with their value (or null where JSON has no
 * number for them), whatever their magnitude. */
Test(log, json_doubles_valid_and_right)
{
    const double vals[] = {0.0, 1.5, 12345.678, -3e9, 1e100, -1e300};
    static jobj o;
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        pylon_log_field f[] = {PYLON_LF_DOUBLE("d", vals[i])};
        fmt(PYLON_LOG_JSON, PYLON_LOG_INFO, "m", "x", f, 1);
        cr_assert(json_parse(line, &o), "%g gives invalid JSON: %s", vals[i], line);
        double got = strtod(jget(&o, "d")->val, NULL), mag = vals[i] < 0 ? -vals[i] : vals[i];
        double diff = got > vals[i] ? got - vals[i] : vals[i] - got;
        cr_assert(diff <= 1e-3 * (mag > 1.0 ? mag : 1.0), "%g rendered as %s", vals[i],
                  jget(&o, "d")->val);
    }
    const double odd[] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < 3; i++) {
        pylon_log_field f[] = {PYLON_LF_DOUBLE("d", odd[i])};
        fmt(PYLON_LOG_JSON, PYLON_LOG_INFO, "m", "x", f, 1);
        cr_assert(json_parse(line, &o), "%g gives invalid JSON: %s", odd[i], line);
    }
}

Test(log, json_escaping_exact)
{
    const char *msg = "say \"hi\" C:\\dir\nnext\x01\x1f end";
    pylon_log_field f[] = {PYLON_LF_STR("v", "q\"b\\n\nc\x02")};
    fmt(PYLON_LOG_JSON, PYLON_LOG_INFO, "m", msg, f, 1);
    cr_assert_not_null(strstr(line, "\"msg\":\"say \\\"hi\\\" C:\\\\dir\\nnext\\u0001\\u001"),
                       "msg escaped wrongly: %s", line);
    char c1f[8];
    const char *u = strstr(line, "\\u0001\\u001");
    cr_assert_not_null(u);
    memcpy(c1f, u + 6, 6);
    c1f[6] = 0;
    cr_assert_eq(strcasecmp(c1f, "\\u001f"), 0, "0x1f escaped as %s", c1f);
    cr_assert_not_null(strstr(line, "\"v\":\"q\\\"b\\\\n\\nc\\u0002\""),
                       "value escaped wrongly: %s", line);
    for (const char *p = line; *p; p++)
        cr_assert_geq((unsigned char)*p, 0x20, "raw control byte 0x%02x in JSON line",
                      (unsigned char)*p);
    static jobj o;
    cr_assert(json_parse(line, &o), "not JSON: %s", line);
    cr_assert_str_eq(jget(&o, "msg")->val, msg);
    cr_assert_str_eq(jget(&o, "v")->val, "q\"b\\n\nc\x02");
}

Test(log, json_round_trips_every_ascii_byte_and_utf8)
{
    char msg[200];
    size_t n = 0;
    for (int c = 1; c < 128; c++)
        msg[n++] = (char)c;
    strcpy(msg + n, " h\xc3\xa9llo \xe2\x9c\x93");
    pylon_log_field f[] = {PYLON_LF_STR("all", msg)};
    fmt(PYLON_LOG_JSON, PYLON_LOG_DEBUG, "mod\"ule", msg, f, 1);
    static jobj o;
    cr_assert(json_parse(line, &o), "not JSON: %s", line);
    cr_assert_str_eq(jget(&o, "msg")->val, msg);
    cr_assert_str_eq(jget(&o, "all")->val, msg);
    cr_assert_str_eq(jget(&o, "module")->val, "mod\"ule");
}

/* ---------------------------------------------------------------------------------------- */
/* Truncation                                                                                */
/* ---------------------------------------------------------------------------------------- */

static void check_truncation(pylon_log_format f, size_t cap)
{
    static char big[6000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    pylon_log_field fl[] = {PYLON_LF_STR("k", big), PYLON_LF_UINT("u", 7)};
    static char buf[256];
    memset(buf, 0x5a, sizeof buf);
    size_t len = pylon_log_format_line(buf, cap, f, PYLON_LOG_INFO, "m", big, fl, 2);
    cr_assert_lt(len, cap, "cap %zu: returned length %zu", cap, len);
    cr_assert_eq(buf[len], '\0', "cap %zu: not NUL-terminated at %zu", cap, len);
    cr_assert_eq(strlen(buf), len, "cap %zu", cap);
    for (size_t i = cap; i < sizeof buf; i++)
        cr_assert_eq((unsigned char)buf[i], 0x5a, "cap %zu: wrote byte %zu past the end", cap, i);
}

Test(log, truncation_stays_in_cap_and_terminated)
{
    const size_t caps[] = {1, 2, 3, 10, 25, 26, 40, 64, 200};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        check_truncation(PYLON_LOG_TEXT, caps[i]);
        check_truncation(PYLON_LOG_JSON, caps[i]);
    }
}

Test(log, exact_fit_is_not_truncated)
{
    for (int f = PYLON_LOG_TEXT; f <= PYLON_LOG_JSON; f++) {
        static char full[512], buf[512];
        size_t want = pylon_log_format_line(full, sizeof full, (pylon_log_format)f, PYLON_LOG_INFO,
                                            "m", "hello", NULL, 0);
        size_t got = pylon_log_format_line(buf, want + 1, (pylon_log_format)f, PYLON_LOG_INFO, "m",
                                           "hello", NULL, 0);
        cr_assert_eq(got, want);
        /* Same line except perhaps the millisecond part of the timestamp. */
        cr_assert_str_eq(buf + (f ? 31 : 24), full + (f ? 31 : 24));
        got = pylon_log_format_line(buf, want, (pylon_log_format)f, PYLON_LOG_INFO, "m", "hello",
                                    NULL, 0);
        cr_assert_lt(got, want);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Configuration and writing                                                                 */
/* ---------------------------------------------------------------------------------------- */

Test(log, level_filtering)
{
    pylon_log_configure(PYLON_LOG_TEXT, PYLON_LOG_WARN, 2);
    cr_assert_not(pylon_log_enabled(PYLON_LOG_DEBUG));
    cr_assert_not(pylon_log_enabled(PYLON_LOG_INFO));
    cr_assert(pylon_log_enabled(PYLON_LOG_WARN));
    cr_assert(pylon_log_enabled(PYLON_LOG_ERROR));
    pylon_log_configure(PYLON_LOG_JSON, PYLON_LOG_DEBUG, 2);
    cr_assert(pylon_log_enabled(PYLON_LOG_DEBUG));
    cr_assert(pylon_log_enabled(PYLON_LOG_INFO));
    pylon_log_configure(PYLON_LOG_TEXT, PYLON_LOG_ERROR, 2);
    cr_assert_not(pylon_log_enabled(PYLON_LOG_WARN));
    cr_assert(pylon_log_enabled(PYLON_LOG_ERROR));
}

static size_t read_all(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    buf[n] = 0;
    return n;
}

static size_t count_char(const char *s, char c)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == c;
    return n;
}

Test(log, write_to_pipe_one_line_per_call)
{
    int p[2];
    cr_assert_eq(pipe2(p, O_NONBLOCK), 0);
    pylon_log_configure(PYLON_LOG_TEXT, PYLON_LOG_INFO, p[1]);
    pylon_log_field f[] = {PYLON_LF_INT("n", 1)};
    pylon_log_write(PYLON_LOG_INFO, "a", "first", f, 1);
    pylon_log_write(PYLON_LOG_DEBUG, "a", "filtered", NULL, 0);
    pylon_log_write(PYLON_LOG_ERROR, "b", "second", NULL, 0);
    pylon_logf(PYLON_LOG_WARN, "c", "third %d %s", 3, "x");
    pylon_log_debug("c", "also filtered %d", 4);
    pylon_log_info("d", "fourth");
    static char out[16384];
    read_all(p[0], out, sizeof out);
    cr_assert_eq(count_char(out, '\n'), 4, "output:\n%s", out);
    cr_assert_null(strstr(out, "filtered"));
    char *save, *l = strtok_r(out, "\n", &save);
    const char *want[] = {"INFO  a: first n=1", "ERROR b: second", "WARN  c: third 3 x",
                          "INFO  d: fourth"};
    for (int i = 0; i < 4; i++, l = strtok_r(NULL, "\n", &save)) {
        cr_assert_not_null(l);
        check_timestamp(l);
        cr_assert_str_eq(l + TS_LEN + 1, want[i]);
    }

    pylon_log_configure(PYLON_LOG_JSON, PYLON_LOG_DEBUG, p[1]);
    pylon_log_debug("j", "q\"uote %d", 5);
    pylon_log_write(PYLON_LOG_INFO, "j", "two", f, 1);
    read_all(p[0], out, sizeof out);
    cr_assert_eq(count_char(out, '\n'), 2, "output:\n%s", out);
    static jobj o;
    l = strtok_r(out, "\n", &save);
    cr_assert(json_parse(l, &o), "not JSON: %s", l);
    cr_assert_str_eq(jget(&o, "msg")->val, "q\"uote 5");
    cr_assert_str_eq(jget(&o, "level")->val, "debug");
    l = strtok_r(NULL, "\n", &save);
    cr_assert(json_parse(l, &o), "not JSON: %s", l);
    cr_assert_str_eq(jget(&o, "n")->val, "1");
    close(p[0]);
    close(p[1]);
}

/* 4 threads write at once: every line arrives whole (one write per line). */
#define WRITERS    4
#define LINES_EACH 500

static int g_wfd;

static void *writer(void *arg)
{
    int id = (int)(intptr_t)arg;
    char msg[300];
    memset(msg, 'a' + id, sizeof msg - 1);
    msg[sizeof msg - 1] = 0;
    for (int i = 0; i < LINES_EACH; i++) {
        pylon_log_field f[] = {PYLON_LF_INT("w", id), PYLON_LF_INT("i", i)};
        pylon_log_write(PYLON_LOG_INFO, "t", msg, f, 2);
    }
    return NULL;
}

static void *drainer(void *arg)
{
    int fd = (int)(intptr_t)arg;
    size_t cap = 4 << 20, n = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = read(fd, buf + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = 0;
    return buf;
}

Test(log, concurrent_writers_lines_never_interleave, .timeout = 30)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    g_wfd = p[1];
    pylon_log_configure(PYLON_LOG_JSON, PYLON_LOG_INFO, p[1]);
    pthread_t d, w[WRITERS];
    pthread_create(&d, NULL, drainer, (void *)(intptr_t)p[0]);
    for (intptr_t i = 0; i < WRITERS; i++)
        pthread_create(&w[i], NULL, writer, (void *)i);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(w[i], NULL);
    close(p[1]);
    char *all;
    pthread_join(d, (void **)&all);
    close(p[0]);

    int next[WRITERS] = {0};
    static jobj o;
    size_t lines = 0;
    char *save, *l = strtok_r(all, "\n", &save);
    for (; l; l = strtok_r(NULL, "\n", &save), lines++) {
        cr_assert(json_parse(l, &o), "broken line %zu: %.80s", lines, l);
        int id = atoi(jget(&o, "w")->val), i = atoi(jget(&o, "i")->val);
        cr_assert(id >= 0 && id < WRITERS);
        cr_assert_eq(i, next[id], "writer %d: line %d after %d", id, i, next[id] - 1);
        next[id] = i + 1;
        const char *m = jget(&o, "msg")->val;
        cr_assert_eq(strlen(m), 299);
        cr_assert_eq(m[0], 'a' + id);
        cr_assert_eq(m[298], 'a' + id);
    }
    cr_assert_eq(lines, WRITERS * LINES_EACH);
    free(all);
}
