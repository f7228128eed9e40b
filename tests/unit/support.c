/*
 * support.c — linked into every unit test binary; does something only under ThreadSanitizer.
 */
#include "support.h"

#if defined(__SANITIZE_THREAD__)
/* ThreadSanitizer builds only. (1) A data race must fail the test, not just print a warning:
 * halt on the first report. (2) Criterion's sandbox (BoxFort) maps its shared arena at
 * 0x200000000000 + (rand_r() & 0x3fffff) × 16 MiB, mostly inside TSan's shadow range, and the
 * run aborts with "Could not initialize inheritable arena". BoxFort's rand_r call binds to
 * this definition, which steers the pick into 0x5640'0000'0000..0x5680'0000'0000, part of TSan's
 * application range (BoxFort still checks the pages are free and retries). */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "halt_on_error=1";
}
int rand_r(unsigned int *seed);
int rand_r(unsigned int *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (int)(0x364000u + ((*seed >> 8) % 0x4000u));
}
#endif
