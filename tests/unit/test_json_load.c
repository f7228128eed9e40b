/*
 * test_json_load.c — pylon_json_loadb against json_loadb (actors/json_load.h).
 *
 * Proves: for every document — hand-picked edge cases of numbers, strings, escapes, UTF-8,
 * nesting, duplicates, whitespace and trailing bytes, then 60 000 generated documents and
 * 120 000 single-byte mutations of them — under each flag combination the two give the same
 * outcome: both refuse with the same error text, line, column and position, or both build
 * trees that are json_equal and dump to the same bytes (same types, values and key order).
 * Also that the fast path is really taken (the comparisons above would pass if everything went
 * to jansson): plain documents leave the fallback count unchanged, a \u escape raises it.
 */
#include "actors/json_load.h"

#include "support.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const size_t FLAG_SETS[] = {0, JSON_REJECT_DUPLICATES, JSON_DECODE_ANY,
                                   JSON_REJECT_DUPLICATES | JSON_DECODE_ANY};

static void check_doc(const char *doc, size_t len)
{
    for (size_t f = 0; f < sizeof FLAG_SETS / sizeof *FLAG_SETS; f++) {
        json_error_t we, ge;
        memset(&we, 0x5a, sizeof we);
        memset(&ge, 0x5a, sizeof ge);
        json_t *want = json_loadb(doc, len, FLAG_SETS[f], &we);
        json_t *got = pylon_json_loadb(doc, len, FLAG_SETS[f], &ge);
        cr_assert_eq(!want, !got, "flags %zu, %.*s: jansson %s, ours %s", FLAG_SETS[f], (int)len,
                     doc, want ? "accepts" : we.text, got ? "accepts" : ge.text);
        if (!want) {
            cr_assert_str_eq(ge.text, we.text);
            cr_assert_eq(ge.line, we.line);
            cr_assert_eq(ge.column, we.column);
            cr_assert_eq(ge.position, we.position);
            continue;
        }
        cr_assert(json_equal(want, got), "flags %zu: %.*s", FLAG_SETS[f], (int)len, doc);
        char *a = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY);
        char *b = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
        cr_assert_str_eq(b, a, "key order or value form differs for %.*s", (int)len, doc);
        free(a);
        free(b);
        cr_assert_eq(ge.line, -1);
        cr_assert_eq(ge.column, -1);
        cr_assert_str_eq(ge.source, "<buffer>");
        json_decref(want);
        json_decref(got);
    }
}

static void check(const char *doc)
{
    check_doc(doc, strlen(doc));
}

