/* ids.c — see ids.h. */
#include "actors/ids.h"

#include "engine/fmt.h"

#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

void pylon_id_new(char out[PYLON_ID_LEN + 1])
{
    static _Atomic uint32_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    uint32_t n = atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
    /* 32 hex digits of nanoseconds (the top 16 are zero until the year 2554), then 8 of the
     * counter: "0000000000000000%016llx%08x", written directly (one per insert). */
    memset(out, '0', 16);
    pylon_fmt_hex(out + 16, ns, 16);
    pylon_fmt_hex(out + 32, n, 8);
    out[PYLON_ID_LEN] = '\0';
}

bool pylon_token_new(const char *prefix, size_t nbytes, char *out, size_t cap)
{
    size_t pl = strlen(prefix);
    unsigned char raw[64];
    if (nbytes > sizeof raw || pl + 2 * nbytes + 1 > cap) return false;
    if (RAND_bytes(raw, (int)nbytes) != 1) return false;
    memcpy(out, prefix, pl);
    for (size_t i = 0; i < nbytes; i++)
        snprintf(out + pl + 2 * i, 3, "%02x", raw[i]);
    return true;
}
