/*
 * policy.c — the policy language's parser and evaluator, and the per-manifest rule table
 * (policy.h describes the language and what callers bind).
 *
 * Invariants:
 * - A compiled expression is three flat arrays (nodes, child lists, a string pool) addressed
 *   by index, built once and never changed: evaluation only reads them, so it needs no lock
 *   and allocates nothing.
 * - `&&` and `||` chains are n-ary nodes, and parentheses plus `!` nest at most
 *   PYLON_POLICY_MAX_DEPTH deep, so the evaluator's recursion is bounded by the nesting,
 *   never by the length of the source.
 * - The first error wins: the parser stops at it and reports its column.
 */
#include "actors/policy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longer sources are refused: node and pool indices are 32-bit, and no real policy is near. */
#define MAX_SRC_LEN (1u << 20)
#define NONE        UINT32_MAX

/* ---- compiled form -------------------------------------------------------------------------- */

enum node_kind {
    N_NULL,
    N_BOOL, /* sub = value */
    N_STR,  /* a = pool offset, b = byte length (NUL-terminated in the pool as well) */
    N_NUM,  /* sub = is an integer; a, b = its decimal text in the pool; num_i / num_d */
    N_PATH, /* sub = enum root; a = pool offset of the first segment, b = segment count */
    N_NOT,  /* a = operand */
    N_AND,  /* a = first index in kids, b = count (also N_OR, N_LIST, N_ROLES) */
    N_OR,
    N_CMP, /* sub = enum cmp_op; a = left, b = right */
    N_IN,  /* a = left, b = an N_LIST or an N_PATH */
    N_LIST,
    N_ROLES, /* auth.hasRole / auth.hasAnyRole: kids are N_STR nodes */
};

enum root { R_NONE, R_AUTH_USER, R_AUTH_ADMIN, R_AUTH_TENANT, R_DATA, R_EXISTING, R_INPUT };
enum cmp_op { C_EQ, C_NE, C_LT, C_LE, C_GT, C_GE };

typedef struct node {
    uint8_t kind;
    uint8_t sub;
    uint32_t a, b;
    int64_t num_i;
    double num_d;
} node;

struct pylon_policy_expr {
    node *nodes;
    uint32_t *kids;
    char *pool;
    uint32_t root;
    bool reads_row;
};

/* ---- runtime values -------------------------------------------------------------------------- */

enum val_kind { V_NULL, V_BOOL, V_STR, V_NUM };

typedef struct val {
    uint8_t kind;
    bool b;        /* V_BOOL */
    bool is_int;   /* V_NUM: i is exact; otherwise d */
    const char *s; /* V_STR: bytes; V_NUM: decimal text when known (literals), else NULL */
    size_t len;
    int64_t i;
    double d;
} val;

static val val_null(void)
{
    return (val){.kind = V_NULL};
}

static val val_bool(bool b)
{
    return (val){.kind = V_BOOL, .b = b};
}

/* A JSON value as the language sees it: objects and arrays are null (the original's rule). */
static val val_from_json(const json_t *j)
{
    if (!j) return val_null();
    switch (json_typeof(j)) {
    case JSON_STRING:
        return (val){.kind = V_STR, .s = json_string_value(j), .len = json_string_length(j)};
    case JSON_INTEGER: {
        int64_t i = (int64_t)json_integer_value(j);
        return (val){.kind = V_NUM, .is_int = true, .i = i, .d = (double)i};
    }
    case JSON_REAL:
        return (val){.kind = V_NUM, .d = json_real_value(j)};
    case JSON_TRUE:
        return val_bool(true);
    case JSON_FALSE:
        return val_bool(false);
    default:
        return val_null();
    }
}

static bool truthy(const val *v)
{
    switch (v->kind) {
    case V_BOOL:
        return v->b;
    case V_STR:
        return v->len > 0;
    case V_NUM:
        return true; /* the original saw numbers as their (never empty) decimal text */
    default:
        return false;
    }
}

/* Checks NUMBER syntax over exactly `len` bytes and converts. `s[len]` must not continue the
 * number (strings from jansson and the pool are NUL-terminated). strtod assumes the C locale's
 * decimal point; the server never calls setlocale. */
static bool parse_numeric(const char *s, size_t len, val *out)
{
    size_t k = 0;
    bool integral = true;
    if (k < len && s[k] == '-') k++;
    size_t d0 = k;
    while (k < len && s[k] >= '0' && s[k] <= '9')
        k++;
    if (k == d0) return false;
    if (k < len && s[k] == '.') {
        integral = false;
        size_t f0 = ++k;
        while (k < len && s[k] >= '0' && s[k] <= '9')
            k++;
        if (k == f0) return false;
    }
    if (k < len && (s[k] == 'e' || s[k] == 'E')) {
        integral = false;
        k++;
        if (k < len && (s[k] == '+' || s[k] == '-')) k++;
        size_t e0 = k;
        while (k < len && s[k] >= '0' && s[k] <= '9')
            k++;
        if (k == e0) return false;
    }
    if (k != len) return false;
    *out = (val){.kind = V_NUM};
    if (integral) {
        errno = 0;
        long long i = strtoll(s, NULL, 10);
        if (errno != ERANGE) {
            out->is_int = true;
            out->i = i;
            out->d = (double)i;
            return true;
        }
    }
    out->d = strtod(s, NULL);
    return true;
}

/* -1, 0, 1. Integers compare exactly against reals (no rounding through double). */
static int cmp_int_real(int64_t i, double d)
{
    if (d >= 9223372036854775808.0) return -1;
    if (d < -9223372036854775808.0) return 1;
    int64_t t = (int64_t)d; /* truncation toward zero, exact as a double again */
    if (i != t) return i < t ? -1 : 1;
    return (d > (double)t) ? -1 : (d < (double)t) ? 1 : 0;
}

