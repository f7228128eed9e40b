/*
 * fmt.h — numbers as text without printf, for the paths that run once per request.
 *
 * snprintf parses its format and walks stdio's machinery on every call: a few hundred to
 * fifteen hundred instructions for one integer or a 32-digit hex id, several times per insert
 * (callgrind). These write the same digits directly. Neither adds a terminating NUL.
 */
#ifndef PYLON_ENGINE_FMT_H
#define PYLON_ENGINE_FMT_H

#include <stddef.h>
#include <stdint.h>

/* Longest output of pylon_fmt_i64: "-9223372036854775808". */
#define PYLON_FMT_I64_MAX 20

/* v in decimal, as "%lld" writes it; returns the number of characters written. */
size_t pylon_fmt_i64(char *out, int64_t v);

/* The low `digits` hex digits of v, zero-padded, lower case (as "%0<digits>llx" for a v
 * that fits); digits at most 16. */
void pylon_fmt_hex(char *out, uint64_t v, unsigned digits);

#endif
