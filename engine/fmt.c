/* fmt.c — see fmt.h. */
#include "engine/fmt.h"

size_t pylon_fmt_i64(char *out, int64_t v)
{
    char rev[PYLON_FMT_I64_MAX];
    size_t n = 0, k = 0;
    /* Through the unsigned magnitude, so INT64_MIN does not overflow. */
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        rev[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) out[k++] = '-';
    while (n)
        out[k++] = rev[--n];
    return k;
}

void pylon_fmt_hex(char *out, uint64_t v, unsigned digits)
{
    static const char HEX[] = "0123456789abcdef";
    for (unsigned i = digits; i-- > 0; v >>= 4)
        out[i] = HEX[v & 15];
}