static int cmp_num(const val *a, const val *b)
{
    if (a->is_int && b->is_int) return (a->i > b->i) - (a->i < b->i);
    if (a->is_int) return cmp_int_real(a->i, b->d);
    if (b->is_int) return -cmp_int_real(b->i, a->d);
    return (a->d > b->d) - (a->d < b->d);
}

/* The number's decimal text (see policy.h): integers "%lld"; reals the shortest of %.15g..%.17g
 * that reads back exactly, exponent without '+' or leading zeros, ".0" when it looks integral.
 * `buf` must hold 40 bytes. */
static size_t real_text(double d, char *buf)
{
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(buf, 40, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) break;
    }
    if (n < 0 || n >= 40) return 0;
    char *e = strchr(buf, 'e');
    if (e) {
        char *src = e + 1, *dst = e + 1;
        if (*src == '+')
            src++;
        else if (*src == '-')
            *dst++ = *src++;
        while (*src == '0' && src[1] != '\0')
            src++;
        memmove(dst, src, strlen(src) + 1);
    } else if (!strpbrk(buf, ".ni")) { /* "inf"/"nan" stay as they are */
        strcat(buf, ".0");
    }
    return strlen(buf);
}

static const char *num_text(const val *v, char *buf, size_t *len)
{
    if (v->s) {
        *len = v->len;
        return v->s;
    }
    if (v->is_int)
        *len = (size_t)snprintf(buf, 40, "%" PRId64, v->i);
    else
        *len = real_text(v->d, buf);
    return buf;
}

static bool val_eq(const val *a, const val *b)
{
    if (a->kind == V_NUM && b->kind == V_STR) return val_eq(b, a);
    switch (a->kind) {
    case V_NULL:
        return b->kind == V_NULL;
    case V_BOOL:
        return b->kind == V_BOOL && a->b == b->b;
    case V_STR:
        if (b->kind == V_STR) return a->len == b->len && memcmp(a->s, b->s, a->len) == 0;
        if (b->kind == V_NUM) {
            char buf[40];
            size_t n;
            const char *t = num_text(b, buf, &n);
            return a->len == n && memcmp(a->s, t, n) == 0;
        }
        return false;
    case V_NUM:
        return b->kind == V_NUM && cmp_num(a, b) == 0;
    default:
        return false;
    }
}

static bool as_number(const val *v, val *out)
{
    if (v->kind == V_NUM) {
        *out = *v;
        return true;
    }
    return v->kind == V_STR && parse_numeric(v->s, v->len, out);
}

static bool val_order(const val *a, const val *b, int op)
{
    val na, nb;
    int c;
    bool an = as_number(a, &na), bn = as_number(b, &nb);
    if (an && bn) {
        c = cmp_num(&na, &nb);
    } else if (a->kind == V_STR && b->kind == V_STR) {
        size_t n = a->len < b->len ? a->len : b->len;
        c = memcmp(a->s, b->s, n);
        if (c == 0) c = (a->len > b->len) - (a->len < b->len);
    } else {
        return false;
    }
    switch (op) {
    case C_LT:
        return c < 0;
    case C_LE:
        return c <= 0;
    case C_GT:
        return c > 0;
    default:
        return c >= 0;
    }
}

/* ---- evaluation ------------------------------------------------------------------------------ */

static const json_t *path_json(const pylon_policy_expr *e, const node *n,
                               const pylon_policy_env *env)
{
    const json_t *j;
    switch (n->sub) {
    case R_DATA:
        j = env->data;
        break;
    case R_EXISTING:
        j = env->existing;
        break;
    case R_INPUT:
        j = env->input;
        break;
    default:
        return NULL;
    }
    if (n->b == 0) return j; /* a bare root; also keeps a NULL pool out of the arithmetic */
    const char *seg = e->pool + n->a;
    for (uint32_t k = 0; k < n->b && j; k++) {
        j = json_is_object(j) ? json_object_get(j, seg) : NULL;
        seg += strlen(seg) + 1;
    }
    return j;
}

static val path_val(const pylon_policy_expr *e, const node *n, const pylon_policy_env *env)
{
    const pylon_identity *auth = env->auth;
    switch (n->sub) {
    case R_AUTH_USER:
        return auth && auth->user_id
                   ? (val){.kind = V_STR, .s = auth->user_id, .len = strlen(auth->user_id)}
                   : val_null();
    case R_AUTH_TENANT:
        return auth && auth->tenant_id
                   ? (val){.kind = V_STR, .s = auth->tenant_id, .len = strlen(auth->tenant_id)}
                   : val_null();
    case R_AUTH_ADMIN:
        return val_bool(auth && auth->is_admin);
    case R_NONE:
        return val_null();
    default:
        return val_from_json(path_json(e, n, env));
    }
}

static bool has_role(const pylon_policy_expr *e, const node *n, const pylon_policy_env *env)
{
    const pylon_identity *auth = env->auth;
    if (!auth) return false;
    if (auth->is_admin) return true;
    for (uint32_t k = 0; k < n->b; k++) {
        const node *r = &e->nodes[e->kids[n->a + k]];
        const char *want = e->pool + r->a;
        for (size_t j = 0; j < auth->nroles; j++) {
            const char *have = auth->roles[j];
            if (have && strlen(have) == r->b && memcmp(have, want, r->b) == 0) return true;
        }
    }
    return false;
}

static val eval_node(const pylon_policy_expr *e, uint32_t idx, const pylon_policy_env *env);

