/*
 * test_codec.c — the shard WebSocket's alternative encodings (shards/codec.h).
 *
 * Proves: the delta rule of pylon.delta (changed keys only, removed keys as null, recursion
 * into objects present on both sides, arrays and type changes replaced whole, nothing at all
 * when unchanged, whole snapshots when a root is not an object), that applying the delta as a
 * merge patch rebuilds the new snapshot; and that JSON -> msgpack -> JSON keeps every value
 * kind, while malformed, trailing or unrepresentable msgpack is refused.
 */
#include "shards/codec.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include "support.h"

static json_t *js(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
    cr_assert_not_null(j, "bad test JSON %s: %s", text, je.text);
    return j;
}

/* RFC 7386 merge patch (what a pylon.delta client does with a delta). */
static json_t *apply(json_t *target, const json_t *patch)
{
    if (!json_is_object(patch)) return json_deep_copy(patch);
    json_t *out = json_is_object(target) ? json_deep_copy(target) : json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)patch, k, v)
    {
        if (json_is_null(v)) {
            json_object_del(out, k);
        } else {
            json_t *merged = apply(json_object_get(out, k), v);
            json_object_set_new(out, k, merged);
        }
    }
    return out;
}

/* The delta of prev -> cur must be `want` (NULL: unchanged) and must rebuild cur. */
static void check_delta(const char *prev, const char *cur, const char *want)
{
    json_t *p = js(prev), *c = js(cur), *d = NULL;
    pylon_diff_result r = pylon_json_diff(p, c, &d);
    if (!want) {
        cr_assert_eq(r, PYLON_DIFF_SAME, "%s -> %s: expected no change", prev, cur);
        cr_assert_null(d);
    } else {
        cr_assert_eq(r, PYLON_DIFF_DELTA, "%s -> %s: expected a delta", prev, cur);
        json_t *w = js(want);
        char *got = json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS);
        cr_assert(json_equal(d, w), "%s -> %s: delta %s, expected %s", prev, cur, got, want);
        free(got);
        json_t *rebuilt = apply(p, d);
        cr_assert(json_equal(rebuilt, c), "%s + delta does not rebuild %s", prev, cur);
        json_decref(rebuilt);
        json_decref(w);
    }
    json_decref(d);
    json_decref(p);
    json_decref(c);
    assert_no_leaks();
}

Test(delta, unchanged_is_nothing)
{
    check_delta("{}", "{}", NULL);
    check_delta("{\"a\":1,\"b\":{\"c\":[1,2]}}", "{\"b\":{\"c\":[1,2]},\"a\":1}", NULL);
    check_delta("{\"a\":null}", "{\"a\":null}", NULL);
}

Test(delta, changed_keys_only)
{
    check_delta("{\"a\":1,\"b\":2,\"c\":\"x\"}", "{\"a\":1,\"b\":3,\"c\":\"x\"}", "{\"b\":3}");
    check_delta("{\"a\":1}", "{\"a\":1,\"n\":{\"x\":1}}", "{\"n\":{\"x\":1}}");
    check_delta("{\"a\":true}", "{\"a\":false}", "{\"a\":false}");
    check_delta("{\"a\":1}", "{\"a\":1.5}", "{\"a\":1.5}");
}

Test(delta, removed_keys_are_null)
{
    check_delta("{\"a\":1,\"b\":2}", "{\"a\":1}", "{\"b\":null}");
    check_delta("{\"o\":{\"x\":1,\"y\":2}}", "{\"o\":{\"x\":1}}", "{\"o\":{\"y\":null}}");
}

Test(delta, recurses_into_objects)
{
    check_delta("{\"you\":{\"x\":1,\"y\":2,\"ack\":3},\"n\":0}",
                "{\"you\":{\"x\":5,\"y\":2,\"ack\":3},\"n\":0}", "{\"you\":{\"x\":5}}");
    check_delta("{\"a\":{\"b\":{\"c\":1,\"d\":2}}}", "{\"a\":{\"b\":{\"c\":1,\"d\":3}}}",
                "{\"a\":{\"b\":{\"d\":3}}}");
    /* an object that empties sends its removed keys */
    check_delta("{\"a\":{\"b\":1}}", "{\"a\":{}}", "{\"a\":{\"b\":null}}");
}

Test(delta, arrays_and_type_changes_are_replaced_whole)
{
    check_delta("{\"p\":[1,2,3]}", "{\"p\":[1,2,4]}", "{\"p\":[1,2,4]}");
    check_delta("{\"p\":[{\"x\":1}]}", "{\"p\":[{\"x\":2}]}", "{\"p\":[{\"x\":2}]}");
    check_delta("{\"a\":{\"x\":1}}", "{\"a\":[1]}", "{\"a\":[1]}");
    check_delta("{\"a\":[1]}", "{\"a\":{\"x\":1}}", "{\"a\":{\"x\":1}}");
    check_delta("{\"a\":\"s\"}", "{\"a\":{\"x\":1}}", "{\"a\":{\"x\":1}}");
}

