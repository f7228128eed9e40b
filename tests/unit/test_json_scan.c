/* json_scan: the plain inputs it reads in place, and everything it must leave to jansson
 * (returning false) so that what is accepted or dropped stays jansson's decision. */
#include "shards/json_scan.h"

#include "support.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static bool msg(const char *t, const char **in, size_t *n, uint64_t *seq)
{
    return pylon_scan_input_msg(t, strlen(t), in, n, seq);
}

Test(json_scan, input_messages_read_in_place)
{
    static const struct {
        const char *text, *input;
        uint64_t seq;
    } ok[] = {
        {"{\"input\":{\"dx\":0.5,\"dy\":-1},\"client_seq\":12}", "{\"dx\":0.5,\"dy\":-1}", 12},
        {"{\"client_seq\":0,\"input\":[1,\"a\",true,false,null,{}]}",
         "[1,\"a\",true,false,null,{}]", 0},
        {"{\"input\":\"north\"}", "\"north\"", 0},
        {"{\"client_seq\":999999999999999999}", "null", 999999999999999999ull},
        {"{}", "null", 0},
        {"{\"input\":{\"a\":{\"b\":[[]]}},\"client_seq\":3}", "{\"a\":{\"b\":[[]]}}", 3},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        const char *in;
        size_t n;
        uint64_t seq;
        cr_assert(msg(ok[i].text, &in, &n, &seq), "%s", ok[i].text);
        cr_assert_eq(n, strlen(ok[i].input), "%s", ok[i].text);
        cr_assert(memcmp(in, ok[i].input, n) == 0, "%s", ok[i].text);
        cr_assert_eq(seq, ok[i].seq, "%s", ok[i].text);
    }
}

Test(json_scan, everything_else_is_left_to_jansson)
{
    static const char *const no[] = {
        "not json",
        "",
        "[1,2,3]",
        "{\"input\":{\"dx\":1},\"client_seq\":\"3\"}",
        "{\"input\":{\"dx\":1},\"client_seq\":1.5}",
        "{\"input\":1,\"client_seq\":-1}",
        "{\"input\":1,\"client_seq\":1e3}",
        "{\"input\":1,\"client_seq\":1234567890123456789}",
        "{\"input\": 1}",           /* whitespace */
        "{\"input\":\"\\u00e9\"}",  /* escapes */
        "{\"input\":\"\xc3\xa9\"}", /* non-ASCII */
        "{\"input\":1e400}",        /* exponents (overflow is jansson's to refuse) */
        "{\"input\":01}",
        "{\"input\":1.}",
        "{\"input\":-}",
        "{\"input\":.5}",
        "{\"input\":tru}",
        "{\"input\":[1,]}",
        "{\"input\":{\"a\":1,}}",
        "{\"input\":1",
        "{\"input\":1}x",
        "{\"input\":1,\"input\":2}",
        "{\"input\":1,\"other\":2}",
        "{\"input\":99999999999999999999}",
        "{\"input\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
    };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        const char *in;
        size_t n;
        uint64_t seq;
        cr_assert_not(msg(no[i], &in, &n, &seq), "%s", no[i]);
    }
}

Test(json_scan, number_objects)
{
    static const char *const keys[2] = {"dx", "dy"};
    double v[2];
    bool has[2];
    const char *t = "{\"dy\":-0.25,\"dx\":1}";
    cr_assert(pylon_scan_number_object(t, strlen(t), keys, 2, v, has));
    cr_assert(has[0] && has[1]);
    cr_assert_eq(v[0], 1.0);
    cr_assert_eq(v[1], -0.25);
    t = "{\"dx\":0.1}";
    cr_assert(pylon_scan_number_object(t, strlen(t), keys, 2, v, has));
    cr_assert(has[0] && !has[1]);
    cr_assert_eq(v[0], 0.1);
    static const char *const no[] = {
        "{\"dx\":\"1\"}", "{\"dx\":1,\"dx\":2}", "{\"dz\":1}", "{\"dx\":1,\"action\":\"move\"}",
        "null",           "{\"dx\":1e2}",        "{\"dx\":1} "};
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        cr_assert_not(pylon_scan_number_object(no[i], strlen(no[i]), keys, 2, v, has), "%s", no[i]);
}

/* Number values are strtod's, bit for bit (short numbers skip strtod: see number_value), for
 * every length of integer and fraction part up to the 64-byte limit, both signs. */
Test(json_scan, number_values_are_strtods_bit_for_bit)
{
    static const char *const keys[1] = {"dx"};
    uint64_t s = 0x2545f4914f6cdd1du;
    char num[80], doc[128];
    for (int t = 0; t < 300000; t++) {
        test_random(&s);
        size_t n = 0;
        if (s & 1) num[n++] = '-';
        unsigned int_digits = 1 + (unsigned)(s >> 8) % 18, frac_digits = (unsigned)(s >> 16) % 24;
        uint64_t r = s;
        for (unsigned i = 0; i < int_digits; i++, r = r * 6364136223846793005u + 1)
            num[n++] =
                (char)('0' + (i == 0 && int_digits > 1 ? 1 + (r >> 33) % 9 : (r >> 33) % 10));
        if (frac_digits) {
            num[n++] = '.';
            for (unsigned i = 0; i < frac_digits; i++, r = r * 6364136223846793005u + 1)
                num[n++] = (char)('0' + (r >> 33) % 10);
        }
        num[n] = '\0';
        snprintf(doc, sizeof doc, "{\"dx\":%s}", num);
        double v;
        bool has;
        if (!pylon_scan_number_object(doc, strlen(doc), keys, 1, &v, &has)) continue; /* too long */
        double want = strtod(num, NULL);
        cr_assert(memcmp(&v, &want, sizeof v) == 0, "%s: %.17g, strtod %.17g", num, v, want);
    }
    const char *zero = "{\"dx\":-0}";
    double v;
    bool has;
    cr_assert(pylon_scan_number_object(zero, strlen(zero), keys, 1, &v, &has));
    cr_assert(v == 0 && signbit(v), "-0 keeps its sign");
}
