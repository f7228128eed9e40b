/* fmt.c — see fmt.h. */
#include "engine/fmt.h"

#include <string.h>

size_t pylon_fmt_u64(char *out, uint64_t v)
{
    char rev[PYLON_FMT_I64_MAX];
    size_t n = 0, k = 0;
    do {
        rev[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        out[k++] = rev[--n];
    return k;
}

size_t pylon_fmt_i64(char *out, int64_t v)
{
    if (v >= 0) return pylon_fmt_u64(out, (uint64_t)v);
    out[0] = '-'; /* through the unsigned magnitude, so INT64_MIN does not overflow */
    return 1 + pylon_fmt_u64(out + 1, 0 - (uint64_t)v);
}

size_t pylon_fmt_copy(char *out, size_t cap, const char *s)
{
    if (cap == 0) return 0;
    size_t n = strnlen(s, cap - 1);
    memcpy(out, s, n);
    out[n] = '\0';
    return n;
}

void pylon_fmt_hex(char *out, uint64_t v, unsigned digits)
{
    static const char HEX[] = "0123456789abcdef";
    for (unsigned i = digits; i-- > 0; v >>= 4)
        out[i] = HEX[v & 15];
}