static bool eval_in(const pylon_policy_expr *e, const node *n, const pylon_policy_env *env)
{
    val left = eval_node(e, n->a, env);
    const node *r = &e->nodes[n->b];
    if (r->kind == N_LIST) {
        for (uint32_t k = 0; k < r->b; k++) {
            val item = eval_node(e, e->kids[r->a + k], env);
            if (val_eq(&left, &item)) return true;
        }
        return false;
    }
    const json_t *arr = path_json(e, r, env);
    if (!json_is_array(arr)) return false;
    for (size_t k = 0; k < json_array_size(arr); k++) {
        val item = val_from_json(json_array_get(arr, k));
        if (val_eq(&left, &item)) return true;
    }
    return false;
}

static val eval_node(const pylon_policy_expr *e, uint32_t idx, const pylon_policy_env *env)
{
    const node *n = &e->nodes[idx];
    switch (n->kind) {
    case N_BOOL:
        return val_bool(n->sub);
    case N_STR:
        return (val){.kind = V_STR, .s = e->pool + n->a, .len = n->b};
    case N_NUM:
        return (val){.kind = V_NUM,
                     .is_int = n->sub,
                     .i = n->num_i,
                     .d = n->num_d,
                     .s = e->pool + n->a,
                     .len = n->b};
    case N_PATH:
        return path_val(e, n, env);
    case N_NOT: {
        val v = eval_node(e, n->a, env);
        return val_bool(!truthy(&v));
    }
    case N_AND:
    case N_OR: {
        bool want = n->kind == N_OR; /* the value that decides the chain early */
        for (uint32_t k = 0; k < n->b; k++) {
            val v = eval_node(e, e->kids[n->a + k], env);
            if (truthy(&v) == want) return val_bool(want);
        }
        return val_bool(!want);
    }
    case N_CMP: {
        val l = eval_node(e, n->a, env), r = eval_node(e, n->b, env);
        if (n->sub == C_EQ) return val_bool(val_eq(&l, &r));
        if (n->sub == C_NE) return val_bool(!val_eq(&l, &r));
        return val_bool(val_order(&l, &r, n->sub));
    }
    case N_IN:
        return val_bool(eval_in(e, n, env));
    case N_ROLES:
        return val_bool(has_role(e, n, env));
    default:
        return val_null();
    }
}

bool pylon_policy_eval(const pylon_policy_expr *e, const pylon_policy_env *env)
{
    if (!e) return false;
    static const pylon_policy_env empty = {0};
    val v = eval_node(e, e->root, env ? env : &empty);
    return truthy(&v);
}

bool pylon_policy_expr_reads_row(const pylon_policy_expr *e)
{
    return e && e->reads_row;
}

void pylon_policy_expr_free(pylon_policy_expr *e)
{
    if (!e) return;
    free(e->nodes);
    free(e->kids);
    free(e->pool);
    free(e);
}

/* ---- lexer ----------------------------------------------------------------------------------- */

typedef enum {
    T_EOF,
    T_LPAREN,
    T_RPAREN,
    T_LBRACK,
    T_RBRACK,
    T_COMMA,
    T_NOT,
    T_EQ,
    T_NE,
    T_LT,
    T_LE,
    T_GT,
    T_GE,
    T_AND,
    T_OR,
    T_STR,
    T_NUM,
    T_IDENT,
    T_TRUE,
    T_FALSE,
    T_NULL,
    T_IN,
    T_ERR,
} tkind;

typedef struct tok {
    tkind kind;
    size_t pos, len; /* the token's bytes in the source */
} tok;

typedef struct parser {
    const char *src;
    size_t len, pos;
    tok cur; /* the one token of lookahead */
    int depth;
    char *err;
    size_t errlen;
    bool failed;
    /* the expression being built */
    node *nodes;
    size_t nnodes, ncap;
    uint32_t *kids;
    size_t nkids, kcap;
    char *pool;
    size_t npool, pcap;
    /* child indices of the n-ary nodes being parsed; nested parses push and pop above them */
    uint32_t *stack;
    size_t nstack, scap;
    bool reads_row;
} parser;

