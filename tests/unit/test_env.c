/*
 * test_env.c — typed environment variables and flag values (engine/env.h).
 *
 * Proves, through setenv/unsetenv: unset and empty take the default; ints are read in range
 * and refused below/above the range, when not a number, with trailing junk, or overflowing;
 * bools accept true/false/1/0/yes/no/on/off in any case and nothing else; sizes accept K/M/G
 * and KiB/MiB/GiB (powers of 1024), refuse negatives, junk, overflow and out-of-range values;
 * enums match their choices without case and give the index. Every refusal fills one line
 * that names the variable, quotes the bad value and states the expected form (for an enum:
 * lists the choices). The pylon_parse_* functions behave the same on given text.
 */
#include "engine/env.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "support.h"

#define VAR "PYLON_TEST_VAR"

static void set(const char *v)
{
    if (v)
        setenv(VAR, v, 1);
    else
        unsetenv(VAR);
}

/* The error names the variable, quotes the value, says what was expected, is one line. */
static void check_err(const pylon_env_error *e, const char *name, const char *value)
{
    char quoted[300];
    snprintf(quoted, sizeof quoted, "\"%s\"", value);
    cr_assert_not_null(strstr(e->msg, name), "error does not name %s: %s", name, e->msg);
    cr_assert_not_null(strstr(e->msg, quoted), "error does not quote %s: %s", quoted, e->msg);
    cr_assert_not_null(strstr(e->msg, "expected"), "error does not say what is expected: %s",
                       e->msg);
    cr_assert_null(strchr(e->msg, '\n'), "error is not one line: %s", e->msg);
    cr_assert_lt(strlen(e->msg), sizeof e->msg);
}

/* ---------------------------------------------------------------------------------------- */
/* get / str                                                                                 */
/* ---------------------------------------------------------------------------------------- */

Test(env, get_and_str)
{
    set(NULL);
    cr_assert_null(pylon_env_get(VAR));
    cr_assert_str_eq(pylon_env_str(VAR, "dflt"), "dflt");
    set("");
    cr_assert_null(pylon_env_get(VAR), "empty must read as unset");
    cr_assert_str_eq(pylon_env_str(VAR, "dflt"), "dflt");
    set("hello world");
    cr_assert_str_eq(pylon_env_get(VAR), "hello world");
    cr_assert_str_eq(pylon_env_str(VAR, "dflt"), "hello world");
}

/* ---------------------------------------------------------------------------------------- */
/* int                                                                                       */
/* ---------------------------------------------------------------------------------------- */

static bool rint_(const char *v, int64_t *out, pylon_env_error *e)
{
    set(v);
    memset(e, 0, sizeof *e);
    return pylon_env_int(VAR, 7, 1, 256, out, e);
}

Test(env, int_default_and_range)
{
    int64_t v = -1;
    pylon_env_error e;
    cr_assert(rint_(NULL, &v, &e));
    cr_assert_eq(v, 7, "unset: %lld", (long long)v);
    v = -1;
    cr_assert(rint_("", &v, &e));
    cr_assert_eq(v, 7, "empty: %lld", (long long)v);
    cr_assert(rint_("42", &v, &e));
    cr_assert_eq(v, 42);
    cr_assert(rint_("1", &v, &e));
    cr_assert_eq(v, 1);
    cr_assert(rint_("256", &v, &e));
    cr_assert_eq(v, 256);
}

Test(env, int_out_of_range)
{
    int64_t v;
    pylon_env_error e;
    cr_assert_not(rint_("0", &v, &e), "below range accepted");
    check_err(&e, VAR, "0");
    cr_assert(strstr(e.msg, "1") && strstr(e.msg, "256"), "range not stated: %s", e.msg);
    cr_assert_not(rint_("257", &v, &e), "above range accepted");
    check_err(&e, VAR, "257");
    cr_assert_not(rint_("-5", &v, &e));
    check_err(&e, VAR, "-5");
}

Test(env, int_not_a_number)
{
    /* (Surrounding whitespace is left to the implementation: not tested either way.) */
    const char *bad[] = {"abc",
                         "12abc",
                         "42x",
                         "4.2",
                         "0x10",
                         "--3",
                         "-",
                         "+",
                         " ",
                         "1e3",
                         "99999999999999999999",
                         "-99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v;
        pylon_env_error e;
        cr_assert_not(rint_(bad[i], &v, &e), "\"%s\" accepted as %lld", bad[i], (long long)v);
        check_err(&e, VAR, bad[i]);
    }
}

