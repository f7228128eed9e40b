/* support.h — helpers shared by the unit tests (see support.c for the TSan settings). */
#ifndef PYLON_TESTS_SUPPORT_H
#define PYLON_TESTS_SUPPORT_H

#include <criterion/criterion.h>
#include <stdint.h>

/* LeakSanitizer's check, run at the end of each test: Criterion's test processes exit without
 * LSan's exit-time check, so leaks would go unseen. Without ASan the symbol is absent: 0. */
extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));
static inline void assert_no_leaks(void)
{
    if (__lsan_do_recoverable_leak_check)
        cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "LeakSanitizer found leaks (above)");
}

/* xorshift64: the same pseudo-random sequence on every run, for generated test inputs.
 * *state must start non-zero. */
static inline uint64_t test_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

#endif