static void fail(parser *p, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(parser *p, size_t pos, const char *fmt, ...)
{
    if (p->failed) return;
    p->failed = true;
    if (!p->err || p->errlen == 0) return;
    size_t line = 1, col = 1;
    for (size_t k = 0; k < pos && k < p->len; k++) {
        unsigned char c = (unsigned char)p->src[k];
        if (c == '\n') {
            line++;
            col = 1;
        } else if ((c & 0xC0) != 0x80) { /* count code points, not UTF-8 continuation bytes */
            col++;
        }
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p->err, p->errlen, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= p->errlen) return;
    if (line > 1)
        snprintf(p->err + n, p->errlen - (size_t)n, " at line %zu, column %zu", line, col);
    else
        snprintf(p->err + n, p->errlen - (size_t)n, " at column %zu", col);
}

static bool is_ident_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static bool is_ident_char(char c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9') || c == '.';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool word_is(const parser *p, size_t pos, size_t len, const char *w)
{
    return strlen(w) == len && memcmp(p->src + pos, w, len) == 0;
}

static tok lex_string(parser *p, size_t start)
{
    char q = p->src[start];
    size_t k = start + 1;
    while (k < p->len && p->src[k] != q) {
        if (p->src[k] == '\\') {
            if (k + 1 >= p->len) { /* a backslash at the very end: unterminated */
                k = p->len;
                break;
            }
            char c = p->src[k + 1];
            if (!strchr("\\\"'nrt0", c)) {
                if (c > ' ' && c < 0x7f)
                    fail(p, k,
                         "bad escape \"\\%c\" in string (allowed: \\\\ \\\" \\' \\n \\r \\t \\0)",
                         c);
                else
                    fail(p, k, "bad escape (byte 0x%02x after \"\\\") in string",
                         (unsigned)(unsigned char)c);
                return (tok){T_ERR, k, 0};
            }
            k += 2;
        } else {
            k++;
        }
    }
    if (k >= p->len) {
        fail(p, start, "unterminated string");
        return (tok){T_ERR, start, 0};
    }
    return (tok){T_STR, start, k + 1 - start};
}

static tok lex_number(parser *p, size_t start)
{
    size_t k = start;
    if (p->src[k] == '-') k++;
    while (k < p->len && is_digit(p->src[k]))
        k++;
    bool bad = false;
    if (k < p->len && p->src[k] == '.') {
        k++;
        if (!(k < p->len && is_digit(p->src[k]))) bad = true;
        while (k < p->len && is_digit(p->src[k]))
            k++;
    }
    if (!bad && k < p->len && (p->src[k] == 'e' || p->src[k] == 'E')) {
        k++;
        if (k < p->len && (p->src[k] == '+' || p->src[k] == '-')) k++;
        if (!(k < p->len && is_digit(p->src[k]))) bad = true;
        while (k < p->len && is_digit(p->src[k]))
            k++;
    }
    if (bad || (k < p->len && is_ident_char(p->src[k]))) {
        fail(p, start, "invalid number");
        return (tok){T_ERR, start, 0};
    }
    return (tok){T_NUM, start, k - start};
}

static tok lex(parser *p)
{
    const char *s = p->src;
    while (p->pos < p->len &&
           (s[p->pos] == ' ' || s[p->pos] == '\t' || s[p->pos] == '\r' || s[p->pos] == '\n'))
        p->pos++;
    size_t at = p->pos;
    if (at >= p->len) return (tok){T_EOF, at, 0};
    char c = s[at], c2 = at + 1 < p->len ? s[at + 1] : '\0';
    tok t = {T_ERR, at, 1};
    switch (c) {
    case '(':
        t.kind = T_LPAREN;
        break;
    case ')':
        t.kind = T_RPAREN;
        break;
    case '[':
        t.kind = T_LBRACK;
        break;
    case ']':
        t.kind = T_RBRACK;
        break;
    case ',':
        t.kind = T_COMMA;
        break;
    case '!':
        t = c2 == '=' ? (tok){T_NE, at, 2} : (tok){T_NOT, at, 1};
        break;
    case '<':
        t = c2 == '=' ? (tok){T_LE, at, 2} : (tok){T_LT, at, 1};
        break;
    case '>':
        t = c2 == '=' ? (tok){T_GE, at, 2} : (tok){T_GT, at, 1};
        break;
    case '=':
        if (c2 == '=')
            t = (tok){T_EQ, at, 2};
        else
            fail(p, at, "single \"=\" (did you mean \"==\"?)");
        break;
    case '&':
        if (c2 == '&')
            t = (tok){T_AND, at, 2};
        else
            fail(p, at, "single \"&\" (did you mean \"&&\"?)");
        break;
    case '|':
        if (c2 == '|')
            t = (tok){T_OR, at, 2};
        else
            fail(p, at, "single \"|\" (did you mean \"||\"?)");
        break;
    case '"':
    case '\'':
        t = lex_string(p, at);
        break;
    default:
        if (is_digit(c) || (c == '-' && is_digit(c2))) {
            t = lex_number(p, at);
        } else if (is_ident_start(c)) {
            size_t k = at + 1;
            while (k < p->len && is_ident_char(s[k]))
                k++;
            t = (tok){T_IDENT, at, k - at};
            if (word_is(p, at, t.len, "true"))
                t.kind = T_TRUE;
            else if (word_is(p, at, t.len, "false"))
                t.kind = T_FALSE;
            else if (word_is(p, at, t.len, "null"))
                t.kind = T_NULL;
            else if (word_is(p, at, t.len, "in"))
                t.kind = T_IN;
        } else if (c > ' ' && c < 0x7f) {
            fail(p, at, "unexpected character \"%c\"", c);
        } else {
            fail(p, at, "unexpected byte 0x%02x", (unsigned)(unsigned char)c);
        }
    }
    if (t.kind != T_ERR) p->pos = at + t.len;
    return t;
}

static void advance(parser *p)
{
    p->cur = lex(p);
}

/* How a token reads in an error message. */
static const char *describe(const parser *p, tok t, char *buf, size_t n)
{
    switch (t.kind) {
    case T_EOF:
        return "the end of the input";
    case T_STR:
        return "a string";
    case T_NUM:
        return "a number";
    default:
        snprintf(buf, n, "\"%.*s\"", (int)(t.len > 40 ? 40 : t.len), p->src + t.pos);
        return buf;
    }
}

/* "expected X, found Y" at the current token. */
static void fail_unexpected(parser *p, const char *wanted)
{
    char buf[48];
    if (p->cur.kind == T_ERR) return; /* the lexer already said why */
    fail(p, p->cur.pos, "expected %s, found %s", wanted, describe(p, p->cur, buf, sizeof buf));
}

/* ---- building -------------------------------------------------------------------------------- */

static bool grow(parser *p, void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return true;
    size_t ncap = *cap ? *cap * 2 : 16;
    while (ncap < need)
        ncap *= 2;
    void *np = realloc(*arr, ncap * elem);
    if (!np) {
        fail(p, p->cur.pos, "out of memory");
        return false;
    }
    *arr = np;
    *cap = ncap;
    return true;
}

static uint32_t add_node(parser *p, node n)
{
    if (p->failed || !grow(p, (void **)&p->nodes, &p->ncap, p->nnodes + 1, sizeof(node)))
        return NONE;
    p->nodes[p->nnodes] = n;
    return (uint32_t)p->nnodes++;
}

/* Appends bytes plus a NUL to the pool; returns the offset or NONE. */
static uint32_t pool_add(parser *p, const char *s, size_t n)
{
    if (p->failed || !grow(p, (void **)&p->pool, &p->pcap, p->npool + n + 1, 1)) return NONE;
    uint32_t off = (uint32_t)p->npool;
    memcpy(p->pool + off, s, n);
    p->pool[off + n] = '\0';
    p->npool += n + 1;
    return off;
}

static bool push_child(parser *p, uint32_t idx)
{
    if (!grow(p, (void **)&p->stack, &p->scap, p->nstack + 1, sizeof(uint32_t))) return false;
    p->stack[p->nstack++] = idx;
    return true;
}

/* Moves stack[base..] into kids and makes the n-ary node that owns them. */
static uint32_t close_children(parser *p, uint8_t kind, size_t base)
{
    size_t n = p->nstack - base;
    if (p->failed || !grow(p, (void **)&p->kids, &p->kcap, p->nkids + n, sizeof(uint32_t)))
        return NONE;
    if (n) memcpy(p->kids + p->nkids, p->stack + base, n * sizeof(uint32_t)); /* `[]` has none */
    uint32_t first = (uint32_t)p->nkids;
    p->nkids += n;
    p->nstack = base;
    return add_node(p, (node){.kind = kind, .a = first, .b = (uint32_t)n});
}

/* Decodes the current STRING token into the pool. The lexer already checked its escapes. */
static uint32_t string_node(parser *p)
{
    const char *s = p->src + p->cur.pos + 1;
    size_t rawlen = p->cur.len - 2;
    if (p->failed || !grow(p, (void **)&p->pool, &p->pcap, p->npool + rawlen + 1, 1)) return NONE;
    uint32_t off = (uint32_t)p->npool;
    char *out = p->pool + off;
    size_t n = 0;
    for (size_t k = 0; k < rawlen; k++) {
        char c = s[k];
        if (c == '\\') {
            switch (s[++k]) {
            case 'n':
                c = '\n';
                break;
            case 'r':
                c = '\r';
                break;
            case 't':
                c = '\t';
                break;
            case '0':
                c = '\0';
                break;
            default: /* \\ \" \' */
                c = s[k];
            }
        }
        out[n++] = c;
    }
    out[n] = '\0';
    p->npool += n + 1;
    advance(p);
    return add_node(p, (node){.kind = N_STR, .a = off, .b = (uint32_t)n});
}

static uint32_t number_node(parser *p)
{
    char buf[512];
    if (p->cur.len >= sizeof buf) {
        fail(p, p->cur.pos, "number too long");
        return NONE;
    }
    memcpy(buf, p->src + p->cur.pos, p->cur.len);
    buf[p->cur.len] = '\0';
    val v;
    if (!parse_numeric(buf, p->cur.len, &v)) { /* the lexer's syntax is the same: cannot fail */
        fail(p, p->cur.pos, "invalid number");
        return NONE;
    }
    char text[40];
    size_t tlen;
    const char *t = num_text(&v, text, &tlen);
    uint32_t off = pool_add(p, t, tlen);
    advance(p);
    return add_node(p, (node){.kind = N_NUM,
                              .sub = v.is_int,
                              .a = off,
                              .b = (uint32_t)tlen,
                              .num_i = v.i,
                              .num_d = v.d});
}

/* A dotted path: the root and its segments are resolved now, so evaluation only walks JSON. */
static uint32_t path_node(parser *p)
{
    const char *s = p->src + p->cur.pos;
    size_t len = p->cur.len;
    const char *dot = memchr(s, '.', len);
    size_t rootlen = dot ? (size_t)(dot - s) : len;
    const char *rest = dot ? dot + 1 : NULL;
    size_t restlen = dot ? len - rootlen - 1 : 0;
    node n = {.kind = N_PATH, .sub = R_NONE};

#define IS(str, n_, lit) ((n_) == sizeof(lit) - 1 && memcmp((str), (lit), sizeof(lit) - 1) == 0)
    if (IS(s, rootlen, "auth")) {
        if (rest && (IS(rest, restlen, "userId") || IS(rest, restlen, "user_id")))
            n.sub = R_AUTH_USER;
        else if (rest && (IS(rest, restlen, "isAdmin") || IS(rest, restlen, "is_admin")))
            n.sub = R_AUTH_ADMIN;
        else if (rest && (IS(rest, restlen, "tenantId") || IS(rest, restlen, "tenant_id")))
            n.sub = R_AUTH_TENANT;
    } else if (IS(s, rootlen, "data")) {
        n.sub = R_DATA;
    } else if (IS(s, rootlen, "existing")) {
        n.sub = R_EXISTING;
    } else if (IS(s, rootlen, "input")) {
        n.sub = R_INPUT;
    }
#undef IS
    if (n.sub == R_DATA || n.sub == R_EXISTING || n.sub == R_INPUT) {
        if (n.sub != R_INPUT) p->reads_row = true;
        /* Segments go to the pool NUL-separated ("a.b" → "a\0b\0"); an empty segment (from
         * "data..x") is a lookup of the key "", as splitting on '.' gave in the original. */
        n.a = (uint32_t)p->npool;
        uint32_t nseg = 0;
        size_t k = 0;
        while (rest && k <= restlen) {
            const char *d = memchr(rest + k, '.', restlen - k);
            size_t seglen = d ? (size_t)(d - (rest + k)) : restlen - k;
            if (pool_add(p, rest + k, seglen) == NONE) return NONE;
            nseg++;
            k += seglen + 1;
        }
        n.b = nseg;
    }
    advance(p);
    return add_node(p, n);
}

static uint32_t parse_or(parser *p);

/* IDENT "(" STRING ("," STRING)* ")" — only the two role functions exist. */
static uint32_t call_node(parser *p)
{
    tok name = p->cur;
    bool one = word_is(p, name.pos, name.len, "auth.hasRole");
    if (!one && !word_is(p, name.pos, name.len, "auth.hasAnyRole")) {
        fail(p, name.pos, "unknown function \"%.*s\" (only auth.hasRole and auth.hasAnyRole exist)",
             (int)(name.len > 40 ? 40 : name.len), p->src + name.pos);
        return NONE;
    }
    advance(p); /* name */
    advance(p); /* ( */
    size_t base = p->nstack;
    for (;;) {
        if (p->cur.kind != T_STR) {
            fail_unexpected(p, "a role name in quotes");
            return NONE;
        }
        uint32_t s = string_node(p);
        if (s == NONE || !push_child(p, s)) return NONE;
        if (p->cur.kind != T_COMMA) break;
        advance(p);
    }
    if (p->cur.kind != T_RPAREN) {
        fail_unexpected(p, "\",\" or \")\"");
        return NONE;
    }
    if (one && p->nstack - base != 1) {
        fail(p, name.pos, "auth.hasRole takes exactly one role (use auth.hasAnyRole for several)");
        return NONE;
    }
    advance(p);
    return close_children(p, N_ROLES, base);
}

static bool enter(parser *p)
{
    if (++p->depth > PYLON_POLICY_MAX_DEPTH) {
        fail(p, p->cur.pos, "nesting deeper than %d", PYLON_POLICY_MAX_DEPTH);
        return false;
    }
    return true;
}

static uint32_t parse_primary(parser *p)
{
    switch (p->cur.kind) {
    case T_TRUE:
    case T_FALSE: {
        bool b = p->cur.kind == T_TRUE;
        advance(p);
        return add_node(p, (node){.kind = N_BOOL, .sub = b});
    }
    case T_NULL:
        advance(p);
        return add_node(p, (node){.kind = N_NULL});
    case T_STR:
        return string_node(p);
    case T_NUM:
        return number_node(p);
    case T_LPAREN: {
        if (!enter(p)) return NONE;
        advance(p);
        uint32_t e = parse_or(p);
        if (e == NONE) return NONE;
        if (p->cur.kind != T_RPAREN) {
            fail_unexpected(p, "\")\"");
            return NONE;
        }
        p->depth--;
        advance(p);
        return e;
    }
    case T_IDENT: {
        size_t after = p->cur.pos + p->cur.len;
        while (after < p->len && strchr(" \t\r\n", p->src[after]) && p->src[after])
            after++;
        if (after < p->len && p->src[after] == '(') return call_node(p);
        return path_node(p);
    }
    default:
        fail_unexpected(p, "an expression");
        return NONE;
    }
}

static uint32_t parse_not(parser *p)
{
    if (p->cur.kind != T_NOT) return parse_primary(p);
    if (!enter(p)) return NONE;
    advance(p);
    uint32_t x = parse_not(p);
    if (x == NONE) return NONE;
    p->depth--;
    return add_node(p, (node){.kind = N_NOT, .a = x});
}

/* The right side of a comparison and the items of a list: no calls, no operators. */
static uint32_t parse_atom(parser *p)
{
    switch (p->cur.kind) {
    case T_TRUE:
    case T_FALSE:
    case T_NULL:
    case T_STR:
    case T_NUM:
        return parse_primary(p);
    case T_IDENT:
        return path_node(p);
    default:
        fail_unexpected(p, "a value (null, true, false, a string, a number or a path)");
        return NONE;
    }
}

static uint32_t parse_list(parser *p)
{
    advance(p); /* [ */
    size_t base = p->nstack;
    if (p->cur.kind != T_RBRACK) {
        for (;;) {
            uint32_t item = parse_atom(p);
            if (item == NONE || !push_child(p, item)) return NONE;
            if (p->cur.kind != T_COMMA) break;
            advance(p);
        }
        if (p->cur.kind != T_RBRACK) {
            fail_unexpected(p, "\",\" or \"]\"");
            return NONE;
        }
    }
    advance(p);
    return close_children(p, N_LIST, base);
}

static bool is_cmp_tok(tkind k)
{
    return k == T_EQ || k == T_NE || k == T_LT || k == T_LE || k == T_GT || k == T_GE || k == T_IN;
}

static uint32_t parse_cmp(parser *p)
{
    uint32_t left = parse_not(p);
    if (left == NONE) return NONE;
    tkind k = p->cur.kind;
    if (!is_cmp_tok(k)) return left;
    advance(p);
    uint32_t right;
    node n = {.a = left};
    if (k == T_IN) {
        n.kind = N_IN;
        if (p->cur.kind == T_LBRACK) {
            right = parse_list(p);
        } else if (p->cur.kind == T_IDENT) {
            right = path_node(p);
        } else {
            fail_unexpected(p, "a list \"[...]\" or a path after \"in\"");
            return NONE;
        }
    } else {
        static const uint8_t ops[] = {[T_EQ] = C_EQ, [T_NE] = C_NE, [T_LT] = C_LT,
                                      [T_LE] = C_LE, [T_GT] = C_GT, [T_GE] = C_GE};
        n.kind = N_CMP;
        n.sub = ops[k];
        right = parse_atom(p);
    }
    if (right == NONE) return NONE;
    if (is_cmp_tok(p->cur.kind)) {
        fail(p, p->cur.pos, "comparisons cannot be chained (use parentheses and && or ||)");
        return NONE;
    }
    n.b = right;
    return add_node(p, n);
}

/* and := cmp ("&&" cmp)*  and  or := and ("||" and)*, both as one n-ary node. */
static uint32_t parse_chain(parser *p, tkind op, uint8_t kind, uint32_t (*sub)(parser *))
{
    uint32_t first = sub(p);
    if (first == NONE || p->cur.kind != op) return first;
    size_t base = p->nstack;
    if (!push_child(p, first)) return NONE;
    while (p->cur.kind == op) {
        advance(p);
        uint32_t x = sub(p);
        if (x == NONE || !push_child(p, x)) return NONE;
    }
    return close_children(p, kind, base);
}

static uint32_t parse_and(parser *p)
{
    return parse_chain(p, T_AND, N_AND, parse_cmp);
}

static uint32_t parse_or(parser *p)
{
    return parse_chain(p, T_OR, N_OR, parse_and);
}

pylon_policy_expr *pylon_policy_compile(const char *src, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    parser p = {.src = src ? src : "", .err = err, .errlen = errlen};
    p.len = strlen(p.src);
    uint32_t root = NONE;
    if (p.len >= MAX_SRC_LEN) {
        fail(&p, 0, "expression longer than %u bytes", MAX_SRC_LEN);
    } else {
        advance(&p);
        if (!p.failed && p.cur.kind == T_EOF) fail(&p, 0, "empty expression");
        root = parse_or(&p);
        if (root != NONE && p.cur.kind != T_EOF) fail_unexpected(&p, "the end of the expression");
    }
    free(p.stack);
    pylon_policy_expr *e = NULL;
    if (!p.failed && root != NONE) e = malloc(sizeof *e);
    if (!e) {
        if (!p.failed) fail(&p, 0, "out of memory");
        free(p.nodes);
        free(p.kids);
        free(p.pool);
        return NULL;
    }
    *e = (pylon_policy_expr){
        .nodes = p.nodes, .kids = p.kids, .pool = p.pool, .root = root, .reads_row = p.reads_row};
    return e;
}

/* ---- the manifest's rule table ----------------------------------------------------------------
 */

enum field { F_ALLOW, F_READ, F_INSERT, F_UPDATE, F_DELETE, F_WRITE, F_COUNT };
static const char *const field_names[F_COUNT] = {"allow",       "allowRead",   "allowInsert",
                                                 "allowUpdate", "allowDelete", "allowWrite"};

typedef struct policy {
    char *name, *entity, *action;
    pylon_policy_expr *expr[F_COUNT];
} policy;

/* One policy's contribution to one entity or action, with the fallback already chosen. */
typedef struct rule {
    const char *key; /* entity or action name */
    const char *name;
    const pylon_policy_expr *expr[4]; /* by pylon_policy_op; actions use [0] only */
    size_t order;                     /* manifest position: the AND runs in this order */
} rule;

struct pylon_policy_set {
    policy *pols;
    size_t npols;
    rule *ents, *acts; /* sorted by (key, order) for a binary search */
    size_t nents, nacts;
};

void pylon_policy_set_free(pylon_policy_set *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->npols; i++) {
        free(s->pols[i].name);
        free(s->pols[i].entity);
        free(s->pols[i].action);
        for (int f = 0; f < F_COUNT; f++)
            pylon_policy_expr_free(s->pols[i].expr[f]);
    }
    free(s->pols);
    free(s->ents);
    free(s->acts);
    free(s);
}

static int rule_cmp(const void *a, const void *b)
{
    const rule *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c) return c;
    return (x->order > y->order) - (x->order < y->order);
}

