/*
 * fmt.h — numbers and bounded copies as text without printf, for the paths that run once per
 * request or frame.
 *
 * snprintf parses its format and walks stdio's machinery on every call: a few hundred to
 * fifteen hundred instructions for one integer, a 32-digit hex id or a "%s" copy, several times
 * per insert and per shard input (callgrind). These write the same bytes directly. The number
 * writers add no terminating NUL.
 */
#ifndef PYLON_ENGINE_FMT_H
#define PYLON_ENGINE_FMT_H

#include <stddef.h>
#include <stdint.h>

/* Longest output of pylon_fmt_i64 ("-9223372036854775808") and of pylon_fmt_u64
 * ("18446744073709551615"). */
#define PYLON_FMT_I64_MAX 20

/* v in decimal, as "%lld" / "%llu" write it; return the number of characters written. */
size_t pylon_fmt_i64(char *out, int64_t v);
size_t pylon_fmt_u64(char *out, uint64_t v);

/* The low `digits` hex digits of v, zero-padded, lower case (as "%0<digits>llx" for a v
 * that fits); digits at most 16. */
void pylon_fmt_hex(char *out, uint64_t v, unsigned digits);

/* snprintf(out, cap, "%s", s): at most cap - 1 bytes of s, always NUL-terminated (cap > 0);
 * returns the length copied. */
size_t pylon_fmt_copy(char *out, size_t cap, const char *s);

#endif