Test(env, int_full_range_and_negatives)
{
    int64_t v;
    pylon_env_error e;
    set("-9223372036854775808");
    cr_assert(pylon_env_int(VAR, 0, INT64_MIN, INT64_MAX, &v, &e), "%s", e.msg);
    cr_assert_eq(v, INT64_MIN);
    set("9223372036854775807");
    cr_assert(pylon_env_int(VAR, 0, INT64_MIN, INT64_MAX, &v, &e), "%s", e.msg);
    cr_assert_eq(v, INT64_MAX);
    set("9223372036854775808");
    cr_assert_not(pylon_env_int(VAR, 0, INT64_MIN, INT64_MAX, &v, &e), "overflow accepted");
    check_err(&e, VAR, "9223372036854775808");
    set("-17");
    cr_assert(pylon_env_int(VAR, 0, -100, 100, &v, &e));
    cr_assert_eq(v, -17);
}

/* ---------------------------------------------------------------------------------------- */
/* bool                                                                                      */
/* ---------------------------------------------------------------------------------------- */

Test(env, bool_forms)
{
    const char *yes[] = {"true", "TRUE", "True", "1", "yes", "YES", "Yes", "on", "ON", "oN"};
    const char *no[] = {"false", "FALSE", "False", "0", "no", "NO", "No", "off", "OFF", "oFf"};
    pylon_env_error e;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        bool b = false;
        set(yes[i]);
        cr_assert(pylon_env_bool(VAR, false, &b, &e), "\"%s\" refused: %s", yes[i], e.msg);
        cr_assert(b, "\"%s\" read as false", yes[i]);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        bool b = true;
        set(no[i]);
        cr_assert(pylon_env_bool(VAR, true, &b, &e), "\"%s\" refused: %s", no[i], e.msg);
        cr_assert_not(b, "\"%s\" read as true", no[i]);
    }
    bool b = false;
    set(NULL);
    cr_assert(pylon_env_bool(VAR, true, &b, &e));
    cr_assert(b, "unset: default not used");
    b = true;
    set("");
    cr_assert(pylon_env_bool(VAR, false, &b, &e));
    cr_assert_not(b, "empty: default not used");
}