static void build_err(char *err, size_t errlen, size_t i, const char *field, const char *name,
                      const char *why)
{
    if (!err || !errlen) return;
    if (name)
        snprintf(err, errlen, "policies[%zu]%s%s (policy \"%s\"): %s", i, field ? "." : "",
                 field ? field : "", name, why);
    else
        snprintf(err, errlen, "policies[%zu]%s%s: %s", i, field ? "." : "", field ? field : "",
                 why);
}

/* An optional string member: absent or null → *out = NULL; a string → a copy; else an error. */
static bool opt_string(const json_t *obj, const char *key, char **out)
{
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v)) return true;
    if (!json_is_string(v)) return false;
    *out = strdup(json_string_value(v));
    return *out != NULL;
}

static const pylon_policy_expr *first_of(const policy *p, int a, int b, int c)
{
    if (p->expr[a]) return p->expr[a];
    if (b >= 0 && p->expr[b]) return p->expr[b];
    return c >= 0 ? p->expr[c] : NULL;
}

pylon_policy_set *pylon_policy_set_build(const json_t *policies, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (policies && !json_is_null(policies) && !json_is_array(policies)) {
        if (err && errlen) snprintf(err, errlen, "policies: must be an array");
        return NULL;
    }
    pylon_policy_set *s = calloc(1, sizeof *s);
    size_t n = json_is_array(policies) ? json_array_size(policies) : 0;
    if (!s) goto oom;
    if (n) {
        s->pols = calloc(n, sizeof *s->pols);
        s->ents = calloc(n, sizeof *s->ents);
        s->acts = calloc(n, sizeof *s->acts);
        if (!s->pols || !s->ents || !s->acts) goto oom;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *o = json_array_get(policies, i);
        policy *p = &s->pols[s->npols];
        if (!json_is_object(o)) {
            build_err(err, errlen, i, NULL, NULL, "must be an object");
            goto fail;
        }
        s->npols++; /* from here on p's members are freed with the set */
        const json_t *jn = json_object_get(o, "name");
        if (!json_is_string(jn)) {
            build_err(err, errlen, i, "name", NULL, "must be a string");
            goto fail;
        }
        if (!(p->name = strdup(json_string_value(jn)))) goto oom;
        if (!opt_string(o, "entity", &p->entity)) {
            build_err(err, errlen, i, "entity", p->name, "must be a string");
            goto fail;
        }
        if (!opt_string(o, "action", &p->action)) {
            build_err(err, errlen, i, "action", p->name, "must be a string");
            goto fail;
        }
        if (!p->entity && !p->action) {
            build_err(err, errlen, i, NULL, p->name, "needs an \"entity\" or an \"action\"");
            goto fail;
        }
        for (int f = 0; f < F_COUNT; f++) {
            const json_t *v = json_object_get(o, field_names[f]);
            if (!v || json_is_null(v)) continue;
            if (!json_is_string(v)) {
                build_err(err, errlen, i, field_names[f], p->name,
                          "must be a string (an expression)");
                goto fail;
            }
            if (strlen(json_string_value(v)) != json_string_length(v)) {
                build_err(err, errlen, i, field_names[f], p->name, "contains a NUL byte");
                goto fail;
            }
            if (json_string_length(v) == 0) continue; /* empty = absent, as in the original */
            char why[200];
            p->expr[f] = pylon_policy_compile(json_string_value(v), why, sizeof why);
            if (!p->expr[f]) {
                build_err(err, errlen, i, field_names[f], p->name, why);
                goto fail;
            }
        }
        if (p->entity) {
            rule *r = &s->ents[s->nents++];
            *r = (rule){.key = p->entity, .name = p->name, .order = i};
            r->expr[PYLON_OP_READ] = first_of(p, F_READ, F_ALLOW, -1);
            r->expr[PYLON_OP_INSERT] = first_of(p, F_INSERT, F_WRITE, F_ALLOW);
            r->expr[PYLON_OP_UPDATE] = first_of(p, F_UPDATE, F_WRITE, F_ALLOW);
            r->expr[PYLON_OP_DELETE] = first_of(p, F_DELETE, F_WRITE, F_ALLOW);
        }
        if (p->action) {
            rule *r = &s->acts[s->nacts++];
            *r = (rule){.key = p->action, .name = p->name, .order = i};
            r->expr[0] = p->expr[F_ALLOW];
        }
    }
    if (s->nents) qsort(s->ents, s->nents, sizeof *s->ents, rule_cmp);
    if (s->nacts) qsort(s->acts, s->nacts, sizeof *s->acts, rule_cmp);
    return s;
oom:
    if (err && errlen) snprintf(err, errlen, "policies: out of memory");
fail:
    pylon_policy_set_free(s);
    return NULL;
}