Test(json_load, edge_cases_match_jansson)
{
    static const char *const docs[] = {
        /* containers and whitespace */
        "{}",
        "[]",
        " \t\r\n{ } \n",
        "[ ]",
        "{\"a\":1}",
        "[1,2,3]",
        "{\"a\":[{},[],{\"b\":null}]}",
        "{\"a\":1,}",
        "[1,]",
        "[,1]",
        "{,}",
        "{\"a\" 1}",
        "{\"a\":}",
        "{a:1}",
        "{\"a\":1 \"b\":2}",
        "[1 2]",
        "{",
        "[",
        "}",
        "]",
        "",
        "   ",
        "[1]x",
        "[1] [2]",
        "{}{}",
        "\xef\xbb\xbf{}",
        /* scalars at the top (only with JSON_DECODE_ANY) */
        "1",
        "-1",
        "\"s\"",
        "true",
        "false",
        "null",
        " 7 ",
        "truex",
        "nul",
        "tru",
        "nulll",
        "[true,false,null]",
        "[True]",
        "[NaN]",
        "[Infinity]",
        "[-Infinity]",
        /* numbers */
        "[0]",
        "[-0]",
        "[01]",
        "[-01]",
        "[00]",
        "[1.]",
        "[.5]",
        "[-]",
        "[+1]",
        "[1e]",
        "[1e+]",
        "[1E-2]",
        "[1e5]",
        "[1.5e-3]",
        "[-0.0]",
        "[0e0]",
        "[123456789012345678]",
        "[-123456789012345678]",
        "[1234567890123456789]",
        "[9223372036854775807]",
        "[9223372036854775808]",
        "[-9223372036854775808]",
        "[-9223372036854775809]",
        "[99999999999999999999999]",
        "[1e400]",
        "[-1e400]",
        "[1e-400]",
        "[4.9e-324]",
        "[1.7976931348623157e308]",
        "[0.1]",
        "[3.141592653589793]",
        "[1.00000000000000000000000000000000000000000000000000000000000000001]",
        "[2.0]",
        "[1x]",
        "[1-]",
        "[0x10]",
        "[1_000]",
        /* strings and escapes */
        "[\"\"]",
        "[\"a\\\"b\"]",
        "[\"\\\\\"]",
        "[\"\\/\"]",
        "[\"\\b\\f\\n\\r\\t\"]",
        "[\"\\x\"]",
        "[\"\\u00e9\"]",
        "[\"\\ud83d\\ude00\"]",
        "[\"\\ud83d\"]",
        "[\"\\u0000\"]",
        "[\"\\u12\"]",
        "[\"a\tb\"]",
        "[\"a\nb\"]",
        "[\"\x01\"]",
        "[\"\x10\"]",
        "[\"\x1f\"]",
        "[\"\x20\"]",
        "[\"\x7f\"]",
        "[\"unterminated]",
        "[\"\\",
        "[\"caf\xc3\xa9\"]",
        "[\"\xe2\x9c\x93\"]",
        "[\"\xf0\x9f\x98\x80\"]",
        "[\"\xc3\"]",
        "[\"\xc0\x80\"]",
        "[\"\xc1\xbf\"]",
        "[\"\xe0\x80\x80\"]",
        "[\"\xe0\x9f\xbf\"]",
        "[\"\xed\xa0\x80\"]",
        "[\"\xed\x9f\xbf\"]",
        "[\"\xf0\x8f\xbf\xbf\"]",
        "[\"\xf4\x8f\xbf\xbf\"]",
        "[\"\xf4\x90\x80\x80\"]",
        "[\"\xf5\x80\x80\x80\"]",
        "[\"\x80\"]",
        "[\"\xbf\"]",
        "[\"\xe2\x9c\"]",
        "[\"\xe2\x28\xa1\"]",
        "\xc3\xa9",
        /* keys */
        "{\"\":1}",
        "{\"a\":1,\"a\":2}",
        "{\"a\":1,\"b\":2,\"a\":3}",
        "{\"k\\n\":1}",
        "{\"\\u0061\":1,\"a\":2}",
        "{\"caf\xc3\xa9\":true}",
        "{\"z\":1,\"y\":2,\"x\":3}",
        "{\"a\\u0000b\":1}",
        "{1:2}",
        "{null:1}",
        /* a typical insert body */
        "{\"label\":\"item-42\",\"n\":42,\"done\":false}",
        "{\"title\":\"ünïcødé ✓ \\\"quoted\\\"\",\"done\":true,\"priority\":3,\"notes\":null}",
    };
    for (size_t i = 0; i < sizeof docs / sizeof *docs; i++)
        check(docs[i]);
    /* NUL bytes inside the length */
    check_doc("[1]\0", 4);
    check_doc("[\"a\0b\"]", 7);
    check_doc("\0", 1);
}

Test(json_load, plain_documents_take_the_fast_path)
{
    static const char *const plain[] = {"{\"label\":\"item-42\",\"n\":42,\"done\":false}",
                                        "[1, 2.5, \"caf\xc3\xa9\", {\"a\": [true, null]}]",
                                        "{\"q\":\"line\\nbreak\"}"};
    for (size_t i = 0; i < sizeof plain / sizeof *plain; i++) {
        size_t before = pylon_json_loadb_fallbacks();
        json_t *j = pylon_json_loadb(plain[i], strlen(plain[i]), JSON_REJECT_DUPLICATES, NULL);
        cr_assert_not_null(j);
        json_decref(j);
        cr_assert_eq(pylon_json_loadb_fallbacks(), before, "%s went to jansson", plain[i]);
    }
    size_t before = pylon_json_loadb_fallbacks();
    json_t *j = pylon_json_loadb("[\"\\u00e9\"]", 10, 0, NULL);
    cr_assert_not_null(j);
    cr_assert_str_eq(json_string_value(json_array_get(j, 0)), "\xc3\xa9");
    json_decref(j);
    cr_assert_eq(pylon_json_loadb_fallbacks(), before + 1);
}

Test(json_load, nesting_depth_matches_jansson)
{
    static char doc[2 * 3000 + 8];
    const int depths[] = {1, 63, 64, 65, 100, 2047, 2048, 2049, 3000};
    for (size_t i = 0; i < sizeof depths / sizeof *depths; i++) {
        int d = depths[i], n = 0;
        for (int k = 0; k < d; k++)
            doc[n++] = '[';
        for (int k = 0; k < d; k++)
            doc[n++] = ']';
        check_doc(doc, (size_t)n);
        n = 0; /* objects nested through one key each */
        for (int k = 0; k < d && k < 1000; k++) {
            memcpy(doc + n, "{\"k\":", 5);
            n += 5;
        }
        doc[n++] = '1';
        for (int k = 0; k < d && k < 1000; k++)
            doc[n++] = '}';
        check_doc(doc, (size_t)n);
    }
}

/* ---- generated documents --------------------------------------------------------------- */

