/*
 * ids.h — identifiers the server makes up: row ids and secret tokens.
 *
 * Row ids are 40 lowercase hex characters: 32 digits of Unix-epoch nanoseconds, then 8 digits
 * of a process-wide wrapping counter (spec/backend.md §1.4). Their byte order is their
 * creation order, which cursor pagination (ORDER BY id) relies on. Tokens are random bytes from
 * OpenSSL's RAND_bytes, hex-encoded after a prefix (sessions: "pylon_" + 64 hex).
 */
#ifndef PYLON_ACTORS_IDS_H
#define PYLON_ACTORS_IDS_H

#include <stdbool.h>
#include <stddef.h>

#define PYLON_ID_LEN 40

/* Writes a new row id and its NUL into out. Any thread. */
void pylon_id_new(char out[PYLON_ID_LEN + 1]);

/* prefix + 2 × nbytes hex characters into out; false when randomness fails or out is small. */
bool pylon_token_new(const char *prefix, size_t nbytes, char *out, size_t cap);

#endif