Test(delta, value_becoming_null_reads_as_removed)
{
    /* merge-patch semantics: a client treats null and missing alike */
    json_t *p = js("{\"w\":\"a\"}"), *c = js("{\"w\":null}"), *d = NULL;
    cr_assert_eq(pylon_json_diff(p, c, &d), PYLON_DIFF_DELTA);
    cr_assert_eq(json_object_size(d), 1);
    cr_assert(json_is_null(json_object_get(d, "w")));
    json_decref(d);
    json_decref(p);
    json_decref(c);
    assert_no_leaks();
}

Test(delta, non_object_roots_are_sent_whole)
{
    json_t *d = NULL;
    json_t *a = js("[1,2]"), *b = js("[1,3]"), *o = js("{\"a\":1}"), *n = js("5");
    cr_assert_eq(pylon_json_diff(a, b, &d), PYLON_DIFF_WHOLE);
    cr_assert_null(d);
    cr_assert_eq(pylon_json_diff(a, a, &d), PYLON_DIFF_SAME);
    cr_assert_eq(pylon_json_diff(o, b, &d), PYLON_DIFF_WHOLE);
    cr_assert_eq(pylon_json_diff(n, o, &d), PYLON_DIFF_WHOLE);
    cr_assert_null(d);
    json_decref(a);
    json_decref(b);
    json_decref(o);
    json_decref(n);
    assert_no_leaks();
}

/* ---- msgpack ----------------------------------------------------------------------------- */

static void roundtrip(const char *text)
{
    json_t *j = js(text);
    char *mp = NULL;
    size_t len = 0;
    cr_assert(pylon_json_to_msgpack(j, &mp, &len), "%s: not encoded", text);
    json_t *back = pylon_msgpack_to_json(mp, len);
    cr_assert_not_null(back, "%s: not decoded", text);
    cr_assert(json_equal(j, back), "%s does not survive msgpack", text);
    json_decref(back);
    json_decref(j);
    free(mp);
    assert_no_leaks();
}

Test(msgpack, every_value_kind_round_trips)
{
    roundtrip("{\"players\":[{\"sid\":\"a\",\"x\":1.25,\"y\":-3}],\"you\":null,\"ok\":true}");
    roundtrip("[0,1,127,128,-1,-33,65536,-2147483649,9007199254740993,false,\"\",\"é\"]");
    roundtrip("{\"nested\":{\"deep\":{\"er\":[[],{}]}}}");
    roundtrip("3.5");
    roundtrip("\"text\"");
}

Test(msgpack, snapshot_bytes_are_standard_msgpack)
{
    json_t *j = js("{\"a\":1}");
    char *mp = NULL;
    size_t len = 0;
    cr_assert(pylon_json_to_msgpack(j, &mp, &len));
    const unsigned char want[] = {0x81, 0xa1, 'a', 0x01}; /* fixmap 1, fixstr "a", fixint 1 */
    cr_assert_eq(len, sizeof want);
    cr_assert_eq(memcmp(mp, want, len), 0);
    free(mp);
    json_decref(j);
}

Test(msgpack, refuses_malformed_trailing_and_unrepresentable)
{
    const unsigned char never[] = {0xc1};
    cr_assert_null(pylon_msgpack_to_json(never, sizeof never));
    const unsigned char truncated[] = {0x82, 0xa1, 'a'};
    cr_assert_null(pylon_msgpack_to_json(truncated, sizeof truncated));
    const unsigned char trailing[] = {0x01, 0x02};
    cr_assert_null(pylon_msgpack_to_json(trailing, sizeof trailing));
    const unsigned char int_key[] = {0x81, 0x01, 0x02}; /* {1: 2} */
    cr_assert_null(pylon_msgpack_to_json(int_key, sizeof int_key));
    const unsigned char big[] = {0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}; /* 2^64-1 */
    cr_assert_null(pylon_msgpack_to_json(big, sizeof big));
    const unsigned char ext[] = {0xd4, 0x01, 0x00};
    cr_assert_null(pylon_msgpack_to_json(ext, sizeof ext));
    cr_assert_null(pylon_msgpack_to_json("", 0));
    assert_no_leaks();
}

Test(msgpack, an_input_map_decodes)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "input", 5);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "dx", 2);
    msgpack_pack_float(&pk, 0.5f);
    msgpack_pack_str_with_body(&pk, "client_seq", 10);
    msgpack_pack_uint64(&pk, 7);
    json_t *j = pylon_msgpack_to_json(sb.data, sb.size);
    cr_assert_not_null(j);
    cr_assert_float_eq(json_real_value(json_object_get(json_object_get(j, "input"), "dx")), 0.5,
                       1e-9);
    cr_assert_eq(json_integer_value(json_object_get(j, "client_seq")), 7);
    json_decref(j);
    msgpack_sbuffer_destroy(&sb);
    assert_no_leaks();
}