/* The rules for `key`, in manifest order: [*first, *first + count). */
static const rule *find_rules(const rule *rules, size_t n, const char *key, size_t *count)
{
    *count = 0;
    if (n == 0) return rules; /* possibly NULL: no arithmetic on it */
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(rules[mid].key, key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t end = lo;
    while (end < n && strcmp(rules[end].key, key) == 0)
        end++;
    *count = end - lo;
    return rules + lo;
}

static bool check_rules(const rule *r, size_t n, int slot, const pylon_policy_env *env,
                        const char **denied_by)
{
    for (size_t k = 0; k < n; k++) {
        if (!r[k].expr[slot]) continue;
        if (!pylon_policy_eval(r[k].expr[slot], env)) {
            if (denied_by) *denied_by = r[k].name;
            return false;
        }
    }
    return true;
}

bool pylon_policy_check(const pylon_policy_set *s, const char *entity, pylon_policy_op op,
                        const pylon_policy_env *env, const char **denied_by)
{
    if (env && env->auth && env->auth->is_admin) return true;
    if (!s) return true;                                         /* no policies at all */
    if (!entity || (unsigned)op > PYLON_OP_DELETE) return false; /* a caller bug: deny */
    size_t n;
    const rule *r = find_rules(s->ents, s->nents, entity, &n);
    return check_rules(r, n, (int)op, env, denied_by);
}

bool pylon_policy_check_action(const pylon_policy_set *s, const char *action,
                               const pylon_policy_env *env, const char **denied_by)
{
    if (env && env->auth && env->auth->is_admin) return true;
    if (!s) return true;
    if (!action) return false;
    size_t n;
    const rule *r = find_rules(s->acts, s->nacts, action, &n);
    return check_rules(r, n, 0, env, denied_by);
}

bool pylon_policy_entity_has_rules(const pylon_policy_set *s, const char *entity,
                                   pylon_policy_op op)
{
    if (!s || !entity || (unsigned)op > PYLON_OP_DELETE) return false;
    size_t n;
    const rule *r = find_rules(s->ents, s->nents, entity, &n);
    for (size_t k = 0; k < n; k++)
        if (r[k].expr[op]) return true;
    return false;
}

bool pylon_policy_entity_reads_row(const pylon_policy_set *s, const char *entity,
                                   pylon_policy_op op)
{
    if (!s || !entity || (unsigned)op > PYLON_OP_DELETE) return false;
    size_t n;
    const rule *r = find_rules(s->ents, s->nents, entity, &n);
    for (size_t k = 0; k < n; k++)
        if (pylon_policy_expr_reads_row(r[k].expr[op])) return true;
    return false;
}
