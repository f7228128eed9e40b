/*
 * json_scan.h — a strict, allocation-free reader for the common shape of shard inputs.
 *
 * Every input used to be parsed twice or three times (jansson on the I/O thread, dumped back to
 * text, parsed again by the simulation). These functions read the plain cases in place: compact
 * JSON without escapes, non-ASCII, exponents or long integers. Anything else makes them return
 * false and the caller takes the general jansson path, so what is accepted, dropped and counted
 * does not change; only the cheap cases get cheaper.
 */
#ifndef PYLON_SHARDS_JSON_SCAN_H
#define PYLON_SHARDS_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A WebSocket input message {"input": V, "client_seq": n} (either key optional, no others).
 * True with V's bytes (as sent: valid compact JSON) and n (0 when absent); "null" when there
 * is no "input". False: not the plain shape (the caller parses it fully). */
bool pylon_scan_input_msg(const char *p, size_t len, const char **input, size_t *input_len,
                          uint64_t *client_seq);

/* An object of plain numbers {"k1":n,"k2":n,…} with keys among `keys` (each at most once).
 * True with values[i] set and present[i] true for the keys found. */
bool pylon_scan_number_object(const char *p, size_t len, const char *const *keys, size_t nkeys,
                              double *values, bool *present);

#endif