Test(env, bool_bad_values)
{
    const char *bad[] = {"2", "maybe", "truex", "t", "y", "n", "tru", "yess", "onn", "01", "-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bool b;
        pylon_env_error e;
        memset(&e, 0, sizeof e);
        set(bad[i]);
        cr_assert_not(pylon_env_bool(VAR, false, &b, &e), "\"%s\" accepted", bad[i]);
        check_err(&e, VAR, bad[i]);
        cr_assert(strstr(e.msg, "true") && strstr(e.msg, "false"), "expected forms not listed: %s",
                  e.msg);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* size                                                                                      */
/* ---------------------------------------------------------------------------------------- */

static bool rsize(const char *v, uint64_t min, uint64_t max, uint64_t *out, pylon_env_error *e)
{
    set(v);
    memset(e, 0, sizeof *e);
    return pylon_env_size(VAR, 1234, min, max, out, e);
}

Test(env, size_suffixes)
{
    static const struct {
        const char *text;
        uint64_t want;
    } ok[] = {
        {"0", 0},
        {"1024", 1024},
        {"4K", 4096},
        {"4KiB", 4096},
        {"3M", 3ull << 20},
        {"2MiB", 2ull << 20},
        {"1G", 1ull << 30},
        {"5GiB", 5ull << 30},
        {"17179869183G", 17179869183ull << 30}, /* the largest whole number of GiB */
        {"18446744073709551615", UINT64_MAX},
    };
    pylon_env_error e;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 0;
        cr_assert(rsize(ok[i].text, 0, UINT64_MAX, &v, &e), "\"%s\" refused: %s", ok[i].text,
                  e.msg);
        cr_assert_eq(v, ok[i].want, "\"%s\" read as %llu", ok[i].text, (unsigned long long)v);
    }
    uint64_t v = 0;
    cr_assert(rsize(NULL, 0, UINT64_MAX, &v, &e));
    cr_assert_eq(v, 1234);
    v = 0;
    cr_assert(rsize("", 0, UINT64_MAX, &v, &e));
    cr_assert_eq(v, 1234);
}

Test(env, size_bad_values)
{
    const char *bad[] = {"abc",
                         "12X",
                         "K",
                         "4KB4",
                         "4K K",
                         "1.5M",
                         "-1",
                         "-1K",
                         "4Kx",
                         "M4",
                         "18446744073709551616", /* 2^64 */
                         "17179869184G",         /* 2^64 bytes */
                         "99999999999999999999K",
                         "16777216T"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 0;
        pylon_env_error e;
        cr_assert_not(rsize(bad[i], 0, UINT64_MAX, &v, &e), "\"%s\" accepted as %llu", bad[i],
                      (unsigned long long)v);
        check_err(&e, VAR, bad[i]);
    }
}

Test(env, size_range)
{
    uint64_t v;
    pylon_env_error e;
    cr_assert(rsize("1M", 1024, 1ull << 30, &v, &e), "%s", e.msg);
    cr_assert_eq(v, 1ull << 20);
    cr_assert_not(rsize("512", 1024, 1ull << 30, &v, &e), "below min accepted");
    check_err(&e, VAR, "512");
    cr_assert_not(rsize("2G", 1024, 1ull << 30, &v, &e), "above max accepted");
    check_err(&e, VAR, "2G");
    cr_assert(rsize("1G", 1024, 1ull << 30, &v, &e), "max itself refused: %s", e.msg);
    cr_assert(rsize("1K", 1024, 1ull << 30, &v, &e), "min itself refused: %s", e.msg);
}

/* ---------------------------------------------------------------------------------------- */
/* enum                                                                                      */
/* ---------------------------------------------------------------------------------------- */

Test(env, enum_choices)
{
    static const char *const choices[] = {"text", "json", "logfmt", NULL};
    pylon_env_error e;
    int v = -1;
    set(NULL);
    cr_assert(pylon_env_enum(VAR, 2, choices, &v, &e));
    cr_assert_eq(v, 2);
    v = -1;
    set("");
    cr_assert(pylon_env_enum(VAR, 0, choices, &v, &e));
    cr_assert_eq(v, 0);
    set("json");
    cr_assert(pylon_env_enum(VAR, 0, choices, &v, &e));
    cr_assert_eq(v, 1);
    set("JSON");
    cr_assert(pylon_env_enum(VAR, 0, choices, &v, &e));
    cr_assert_eq(v, 1);
    set("LogFmt");
    cr_assert(pylon_env_enum(VAR, 0, choices, &v, &e));
    cr_assert_eq(v, 2);

    const char *bad[] = {"xml", "jso", "jsonx", "text "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        set(bad[i]);
        cr_assert_not(pylon_env_enum(VAR, 0, choices, &v, &e), "\"%s\" accepted", bad[i]);
        check_err(&e, VAR, bad[i]);
        for (int c = 0; choices[c]; c++)
            cr_assert_not_null(strstr(e.msg, choices[c]), "choice %s not listed: %s", choices[c],
                               e.msg);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Error message edge cases and the parse_* variants                                         */
/* ---------------------------------------------------------------------------------------- */

Test(env, error_for_long_value_stays_terminated)
{
    char big[1000];
    memset(big, '9', sizeof big - 1);
    big[sizeof big - 1] = 0;
    int64_t v;
    pylon_env_error e;
    memset(&e, 0x5a, sizeof e);
    set(big);
    cr_assert_not(pylon_env_int(VAR, 7, 1, 256, &v, &e));
    cr_assert_not_null(memchr(e.msg, '\0', sizeof e.msg), "message not NUL-terminated");
    cr_assert_not_null(strstr(e.msg, VAR), "name lost: %s", e.msg);
}

Test(env, error_for_value_with_newline_is_one_line)
{
    int64_t v;
    pylon_env_error e;
    memset(&e, 0, sizeof e);
    set("12\n34");
    cr_assert_not(pylon_env_int(VAR, 7, 1, 256, &v, &e));
    cr_assert_not_null(strstr(e.msg, VAR));
    cr_assert_null(strchr(e.msg, '\n'), "a value's newline split the message: %s", e.msg);
}

Test(env, parse_functions)
{
    int64_t i;
    bool b;
    uint64_t s;
    pylon_env_error e;
    cr_assert(pylon_parse_int("--port", "8080", 1, 65535, &i, &e));
    cr_assert_eq(i, 8080);
    memset(&e, 0, sizeof e);
    cr_assert_not(pylon_parse_int("--port", "80x", 1, 65535, &i, &e));
    check_err(&e, "--port", "80x");
    memset(&e, 0, sizeof e);
    cr_assert_not(pylon_parse_int("--port", "70000", 1, 65535, &i, &e));
    check_err(&e, "--port", "70000");
    memset(&e, 0, sizeof e);
    cr_assert_not(pylon_parse_int("--port", "", 1, 65535, &i, &e), "empty text accepted");

    cr_assert(pylon_parse_bool("--dev", "Yes", &b, &e));
    cr_assert(b);
    cr_assert(pylon_parse_bool("--dev", "off", &b, &e));
    cr_assert_not(b);
    memset(&e, 0, sizeof e);
    cr_assert_not(pylon_parse_bool("--dev", "nope", &b, &e));
    check_err(&e, "--dev", "nope");

    cr_assert(pylon_parse_size("--max-body", "8MiB", 0, UINT64_MAX, &s, &e));
    cr_assert_eq(s, 8ull << 20);
    memset(&e, 0, sizeof e);
    cr_assert_not(pylon_parse_size("--max-body", "8Q", 0, UINT64_MAX, &s, &e));
    check_err(&e, "--max-body", "8Q");
}
