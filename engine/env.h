/*
 * env.h — typed reading of environment variables.
 *
 * Every reader takes the variable's name and a default, and on a bad value fills `err` with
 * one line that names the variable, quotes the value, and says the expected form, e.g.
 *   PYLON_WORKERS="abc" is not valid: expected a whole number from 1 to 256
 * An unset or empty variable takes the default. Readers never exit; main decides.
 */
#ifndef PYLON_ENGINE_ENV_H
#define PYLON_ENGINE_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pylon_env_error {
    char msg[320];
} pylon_env_error;

/* The value, or NULL when unset or empty. */
const char *pylon_env_get(const char *name);

bool pylon_env_int(const char *name, int64_t def, int64_t min, int64_t max, int64_t *out,
                   pylon_env_error *err);
/* true/false, 1/0, yes/no, on/off (any case). */
bool pylon_env_bool(const char *name, bool def, bool *out, pylon_env_error *err);
/* A byte size: a whole number with an optional K, M or G suffix (powers of 1024; KiB etc. too). */
bool pylon_env_size(const char *name, uint64_t def, uint64_t min, uint64_t max, uint64_t *out,
                    pylon_env_error *err);
/* One of `choices` (NULL-terminated, compared without case); *out is its index. */
bool pylon_env_enum(const char *name, int def, const char *const *choices, int *out,
                    pylon_env_error *err);
/* A string; `def` when unset. Never fails. */
const char *pylon_env_str(const char *name, const char *def);

/* The same parsers on a given text (for flags such as --port); `name` is used in messages. */
bool pylon_parse_int(const char *name, const char *text, int64_t min, int64_t max, int64_t *out,
                     pylon_env_error *err);
bool pylon_parse_bool(const char *name, const char *text, bool *out, pylon_env_error *err);
bool pylon_parse_size(const char *name, const char *text, uint64_t min, uint64_t max, uint64_t *out,
                      pylon_env_error *err);

#endif