static uint64_t rng = 0x243f6a8885a308d3u;
static unsigned pick(unsigned n)
{
    return (unsigned)(test_random(&rng) % n);
}

typedef struct {
    char *p;
    size_t len, cap;
} text;

static void put(text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->p = realloc(t->p, t->cap);
        cr_assert_not_null(t->p);
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void puts_(text *t, const char *s)
{
    put(t, s, strlen(s));
}

static void space(text *t)
{
    static const char *const ws[] = {"", "", "", " ", "\n", "\t ", "\r\n  "};
    puts_(t, ws[pick(7)]);
}

static void gen_string(text *t)
{
    static const char *const parts[] = {"a",
                                        "label",
                                        "Z",
                                        "0",
                                        " ",
                                        "\\\"",
                                        "\\\\",
                                        "\\/",
                                        "\\n",
                                        "\\t",
                                        "\\b",
                                        "\\f",
                                        "\\r",
                                        "\\u00e9",
                                        "\\ud83d\\ude00",
                                        "\xc3\xa9",
                                        "\xe2\x9c\x93",
                                        "\xf0\x9f\x98\x80",
                                        "~",
                                        "'",
                                        "\x7f",
                                        "-_.:",
                                        "key",
                                        "x"};
    puts_(t, "\"");
    for (unsigned i = 0, n = pick(6); i < n; i++)
        puts_(t, parts[pick(sizeof parts / sizeof *parts)]);
    puts_(t, "\"");
}

static void gen_number(text *t)
{
    static const char *const nums[] = {"0",
                                       "-0",
                                       "7",
                                       "-42",
                                       "123456789012345678",
                                       "-999999999999999999",
                                       "1234567890123456789",
                                       "9223372036854775807",
                                       "-9223372036854775808",
                                       "18446744073709551616",
                                       "0.5",
                                       "-2.25",
                                       "1e3",
                                       "1E-3",
                                       "6.02e23",
                                       "-1.5e-300",
                                       "1e308",
                                       "1e309",
                                       "2.0",
                                       "3.14159",
                                       "0.0001",
                                       "12.5e+2",
                                       "5e-324",
                                       "1e-400"};
    puts_(t, nums[pick(sizeof nums / sizeof *nums)]);
}

static void gen_value(text *t, int depth)
{
    unsigned k = depth > 4 ? pick(6) : pick(8);
    switch (k) {
    case 0:
    case 1:
        gen_string(t);
        break;
    case 2:
    case 3:
        gen_number(t);
        break;
    case 4:
        puts_(t, pick(2) ? "true" : "false");
        break;
    case 5:
        puts_(t, "null");
        break;
    case 6: {
        puts_(t, "[");
        for (unsigned i = 0, n = pick(5); i < n; i++) {
            if (i) puts_(t, ",");
            space(t);
            gen_value(t, depth + 1);
            space(t);
        }
        puts_(t, "]");
        break;
    }
    default: {
        static const char *const keys[] = {"\"a\"", "\"b\"",           "\"label\"", "\"n\"",
                                           "\"\"",  "\"caf\xc3\xa9\"", "\"k\\n\"",  "\"\\u0061\""};
        puts_(t, "{");
        for (unsigned i = 0, n = pick(5); i < n; i++) {
            if (i) puts_(t, ",");
            space(t);
            puts_(t, keys[pick(sizeof keys / sizeof *keys)]); /* repeats happen */
            space(t);
            puts_(t, ":");
            space(t);
            gen_value(t, depth + 1);
            space(t);
        }
        puts_(t, "}");
        break;
    }
    }
}

Test(json_load, generated_documents_and_their_mutations_match_jansson)
{
    static const char mutants[] = "{}[]\",:\\ 0123456789.eE+-tfnulx\x01\x1f\x80\xc3\xff";
    text t = {0};
    for (int i = 0; i < 60000; i++) {
        t.len = 0;
        space(&t);
        gen_value(&t, pick(3) ? 5 : 0); /* a third are containers at the top */
        space(&t);
        check_doc(t.p, t.len);
        for (int m = 0; m < 2 && t.len; m++) { /* one byte replaced, inserted or dropped */
            char *copy = malloc(t.len + 2);
            cr_assert_not_null(copy);
            size_t at = pick((unsigned)t.len), n = t.len;
            memcpy(copy, t.p, t.len);
            char c = mutants[pick(sizeof mutants - 1)];
            switch (pick(3)) {
            case 0:
                copy[at] = c;
                break;
            case 1:
                memmove(copy + at + 1, copy + at, n - at);
                copy[at] = c;
                n++;
                break;
            default:
                memmove(copy + at, copy + at + 1, n - at - 1);
                n--;
            }
            check_doc(copy, n);
            free(copy);
        }
    }
    free(t.p);
}
