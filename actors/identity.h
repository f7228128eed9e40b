/*
 * identity.h — who is asking: the auth context every data handler and policy sees.
 *
 * Owns: the shape only (spec/protocol.md §0.3, spec/backend.md §5.1). The auth actor fills it
 * from a token; handlers pass it along unchanged. Strings are owned by whoever built the
 * identity and outlive the request.
 */
#ifndef PYLON_ACTORS_IDENTITY_H
#define PYLON_ACTORS_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>

typedef struct pylon_identity {
    const char *user_id; /* NULL: anonymous; "__admin__" for the admin token */
    bool is_admin;
    bool is_guest;
    const char *tenant_id; /* NULL when unset */
    const char *const *roles;
    size_t nroles;
} pylon_identity;

#define PYLON_IDENTITY_ANONYMOUS ((pylon_identity){0})

#endif
