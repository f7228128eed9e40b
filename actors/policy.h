/*
 * policy.h — the manifest's policy language: compile once, evaluate per request or per row.
 *
 * Owns: compiled expressions (pylon_policy_expr) and the per-manifest rule table
 * (pylon_policy_set). It knows nothing about HTTP, SQL or actors: callers bind `data`,
 * `existing`, `input` and `auth` (pylon_policy_env) and get a yes/no. Both compiled forms are
 * immutable after build, so any number of actors may evaluate them concurrently. Evaluation
 * allocates nothing: it reads the compiled form and the bound JSON (it runs per row on lists).
 *
 * Language (spec/backend.md §4.3 plus the project's additions, marked +):
 *
 *   expr    := or
 *   or      := and ( "||" and )*
 *   and     := cmp ( "&&" cmp )*
 *   cmp     := not ( CMPOP atom | "in" ( list | IDENT ) )?     at most one comparison, so
 *                                                               `!x == null` is `(!x) == null`
 *   CMPOP   := "==" | "!=" | "<" + | "<=" + | ">" + | ">=" +
 *   not     := "!" not | primary
 *   primary := "true" | "false" | "null" | STRING | NUMBER + | "(" expr ")"
 *            | IDENT "(" STRING ( "," STRING )* ")"          function call
 *            | IDENT                                          dotted path
 *   atom    := "null" | "true" | "false" | STRING | NUMBER + | IDENT
 *   list +  := "[" ( atom ( "," atom )* )? "]"                only after `in`
 *   IDENT   := [A-Za-z_][A-Za-z0-9_.]*     dots belong to the identifier; `in` is reserved
 *   NUMBER +:= "-"? [0-9]+ ( "." [0-9]+ )? ( [eE] [+-]? [0-9]+ )?
 *   STRING  := '…' or "…"; escapes \\ \" \' \n \r \t \0, any other escape is an error
 *
 * Whitespace is space, tab, CR, LF. Single `&`, `|`, `=` are errors. At most 64 nested
 * parentheses and `!` together. Any compile error denies: the caller gets NULL and a message
 * naming the problem and its column (columns count UTF-8 code points from 1).
 *
 * Values: string, bool, null, number (+). Paths resolve as:
 *   auth.userId | auth.user_id → string or null; auth.isAdmin | auth.is_admin → bool;
 *   auth.tenantId | auth.tenant_id → string or null; any other auth.* → null;
 *   data.<path>, existing.<path> (+), input.<path> → walk JSON object keys: string, bool, null,
 *   number; an object, an array or a missing key → null (arrays are visible only to `in`);
 *   any other root → null.
 * Truthiness: true → true; false, null, "" → false; any other string and every number (the
 *   original turned numbers into their decimal string, which is never empty) → true.
 * Equality (==, !=, in): same kind and same value; null == null. A number equals a string when
 *   the string is exactly the number's decimal text (the original's rule: `data.count == "3"`
 *   matches 3); integers print as "%lld", reals as their shortest round-trip form with ".0"
 *   added when integral (3.0 → "3.0") and a bare exponent (1e20 → "1e20"). Numbers compare
 *   numerically with each other (3 == 3.0). All other mixed kinds are never equal.
 * Ordering (+) (<, <=, >, >=): numeric when both sides are numbers or numeric strings (same
 *   syntax as NUMBER); otherwise byte-wise (= code point) when both are strings; otherwise
 *   (null, bool, a number against a non-numeric string) false.
 * `x in [a, b]` (+): true when x equals any element. `x in data.members`: true when the path
 *   names a JSON array with an element equal to x (nested objects and arrays count as null);
 *   false when the path is not an array.
 * Functions: auth.hasRole("r") (exactly one argument) and auth.hasAnyRole("a", "b", …) (one or
 *   more): true for admin, or when a named role is among auth->roles. Any other call is a
 *   compile error.
 *
 * What callers bind (this project's rule; the original bound `data` to the stored row on update):
 *   read:    data = existing = the row (NULL where there is no row, e.g. a deleted-row event)
 *   insert:  data = the request body; existing = NULL (every existing.* is null)
 *   update:  data = the stored row merged with the patch (what the row will become);
 *            existing = the stored row before the change
 *   delete:  data = existing = the stored row
 *   link/unlink: data = the request body; action: input = the request body
 * A NULL auth is the anonymous identity.
 */
#ifndef PYLON_ACTORS_POLICY_H
#define PYLON_ACTORS_POLICY_H

#include "actors/identity.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define PYLON_POLICY_MAX_DEPTH 64

typedef struct pylon_policy_expr pylon_policy_expr;

/* Compiles one expression. NULL with "problem at column N" in `err` (may be NULL) on any error. */
pylon_policy_expr *pylon_policy_compile(const char *src, char *err, size_t errlen);
void pylon_policy_expr_free(pylon_policy_expr *e);

typedef struct pylon_policy_env {
    const pylon_identity *auth; /* NULL: anonymous */
    const json_t *data;         /* NULL: every data.* is null; likewise existing and input */
    const json_t *existing;
    const json_t *input;
} pylon_policy_env;

/* The expression's truthiness under `env`. A NULL expression denies (false). */
bool pylon_policy_eval(const pylon_policy_expr *e, const pylon_policy_env *env);
/* Whether the expression reads data.* or existing.*: if not, one evaluation covers every row. */
bool pylon_policy_expr_reads_row(const pylon_policy_expr *e);

typedef enum { PYLON_OP_READ, PYLON_OP_INSERT, PYLON_OP_UPDATE, PYLON_OP_DELETE } pylon_policy_op;

typedef struct pylon_policy_set pylon_policy_set;

/* Compiles the manifest's "policies" array (NULL or empty: no policies). On the first problem
 * returns NULL with `err` = "policies[i].field: reason" (with the policy's name when it has one).
 * Besides compile errors it rejects wrong JSON types (e.g. "allowRead": false would otherwise be
 * ignored, which allows everything) and a policy with neither "entity" nor "action". An empty
 * expression string counts as absent, as in the original. */
pylon_policy_set *pylon_policy_set_build(const json_t *policies, char *err, size_t errlen);
void pylon_policy_set_free(pylon_policy_set *s);

/* backend.md §4.2: admin → allowed; no policy names the entity → allowed; each policy for the
 * entity contributes allowRead → allow (read), allowInsert|Update|Delete → allowWrite → allow
 * (writes), skipped when it has none; all contributions must be true, in manifest order. On
 * deny, *denied_by (if non-NULL) = the denying policy's name (owned by the set). */
bool pylon_policy_check(const pylon_policy_set *s, const char *entity, pylon_policy_op op,
                        const pylon_policy_env *env, const char **denied_by);
/* Same for /api/actions/<name>: only each policy's "allow" counts; `input` = the body. */
bool pylon_policy_check_action(const pylon_policy_set *s, const char *action,
                               const pylon_policy_env *env, const char **denied_by);
/* Whether any expression applies to (entity, op): false means every row passes for everyone. */
bool pylon_policy_entity_has_rules(const pylon_policy_set *s, const char *entity,
                                   pylon_policy_op op);
/* Whether any expression for (entity, op) reads the row (data.* / existing.*): false means one
 * pylon_policy_check with data = existing = NULL decides for all rows of a list. */
bool pylon_policy_entity_reads_row(const pylon_policy_set *s, const char *entity,
                                   pylon_policy_op op);

#endif
