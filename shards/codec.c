/* codec.c — see codec.h. */
#include "shards/codec.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/* ---- JSON -> msgpack --------------------------------------------------------------------- */

static int pack(msgpack_packer *pk, const json_t *j, int depth)
{
    if (depth > 512) return -1; /* jansson's own parse depth limit is lower; never recurse deep */
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        if (msgpack_pack_map(pk, json_object_size(j)) != 0) return -1;
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)j, key, v)
        {
            size_t kl = strlen(key);
            if (msgpack_pack_str(pk, kl) != 0 || msgpack_pack_str_body(pk, key, kl) != 0 ||
                pack(pk, v, depth + 1) != 0)
                return -1;
        }
        return 0;
    }
    case JSON_ARRAY: {
        if (msgpack_pack_array(pk, json_array_size(j)) != 0) return -1;
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) if (pack(pk, v, depth + 1) != 0) return -1;
        return 0;
    }
    case JSON_STRING: {
        size_t n = json_string_length(j);
        return msgpack_pack_str(pk, n) == 0 &&
                       msgpack_pack_str_body(pk, json_string_value(j), n) == 0
                   ? 0
                   : -1;
    }
    case JSON_INTEGER:
        return msgpack_pack_int64(pk, (int64_t)json_integer_value(j));
    case JSON_REAL:
        return msgpack_pack_double(pk, json_real_value(j));
    case JSON_TRUE:
        return msgpack_pack_true(pk);
    case JSON_FALSE:
        return msgpack_pack_false(pk);
    case JSON_NULL:
        return msgpack_pack_nil(pk);
    }
    return -1;
}

bool pylon_json_to_msgpack(const json_t *j, char **out, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (pack(&pk, j, 0) != 0) {
        msgpack_sbuffer_destroy(&sb);
        return false;
    }
    *len = sb.size;
    *out = msgpack_sbuffer_release(&sb);
    if (!*out) *out = malloc(1); /* an empty buffer is never the case (every value has a byte) */
    return *out != NULL;
}

/* ---- msgpack -> JSON --------------------------------------------------------------------- */

static json_t *to_json(const msgpack_object *o, int depth)
{
    if (depth > 64) return NULL; /* an input is small: a deeper one is refused, not recursed */
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)INT64_MAX) return NULL; /* jansson integers are signed */
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR:
        return json_stringn(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return json_stringn(o->via.bin.ptr, o->via.bin.size); /* NULL unless UTF-8 */
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; a && i < o->via.array.size; i++) {
            json_t *v = to_json(&o->via.array.ptr[i], depth + 1);
            if (!v || json_array_append_new(a, v) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; m && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR) {
                json_decref(m);
                return NULL;
            }
            json_t *v = to_json(&kv->val, depth + 1);
            if (!v || json_object_setn_new(m, kv->key.via.str.ptr, kv->key.via.str.size, v) != 0) {
                json_decref(m);
                return NULL;
            }
        }
        return m;
    }
    default:
        return NULL; /* ext */
    }
}

json_t *pylon_msgpack_to_json(const void *data, size_t len)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    json_t *j = NULL;
    if (msgpack_unpack_next(&u, data, len, &off) == MSGPACK_UNPACK_SUCCESS && off == len)
        j = to_json(&u.data, 0);
    msgpack_unpacked_destroy(&u);
    return j;
}

/* ---- the delta --------------------------------------------------------------------------- */

pylon_diff_result pylon_json_diff(const json_t *prev, const json_t *cur, json_t **out)
{
    *out = NULL;
    if (!json_is_object(prev) || !json_is_object(cur))
        return json_equal((json_t *)prev, (json_t *)cur) ? PYLON_DIFF_SAME : PYLON_DIFF_WHOLE;
    json_t *d = json_object();
    if (!d) return PYLON_DIFF_WHOLE;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)cur, key, v)
    {
        json_t *old = json_object_get(prev, key);
        if (old && json_is_object(old) && json_is_object(v)) {
            json_t *sub;
            if (pylon_json_diff(old, v, &sub) == PYLON_DIFF_DELTA) json_object_set_new(d, key, sub);
        } else if (!old || !json_equal(old, v)) {
            json_object_set(d, key, v);
        }
    }
    json_object_foreach((json_t *)prev, key, v) if (!json_object_get(cur, key))
        json_object_set_new(d, key, json_null());
    if (json_object_size(d) == 0) {
        json_decref(d);
        return PYLON_DIFF_SAME;
    }
    *out = d;
    return PYLON_DIFF_DELTA;
}
