/*
 * test_policy.c — the policy language and the manifest rule table (actors/policy.h).
 *
 * Proves: every grammar rule of backend.md §4.3 and the project's additions (number literals,
 * <, <=, >, >=, `in` with lists and JSON arrays, existing.*) parses and evaluates as policy.h
 * states; every value rule of §4.4 (number = its decimal text for ==, missing = null,
 * truthiness, mixed kinds never equal); precedence (&& over ||, `!` tighter than ==, one
 * comparison at most); the role functions; that every malformed expression is refused with a
 * message naming the problem and its column; and the §4.2 algorithm over a policy set: admin
 * bypass, no policy → allowed, AND across policies in manifest order with the denier's name,
 * the allowX → allowWrite → allow fallbacks, actions seeing only `allow`.
 */
#include "actors/policy.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include "support.h"

/* ---- helpers --------------------------------------------------------------------------------- */

static json_t *js(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_ALLOW_NUL, &je);
    cr_assert_not_null(j, "bad test JSON %s: %s", text, je.text);
    return j;
}

static const char *const editor_roles[] = {"editor", "viewer"};
static const pylon_identity alice = {
    .user_id = "u_alice", .tenant_id = "t1", .roles = editor_roles, .nroles = 2};
static const pylon_identity bob = {.user_id = "u_bob"};
static const char *const admin_roles[] = {"admin"};
static const pylon_identity admin = {
    .user_id = "__admin__", .is_admin = true, .roles = admin_roles, .nroles = 1};
static const pylon_identity anon = {0};

/* Compiles `src` (which must compile) and evaluates it once. */
static bool ev(const char *src, const pylon_policy_env *env)
{
    char err[256];
    pylon_policy_expr *e = pylon_policy_compile(src, err, sizeof err);
    cr_assert_not_null(e, "expected %s to compile, got: %s", src, err);
    bool r = pylon_policy_eval(e, env);
    pylon_policy_expr_free(e);
    return r;
}

/* Evaluates with `auth` and data = `data_json` (NULL: no data). */
static bool evd(const char *src, const pylon_identity *auth, const char *data_json)
{
    json_t *d = data_json ? js(data_json) : NULL;
    pylon_policy_env env = {.auth = auth, .data = d};
    bool r = ev(src, &env);
    json_decref(d);
    return r;
}

#define T(src) cr_assert(evd((src), &alice, DATA), "expected true: %s", (src))
#define F(src) cr_assert(!evd((src), &alice, DATA), "expected false: %s", (src))

/* The row most value tests run against. */
#define DATA                                                                                       \
    "{\"userId\":\"u_alice\",\"title\":\"hi\",\"empty\":\"\",\"done\":false,\"yes\":true,"         \
    "\"nothing\":null,\"count\":3,\"zero\":0,\"neg\":-2,\"price\":9.5,\"whole\":3.0,"              \
    "\"big\":9007199254740993,\"tiny\":1.5e-7,\"huge\":1e20,\"s3\":\"3\",\"s10\":\"10\","          \
    "\"s9\":\"9\",\"sword\":\"abc\",\"obj\":{\"a\":{\"b\":\"deep\"},\"n\":7},\"arr\":[1,2],"       \
    "\"members\":[\"u_bob\",\"u_alice\"],\"mixed\":[3,\"x\",true,null,{\"k\":1},[1]],"             \
    "\"status\":\"open\",\"name\":\"h\u00e9llo\",\"\":{\"x\":\"empty key\"},"                      \
    "\"nul\":\"a\\u0000b\"}"

/* Expects `src` to be refused with a message containing every given fragment. */
static void refused(const char *src, const char *frag1, const char *frag2)
{
    char err[256];
    memset(err, 'x', sizeof err);
    pylon_policy_expr *e = pylon_policy_compile(src, err, sizeof err);
    cr_assert_null(e, "expected %s to be refused", src);
    cr_assert(strstr(err, frag1), "error for %s: \"%s\" lacks \"%s\"", src, err, frag1);
    if (frag2) cr_assert(strstr(err, frag2), "error for %s: \"%s\" lacks \"%s\"", src, err, frag2);
}

/* ---- literals, truthiness, paths ---------------------------------------------------------- */

Test(policy, literals_and_truthiness)
{
    T("true");
    F("false");
    F("null");
    T("\"x\"");
    T("'x'");
    F("\"\"");
    F("''");
    T("0");
    T("3");
    T("-1.5");
    T("data.title");
    F("data.empty");
    F("data.done");
    T("data.yes");
    F("data.nothing");
    F("data.missing");
    T("data.count");
    T("data.zero"); /* numbers were their decimal text in the original: never empty */
    F("data.obj");  /* objects and arrays are null */
    F("data.arr");
    assert_no_leaks();
}

Test(policy, auth_paths)
{
    T("auth.userId == \"u_alice\"");
    T("auth.user_id == \"u_alice\"");
    T("auth.tenantId == \"t1\"");
    T("auth.tenant_id == \"t1\"");
    F("auth.isAdmin");
    F("auth.is_admin");
    T("auth.isAdmin == false");
    cr_assert(evd("auth.isAdmin", &admin, NULL));
    cr_assert(evd("auth.is_admin == true", &admin, NULL));
    cr_assert(evd("auth.userId == \"__admin__\"", &admin, NULL));
    /* anonymous: user and tenant are null, isAdmin false */
    cr_assert(evd("auth.userId == null", &anon, NULL));
    cr_assert(evd("auth.tenantId == null", &anon, NULL));
    cr_assert(evd("auth.isAdmin == false", &anon, NULL));
    cr_assert(evd("auth.tenantId == null", &bob, NULL));
    /* a NULL auth is anonymous */
    cr_assert(evd("auth.userId == null && !auth.isAdmin", NULL, NULL));
    /* any other auth.* is null, extra segments too */
    T("auth.email == null");
    T("auth.roles == null");
    T("auth.userId.x == null");
    T("auth == null");
    assert_no_leaks();
}

Test(policy, data_paths)
{
    T("data.obj.a.b == \"deep\"");
    T("data.obj.n == \"7\"");
    T("data.obj.a.missing == null");
    T("data.title.length == null"); /* walking into a string */
    T("data.arr.0 == null");        /* arrays are not walked */
    T("data == null");              /* the row itself is an object */
    T("data..x == \"empty key\"");  /* an empty segment is the key "" */
    T("record.userId == null");     /* unknown roots are null */
    T("user.id == null");
    T("row == null");
    /* no data bound: every data.* is null */
    cr_assert(evd("data.userId == null", &alice, NULL));
    cr_assert(!evd("data.userId", &alice, NULL));
    assert_no_leaks();
}

Test(policy, input_and_existing_paths)
{
    json_t *data = js("{\"ownerId\":\"u_bob\",\"v\":2}");
    json_t *existing = js("{\"ownerId\":\"u_alice\",\"v\":1}");
    json_t *input = js("{\"amount\":10,\"note\":\"hi\"}");
    pylon_policy_env env = {.auth = &alice, .data = data, .existing = existing, .input = input};
    cr_assert(ev("existing.ownerId == auth.userId", &env));
    cr_assert(!ev("data.ownerId == auth.userId", &env));
    cr_assert(ev("existing.v < data.v", &env));
    cr_assert(ev("input.amount > 5 && input.note == \"hi\"", &env));
    cr_assert(ev("input.amount == \"10\"", &env));
    /* existing absent (insert): every existing.* is null */
    pylon_policy_env ins = {.auth = &alice, .data = data};
    cr_assert(ev("existing.ownerId == null", &ins));
    cr_assert(!ev("existing.ownerId == auth.userId", &ins));
    cr_assert(ev("input.amount == null", &ins));
    json_decref(data);
    json_decref(existing);
    json_decref(input);
    assert_no_leaks();
}

Test(policy, reads_row)
{
    const char *row[] = {"data.x", "existing.x == 1", "auth.userId == data.userId",
                         "true || data.x", "1 in data.list"};
    const char *norow[] = {"true",    "auth.userId != null", "input.x == 1", "auth.hasRole(\"a\")",
                           "datum.x", "\"data.x\""};
    for (size_t i = 0; i < sizeof row / sizeof *row; i++) {
        pylon_policy_expr *e = pylon_policy_compile(row[i], NULL, 0);
        cr_assert(pylon_policy_expr_reads_row(e), "%s reads the row", row[i]);
        pylon_policy_expr_free(e);
    }
    for (size_t i = 0; i < sizeof norow / sizeof *norow; i++) {
        pylon_policy_expr *e = pylon_policy_compile(norow[i], NULL, 0);
        cr_assert(!pylon_policy_expr_reads_row(e), "%s does not read the row", norow[i]);
        pylon_policy_expr_free(e);
    }
    cr_assert(!pylon_policy_expr_reads_row(NULL));
    assert_no_leaks();
}

/* ---- equality ------------------------------------------------------------------------------- */

Test(policy, equality_same_kind)
{
    T("data.userId == auth.userId");
    T("data.title == 'hi'");
    F("data.title == \"Hi\"");
    F("data.title == \"hi \"");
    T("data.title != \"ho\"");
    T("null == null");
    T("data.missing == null");
    T("data.nothing == null");
    T("data.missing == data.nothing");
    T("true == true");
    F("true == false");
    T("data.done == false");
    T("data.yes != false");
    T("data.name == \"h\xc3\xa9llo\""); /* UTF-8 preserved */
    T("data.nul == \"a\\0b\"");         /* \0 is a real NUL, compared by length */
    F("data.nul == \"a\"");
    assert_no_leaks();
}

Test(policy, number_equals_its_decimal_text)
{
    T("data.count == \"3\"");
    F("data.count == \"3.0\"");
    F("data.count == \" 3\"");
    T("data.neg == \"-2\"");
    T("data.zero == '0'");
    T("data.price == \"9.5\"");
    T("data.whole == \"3.0\""); /* a JSON real keeps its ".0" */
    T("data.big == \"9007199254740993\"");
    T("data.tiny == \"1.5e-7\"");
    T("data.huge == \"1e20\"");
    T("data.obj.n == \"7\"");
    /* literals follow the same rule, in either order */
    T("\"3\" == data.count");
    T("3 == \"3\"");
    T("3.0 == \"3.0\"");
    F("3.0 == \"3\"");
    T("data.s3 == 3");
    T("data.count != \"4\"");
    assert_no_leaks();
}

Test(policy, numbers_compare_numerically)
{
    T("data.count == 3");
    T("data.count == 3.0");
    T("data.whole == 3");
    T("data.whole == data.count");
    T("data.price == 9.5");
    T("data.price == 95e-1");
    T("data.neg == -2");
    T("data.tiny == 0.00000015");
    T("data.huge == 100000000000000000000");
    T("data.big == 9007199254740993");
    F("data.big == 9007199254740992"); /* integers compare exactly, not through double */
    F("data.count == 4");
    T("data.count != 4");
    T("-0 == 0");
    assert_no_leaks();
}

Test(policy, mixed_kinds_never_equal)
{
    F("true == \"true\"");
    F("data.yes == \"true\"");
    F("false == null");
    F("data.done == null");
    F("null == \"\"");
    F("data.empty == null");
    F("data.zero == false");
    F("0 == false");
    F("1 == true");
    F("data.count == null");
    F("null == 0");
    T("data.yes != \"true\"");
    T("data.missing != \"\"");
    assert_no_leaks();
}

/* ---- precedence and structure ------------------------------------------------------------- */

Test(policy, precedence)
{
    T("true || false && false"); /* && binds tighter than || */
    F("(true || false) && false");
    T("false && false || true");
    F("false && (false || true)");
    T("!false && true");
    F("!(true && true)");
    T("!true || true");
    T("!!true");
    F("!!!true");
    T("!data.missing");
    F("!data.title");
    T("true && true && true && true");
    F("true && true && false && true");
    T("false || false || false || true");
    F("false || false || false");
    T("(((true)))");
    T("auth.userId == data.userId && data.status == \"open\" || false");
    T(" \t\r\n true \n");
    assert_no_leaks();
}

Test(policy, not_binds_before_comparison)
{
    /* `!x == null` is `(!x) == null`: !x is a bool, never null */
    F("!data.missing == null");
    T("!(data.title == null)");
    /* missing x: (!x) == false is false, !(x == false) is true */
    F("!data.missing == false");
    T("!(data.missing == false)");
    T("!data.missing == true");
    T("!data.title == false");
    assert_no_leaks();
}

Test(policy, comparison_results_are_bools)
{
    T("(data.count == 3) == true");
    T("(data.count == 4) == false");
    T("(true || data.x) == true");
    T("(false && true) == false");
    T("(3 in [3]) == true");
    T("(auth.hasRole(\"editor\")) == true");
    assert_no_leaks();
}

/* ---- ordering ------------------------------------------------------------------------------ */

Test(policy, ordering_numbers)
{
    T("data.count > 2");
    F("data.count > 3");
    T("data.count >= 3");
    T("data.count <= 3");
    F("data.count < 3");
    T("data.count < 3.5");
    T("data.price <= 9.5");
    F("data.price < 9.5");
    T("data.price > 9");
    T("data.neg < 0");
    T("data.neg > -3");
    T("data.tiny > 0 && data.tiny < 1e-6");
    T("data.huge > 9999999999999999999");  /* past int64: a real */
    F("data.huge > 99999999999999999999"); /* rounds to 1e20 itself */
    T("data.big > 9007199254740992");      /* exact integers */
    T("data.big >= data.big");
    T("data.whole < data.price");
    T("1e3 > 999");
    T("-1 > -1.5"); /* integers against reals, both signs */
    T("-2 < -1.5");
    T("-1.5 < -1");
    T("data.neg < -1.5");
    T("2 > 1.5 && 1 < 1.5 && 2 >= 2.0 && 2 <= 2.0");
    T("9223372036854775807 < 1e19");
    T("-9223372036854775808 > -1e19");
    T("-9223372036854775808 < -9223372036854775807");
    assert_no_leaks();
}

Test(policy, ordering_numeric_strings)
{
    T("data.s10 > data.s9"); /* both numeric: 10 > 9, not "10" < "9" */
    T("data.s10 > 9");
    T("data.s9 < 10");
    T("data.count >= \"3\"");
    T("\"2.5\" < data.count");
    T("\"-1\" < \"0\"");
    T("\"1e2\" == \"1e2\" && \"1e2\" > \"99\"");
    assert_no_leaks();
}

Test(policy, ordering_strings_and_mixed)
{
    T("\"apple\" < \"banana\"");
    T("data.sword < \"abd\"");
    T("data.sword > \"ab\"");
    T("data.sword >= \"abc\" && data.sword <= \"abc\"");
    T("\"\" < \"a\"");
    T("\"Z\" < \"a\"");        /* byte order */
    T("\"10x\" < \"9x\"");     /* not numeric: strings */
    T("data.s10 < \"9x\"");    /* one numeric, one not: strings */
    T("\"\xc3\xa9\" > \"z\""); /* code point order */
    F("data.count < \"abc\""); /* number vs non-numeric string */
    F("data.count > \"abc\"");
    F("data.missing < 1");
    F("data.missing >= 1");
    F("null <= null");
    F("true > false");
    F("data.yes >= data.yes");
    F("data.obj < 1");
    F("\"3\" < true");
    F("\"1.\" < 2"); /* not NUMBER syntax, so a string against a number: false */
    F("\" 1\" < 2");
    F("\"0x10\" > 2");
    F("\"nan\" > 2");
    F("\"inf\" > 2");
    assert_no_leaks();
}

/* ---- in -------------------------------------------------------------------------------------- */

Test(policy, in_list_literal)
{
    T("data.status in [\"open\", \"draft\"]");
    F("data.status in [\"closed\", \"draft\"]");
    T("data.status in ['open']");
    F("data.status in []");
    T("data.count in [1, 2, 3]");
    T("data.count in [\"3\"]"); /* equality rule: number = its text */
    T("data.s3 in [3]");
    F("data.count in [\"03\", 4]");
    T("data.missing in [null]");
    F("data.missing in [\"\", false, 0]");
    T("data.yes in [false, true]");
    T("auth.userId in [data.userId, \"other\"]"); /* paths as items */
    T("\"u_alice\" in [auth.userId]");
    T("!(data.status in [\"closed\"])");
    T("!data.status in [false]"); /* (!status) in [false] */
    T("data.status in [\"open\"] && data.count in [3]");
    T(" data.status  in\n[ \"open\" , \"draft\" ] ");
    assert_no_leaks();
}

Test(policy, in_json_array)
{
    T("auth.userId in data.members");
    cr_assert(!evd("auth.userId in data.members", &admin, DATA));
    cr_assert(!evd("auth.userId in data.members", &anon, DATA));
    T("\"u_bob\" in data.members");
    T("2 in data.arr");
    T("\"2\" in data.arr");
    F("3 in data.arr");
    T("3 in data.mixed");
    T("\"x\" in data.mixed");
    T("true in data.mixed");
    T("null in data.mixed"); /* the null element, and the object and array count as null */
    F("false in data.mixed");
    F("\"u_alice\" in data.userId"); /* a string is not a list */
    F("\"a\" in data.obj");
    F("null in data.missing");
    F("null in data.nothing");
    F("1 in auth.userId");
    F("1 in record.list");
    assert_no_leaks();
}

Test(policy, in_existing_and_input_arrays)
{
    json_t *existing = js("{\"editors\":[\"u_alice\"]}");
    json_t *input = js("[\"a\",\"b\"]");
    pylon_policy_env env = {.auth = &alice, .existing = existing, .input = input};
    cr_assert(ev("auth.userId in existing.editors", &env));
    cr_assert(ev("\"b\" in input", &env)); /* a bare root that is an array */
    cr_assert(!ev("\"c\" in input", &env));
    json_decref(existing);
    json_decref(input);
    assert_no_leaks();
}

/* ---- functions ---------------------------------------------------------------------------- */

Test(policy, has_role)
{
    cr_assert(evd("auth.hasRole(\"editor\")", &alice, NULL));
    cr_assert(evd("auth.hasRole('viewer')", &alice, NULL));
    cr_assert(!evd("auth.hasRole(\"owner\")", &alice, NULL));
    cr_assert(!evd("auth.hasRole(\"edit\")", &alice, NULL));
    cr_assert(!evd("auth.hasRole(\"editor\")", &bob, NULL)); /* no roles */
    cr_assert(!evd("auth.hasRole(\"editor\")", &anon, NULL));
    cr_assert(!evd("auth.hasRole(\"editor\")", NULL, NULL));
    cr_assert(evd("auth.hasRole(\"anything\")", &admin, NULL)); /* admin has every role */
    cr_assert(evd("auth.hasRole ( \"editor\" )", &alice, NULL));
    cr_assert(evd("!auth.hasRole(\"owner\") && auth.hasRole(\"editor\")", &alice, NULL));
    assert_no_leaks();
}

Test(policy, has_any_role)
{
    cr_assert(evd("auth.hasAnyRole(\"editor\",\"admin\")", &alice, NULL));
    cr_assert(evd("auth.hasAnyRole(\"admin\", 'viewer')", &alice, NULL));
    cr_assert(evd("auth.hasAnyRole(\"viewer\")", &alice, NULL));
    cr_assert(!evd("auth.hasAnyRole(\"a\", \"b\", \"c\")", &alice, NULL));
    cr_assert(!evd("auth.hasAnyRole(\"editor\", \"admin\")", &bob, NULL));
    cr_assert(evd("auth.hasAnyRole(\"x\", \"y\")", &admin, NULL));
    const char *const odd_roles[] = {NULL, "ed\0itor", "x"};
    pylon_identity odd = {.user_id = "u", .roles = odd_roles, .nroles = 3};
    cr_assert(evd("auth.hasRole(\"ed\")", &odd, NULL)); /* NULL skipped; roles are C strings */
    cr_assert(!evd("auth.hasRole(\"ed\\0itor\")", &odd, NULL));
    cr_assert(evd("auth.hasRole(\"x\")", &odd, NULL));
    assert_no_leaks();
}

/* ---- the spec's examples ------------------------------------------------------------------ */

Test(policy, spec_examples)
{
    json_t *row = js("{\"authorId\":\"u_alice\",\"ownerId\":\"u_bob\",\"orgId\":\"t1\"}");
    pylon_policy_env a = {.auth = &alice, .data = row}, b = {.auth = &bob, .data = row},
                     n = {.auth = &anon, .data = row}, ad = {.auth = &admin, .data = row};
    cr_assert(ev("auth.userId != null", &a));
    cr_assert(!ev("auth.userId != null", &n));
    cr_assert(ev("auth.userId == data.authorId", &a));
    cr_assert(!ev("auth.userId == data.authorId", &b));
    cr_assert(!ev("auth.userId == data.authorId", &n));
    cr_assert(ev("auth.isAdmin || auth.userId == data.ownerId", &b));
    cr_assert(ev("auth.isAdmin || auth.userId == data.ownerId", &ad));
    cr_assert(!ev("auth.isAdmin || auth.userId == data.ownerId", &a));
    cr_assert(ev("data.orgId == auth.tenantId", &a));
    cr_assert(!ev("data.orgId == auth.tenantId", &b));
    cr_assert(ev("auth.hasAnyRole(\"editor\",\"admin\")", &a));
    cr_assert(!ev("auth.hasAnyRole(\"editor\",\"admin\")", &b));
    cr_assert(ev("true", &n));
    cr_assert(!ev("false", &ad));
    json_decref(row);
    assert_no_leaks();
}

Test(policy, string_escapes)
{
    json_t *d = js("{\"q\":\"a\\\"b\",\"s\":\"it's\",\"nl\":\"a\\nb\",\"cr\":\"\\r\","
                   "\"tab\":\"\\t\",\"bs\":\"a\\\\b\",\"nul\":\"\\u0000\"}");
    pylon_policy_env env = {.data = d};
    cr_assert(ev("data.q == \"a\\\"b\"", &env));
    cr_assert(ev("data.q == 'a\"b'", &env));
    cr_assert(ev("data.s == 'it\\'s'", &env));
    cr_assert(ev("data.s == \"it's\"", &env));
    cr_assert(ev("data.s == \"it\\'s\"", &env));
    cr_assert(ev("data.nl == \"a\\nb\"", &env));
    cr_assert(ev("data.nl == \"a\nb\"", &env)); /* a raw newline inside quotes is kept */
    cr_assert(ev("data.cr == \"\\r\" && data.tab == '\\t'", &env));
    cr_assert(ev("data.bs == \"a\\\\b\"", &env));
    cr_assert(ev("data.nul == \"\\0\"", &env));
    cr_assert(!ev("data.nul == \"\"", &env));
    json_decref(d);
    assert_no_leaks();
}

/* ---- compile errors ----------------------------------------------------------------------- */

Test(policy, errors_strings)
{
    refused("data.x == \"abc", "unterminated string", "at column 11");
    refused("'abc", "unterminated string", "at column 1");
    refused("\"abc\\", "unterminated string", NULL);
    refused("data.x == \"a\\qb\"", "bad escape \"\\q\"", "at column 13");
    refused("data.x == \"a\\u0041\"", "bad escape \"\\u\"", NULL);
    refused("\"\\x41\"", "bad escape", "column 2");
    assert_no_leaks();
}

Test(policy, errors_operators)
{
    refused("true & false", "single \"&\"", "at column 6");
    refused("true | false", "single \"|\"", "at column 6");
    refused("data.x = 1", "single \"=\"", "at column 8");
    refused("true &", "single \"&\"", NULL);
    refused("true &&", "expected an expression, found the end of the input", "at column 8");
    refused("|| true", "expected an expression, found \"||\"", "at column 1");
    refused("data.x == ", "expected a value", "at column 11");
    refused("data.x == (1)", "expected a value", "at column 11");
    refused("data.x == !true", "expected a value", NULL);
    refused("data.x < auth.hasRole(\"a\")", "expected the end of the expression, found \"(\"",
            NULL);
    refused("a == b == c", "cannot be chained", "at column 8");
    refused("a < b < c", "cannot be chained", NULL);
    refused("a in [1] in [2]", "cannot be chained", NULL);
    refused("a in [1] == true", "cannot be chained", NULL);
    refused("data.x # 1", "unexpected character \"#\"", "at column 8");
    refused("data.x == 1 ; true", "unexpected character \";\"", NULL);
    refused("data.x \x01", "unexpected byte 0x01", NULL);
    refused("- 1", "unexpected character \"-\"", NULL);
    refused("==", "expected an expression, found \"==\"", NULL);
    assert_no_leaks();
}

Test(policy, errors_structure)
{
    refused("", "empty expression", "at column 1");
    refused("   \n ", "empty expression", NULL);
    refused("(auth.userId == null", "expected \")\", found the end of the input", "at column 21");
    refused("(true))", "expected the end of the expression, found \")\"", "at column 7");
    refused("true false", "expected the end of the expression, found \"false\"", "at column 6");
    refused("true \"x\"", "expected the end of the expression, found a string", NULL);
    refused("data.x == 1 2", "expected the end of the expression, found a number", "at column 13");
    refused("()", "expected an expression, found \")\"", "at column 2");
    refused("[1, 2]", "expected an expression, found \"[\"", NULL);
    refused("in", "expected an expression, found \"in\"", NULL);
    refused("data.x == in", "expected a value", NULL);
    refused("data.x in", "after \"in\"", NULL);
    refused("data.x in \"abc\"", "after \"in\"", NULL);
    refused("data.x in [1, 2", "expected \",\" or \"]\"", NULL);
    refused("data.x in [1,]", "expected a value", NULL);
    refused("data.x in [[1]]", "expected a value", NULL);
    refused("data.x in [auth.hasRole(\"a\")]", "expected \",\" or \"]\"", NULL);
    assert_no_leaks();
}

Test(policy, errors_functions)
{
    refused("auth.isOwner(\"x\")", "unknown function \"auth.isOwner\"", "at column 1");
    refused("true && hasRole(\"x\")", "unknown function \"hasRole\"", "at column 9");
    refused("data.x(\"a\")", "unknown function", NULL);
    refused("auth.hasRole(\"a\", \"b\")", "exactly one role", NULL);
    refused("auth.hasRole()", "expected a role name in quotes", "at column 14");
    refused("auth.hasAnyRole()", "expected a role name in quotes", NULL);
    refused("auth.hasRole(editor)", "expected a role name in quotes", NULL);
    refused("auth.hasRole(1)", "expected a role name in quotes", NULL);
    refused("auth.hasAnyRole(\"a\",)", "expected a role name in quotes", NULL);
    refused("auth.hasAnyRole(\"a\" \"b\")", "expected \",\" or \")\"", NULL);
    refused("auth.hasRole(\"a\"", "expected \",\" or \")\"", NULL);
    assert_no_leaks();
}

Test(policy, errors_numbers)
{
    refused("data.x == 3.", "invalid number", "at column 11");
    refused("data.x == 1.2.3", "invalid number", NULL);
    refused("data.x == 3abc", "invalid number", NULL);
    refused("data.x == 1e", "invalid number", NULL);
    refused("data.x == 1e+", "invalid number", NULL);
    refused("data.x == .5", "unexpected character \".\"", NULL);
    char longnum[600];
    memset(longnum, '1', sizeof longnum - 1);
    longnum[sizeof longnum - 1] = '\0';
    refused(longnum, "number too long", NULL);
    assert_no_leaks();
}

Test(policy, depth_limit)
{
    char src[512];
    /* 64 nested parentheses compile, 65 do not */
    for (int depth = 64; depth <= 65; depth++) {
        size_t n = 0;
        for (int i = 0; i < depth; i++)
            src[n++] = '(';
        memcpy(src + n, "true", 4);
        n += 4;
        for (int i = 0; i < depth; i++)
            src[n++] = ')';
        src[n] = '\0';
        if (depth == 64)
            cr_assert(ev(src, NULL));
        else
            refused(src, "nesting deeper than 64", "at column 65");
    }
    /* the same for `!` and for a mix */
    memset(src, '!', 64);
    strcpy(src + 64, "false");
    cr_assert(!ev(src, NULL)); /* 64 negations of false */
    memset(src, '!', 65);
    strcpy(src + 65, "false");
    refused(src, "nesting deeper than 64", "at column 65");
    size_t n = 0;
    for (int i = 0; i < 40; i++)
        src[n++] = '(';
    for (int i = 0; i < 25; i++)
        src[n++] = '!';
    strcpy(src + n, "true");
    refused(src, "nesting deeper than 64", NULL);
    /* depth is nesting, not length: a long flat chain is fine */
    char *flat = malloc(200000);
    n = 0;
    for (int i = 0; i < 20000; i++) {
        memcpy(flat + n, "false||", 7);
        n += 7;
    }
    strcpy(flat + n, "true");
    cr_assert(ev(flat, NULL));
    /* and sibling groups do not add up */
    n = 0;
    for (int i = 0; i < 1000; i++) {
        memcpy(flat + n, "(((true)))&&", 12);
        n += 12;
    }
    strcpy(flat + n, "true");
    cr_assert(ev(flat, NULL));
    free(flat);
    assert_no_leaks();
}

Test(policy, error_columns)
{
    /* columns count code points; later lines say their line */
    refused("data.name == \"h\xc3\xa9llo\" &", "single \"&\"", "at column 22");
    refused("true &&\n  data.x ==", "found the end of the input", "at line 2, column 12");
    refused("true\n&& (", "at line 2, column 5", NULL);
    /* a tiny buffer is filled without overflow; NULL err is allowed */
    char small[8];
    cr_assert_null(pylon_policy_compile("(", small, sizeof small));
    cr_assert_eq(strlen(small), sizeof small - 1);
    cr_assert_null(pylon_policy_compile("(", NULL, 0));
    cr_assert_null(pylon_policy_compile(NULL, NULL, 0));
    cr_assert(!pylon_policy_eval(NULL, NULL)); /* no expression denies */
    assert_no_leaks();
}

Test(policy, compiled_expression_is_reusable)
{
    pylon_policy_expr *e = pylon_policy_compile("auth.userId == data.userId", NULL, 0);
    cr_assert_not_null(e);
    for (int i = 0; i < 1000; i++) {
        char row[64];
        snprintf(row, sizeof row, "{\"userId\":\"%s\"}", i % 3 ? "u_other" : "u_7");
        json_t *d = js(row);
        pylon_identity who = {.user_id = "u_7"};
        pylon_policy_env env = {.auth = &who, .data = d};
        cr_assert_eq(pylon_policy_eval(e, &env), i % 3 == 0, "row %d", i);
        json_decref(d);
    }
    pylon_policy_expr_free(e);
    pylon_policy_expr_free(NULL);
    assert_no_leaks();
}

/* ---- policy sets -------------------------------------------------------------------------- */

static pylon_policy_set *build(const char *policies_json)
{
    char err[256];
    json_t *j = js(policies_json);
    pylon_policy_set *s = pylon_policy_set_build(j, err, sizeof err);
    json_decref(j);
    cr_assert_not_null(s, "build failed: %s", err);
    return s;
}

static void build_refused(const char *policies_json, const char *want)
{
    char err[256];
    json_t *j = js(policies_json);
    pylon_policy_set *s = pylon_policy_set_build(j, err, sizeof err);
    json_decref(j);
    cr_assert_null(s, "expected %s to be refused", policies_json);
    cr_assert(strstr(err, want), "error \"%s\" lacks \"%s\"", err, want);
}

static bool chk(const pylon_policy_set *s, const char *entity, pylon_policy_op op,
                const pylon_identity *who, const char *data_json, const char **denied_by)
{
    json_t *d = data_json ? js(data_json) : NULL;
    pylon_policy_env env = {.auth = who, .data = d, .existing = d};
    bool r = pylon_policy_check(s, entity, op, &env, denied_by);
    json_decref(d);
    return r;
}

/* backend.md §12.1 */
#define TODO_POLICIES                                                                              \
    "[{\"name\":\"user_self\",\"entity\":\"User\",\"allowRead\":\"auth.userId != null\","          \
    "\"allowInsert\":\"false\",\"allowUpdate\":\"false\",\"allowDelete\":\"false\"},"              \
    "{\"name\":\"todo_owner\",\"entity\":\"Todo\",\"allowRead\":\"auth.userId != null\","          \
    "\"allowInsert\":\"auth.userId == data.userId\",\"allowUpdate\":\"auth.userId != null\","      \
    "\"allowDelete\":\"auth.userId != null\"}]"

Test(policy_set, todo_app_manifest)
{
    pylon_policy_set *s = build(TODO_POLICIES);
    const char *why = NULL;
    cr_assert(chk(s, "Todo", PYLON_OP_READ, &alice, NULL, &why));
    cr_assert(!chk(s, "Todo", PYLON_OP_READ, &anon, NULL, &why));
    cr_assert_str_eq(why, "todo_owner");
    cr_assert(chk(s, "Todo", PYLON_OP_INSERT, &alice, "{\"userId\":\"u_alice\"}", NULL));
    why = NULL;
    cr_assert(!chk(s, "Todo", PYLON_OP_INSERT, &bob, "{\"userId\":\"u_alice\"}", &why));
    cr_assert_str_eq(why, "todo_owner");
    cr_assert(chk(s, "Todo", PYLON_OP_UPDATE, &bob, NULL, NULL));
    cr_assert(chk(s, "Todo", PYLON_OP_DELETE, &bob, NULL, NULL));
    cr_assert(!chk(s, "User", PYLON_OP_INSERT, &alice, "{}", &why));
    cr_assert_str_eq(why, "user_self");
    cr_assert(!chk(s, "User", PYLON_OP_UPDATE, &alice, "{}", NULL));
    cr_assert(chk(s, "User", PYLON_OP_READ, &alice, NULL, NULL));
    /* admin bypasses everything, even "false" */
    cr_assert(chk(s, "User", PYLON_OP_INSERT, &admin, NULL, NULL));
    cr_assert(chk(s, "Todo", PYLON_OP_READ, &admin, NULL, NULL));
    /* an entity no policy names is open, to everyone (no default deny) */
    cr_assert(chk(s, "Note", PYLON_OP_DELETE, &anon, NULL, NULL));
    cr_assert(chk(s, "todo", PYLON_OP_READ, &anon, NULL, NULL)); /* names are case-sensitive */
    cr_assert(pylon_policy_entity_has_rules(s, "Todo", PYLON_OP_READ));
    cr_assert(!pylon_policy_entity_has_rules(s, "Note", PYLON_OP_READ));
    cr_assert(pylon_policy_entity_reads_row(s, "Todo", PYLON_OP_INSERT));
    cr_assert(!pylon_policy_entity_reads_row(s, "Todo", PYLON_OP_READ));
    cr_assert(!pylon_policy_entity_reads_row(s, "Note", PYLON_OP_READ));
    pylon_policy_set_free(s);
    assert_no_leaks();
}

Test(policy_set, no_policies_allows)
{
    pylon_policy_env env = {.auth = &anon};
    cr_assert(pylon_policy_check(NULL, "Todo", PYLON_OP_DELETE, &env, NULL));
    cr_assert(pylon_policy_check_action(NULL, "a", &env, NULL));
    pylon_policy_set *s = pylon_policy_set_build(NULL, NULL, 0);
    cr_assert_not_null(s);
    cr_assert(pylon_policy_check(s, "Todo", PYLON_OP_DELETE, &env, NULL));
    cr_assert(pylon_policy_check(s, "Todo", PYLON_OP_READ, NULL, NULL));
    cr_assert(!pylon_policy_entity_has_rules(s, "Todo", PYLON_OP_READ));
    pylon_policy_set_free(s);
    s = build("[]");
    cr_assert(pylon_policy_check(s, "Todo", PYLON_OP_INSERT, &env, NULL));
    cr_assert(pylon_policy_check_action(s, "a", &env, NULL));
    pylon_policy_set_free(s);
    pylon_policy_set_free(NULL);
    assert_no_leaks();
}

Test(policy_set, and_across_policies_in_manifest_order)
{
    pylon_policy_set *s = build(
        "[{\"name\":\"p1\",\"entity\":\"Doc\",\"allow\":\"auth.userId != null\"},"
        "{\"name\":\"other\",\"entity\":\"Aaa\",\"allow\":\"false\"},"
        "{\"name\":\"p2\",\"entity\":\"Doc\",\"allow\":\"data.public == true || auth.userId == "
        "data.ownerId\"},"
        "{\"name\":\"p3\",\"entity\":\"Doc\",\"allowRead\":\"data.deleted != true\"},"
        "{\"name\":\"zzz\",\"entity\":\"Zed\",\"allow\":\"false\"}]");
    const char *why = NULL;
    cr_assert(chk(s, "Doc", PYLON_OP_READ, &alice, "{\"public\":true}", &why));
    cr_assert_null(why, "no denier on allow");
    cr_assert(!chk(s, "Doc", PYLON_OP_READ, &anon, "{\"public\":true}", &why));
    cr_assert_str_eq(why, "p1"); /* first false in manifest order */
    cr_assert(!chk(s, "Doc", PYLON_OP_READ, &alice, "{\"ownerId\":\"u_bob\"}", &why));
    cr_assert_str_eq(why, "p2");
    cr_assert(!chk(s, "Doc", PYLON_OP_READ, &alice, "{\"public\":true,\"deleted\":true}", &why));
    cr_assert_str_eq(why, "p3");
    /* p3 has only allowRead: it does not take part in writes */
    cr_assert(chk(s, "Doc", PYLON_OP_UPDATE, &alice, "{\"public\":true,\"deleted\":true}", NULL));
    cr_assert(!chk(s, "Aaa", PYLON_OP_READ, &alice, NULL, &why));
    cr_assert_str_eq(why, "other");
    cr_assert(!chk(s, "Zed", PYLON_OP_READ, &alice, NULL, &why));
    cr_assert_str_eq(why, "zzz");
    cr_assert(chk(s, "Doc2", PYLON_OP_READ, &anon, NULL, NULL));
    cr_assert(chk(s, "Do", PYLON_OP_READ, &anon, NULL, NULL));
    pylon_policy_set_free(s);
    assert_no_leaks();
}

Test(policy_set, fallback_chains)
{
    /* each op picks its own field, else allowWrite (writes only), else allow */
    pylon_policy_set *s = build(
        "[{\"name\":\"all\",\"entity\":\"A\",\"allow\":\"data.k == \\\"allow\\\"\","
        "\"allowRead\":\"data.k == \\\"read\\\"\",\"allowInsert\":\"data.k == \\\"insert\\\"\","
        "\"allowUpdate\":\"data.k == \\\"update\\\"\",\"allowDelete\":\"data.k == "
        "\\\"delete\\\"\",\"allowWrite\":\"data.k == \\\"write\\\"\"},"
        "{\"name\":\"write\",\"entity\":\"B\",\"allow\":\"data.k == \\\"allow\\\"\","
        "\"allowWrite\":\"data.k == \\\"write\\\"\"},"
        "{\"name\":\"allow\",\"entity\":\"C\",\"allow\":\"data.k == \\\"allow\\\"\"},"
        "{\"name\":\"empty\",\"entity\":\"D\",\"allow\":\"data.k == \\\"allow\\\"\","
        "\"allowRead\":\"\",\"allowUpdate\":\"\",\"allowWrite\":\"\",\"allowDelete\":null},"
        "{\"name\":\"readonly\",\"entity\":\"E\",\"allowRead\":\"false\"}]");
    static const char *const ops[] = {"read", "insert", "update", "delete"};
    for (int op = PYLON_OP_READ; op <= PYLON_OP_DELETE; op++) {
        char row[64];
        snprintf(row, sizeof row, "{\"k\":\"%s\"}", ops[op]);
        cr_assert(chk(s, "A", (pylon_policy_op)op, &alice, row, NULL), "A %s", ops[op]);
        cr_assert(!chk(s, "A", (pylon_policy_op)op, &alice, "{\"k\":\"allow\"}", NULL));
        cr_assert(!chk(s, "A", (pylon_policy_op)op, &alice, "{\"k\":\"write\"}", NULL));
        /* B: read → allow; writes → allowWrite */
        const char *b = op == PYLON_OP_READ ? "{\"k\":\"allow\"}" : "{\"k\":\"write\"}";
        const char *bn = op == PYLON_OP_READ ? "{\"k\":\"write\"}" : "{\"k\":\"allow\"}";
        cr_assert(chk(s, "B", (pylon_policy_op)op, &alice, b, NULL), "B %s", ops[op]);
        cr_assert(!chk(s, "B", (pylon_policy_op)op, &alice, bn, NULL), "B %s", ops[op]);
        /* C and D (empty strings and null are absent): allow for everything */
        cr_assert(chk(s, "C", (pylon_policy_op)op, &alice, "{\"k\":\"allow\"}", NULL));
        cr_assert(!chk(s, "C", (pylon_policy_op)op, &alice, "{\"k\":\"x\"}", NULL));
        cr_assert(chk(s, "D", (pylon_policy_op)op, &alice, "{\"k\":\"allow\"}", NULL));
        cr_assert(!chk(s, "D", (pylon_policy_op)op, &alice, "{\"k\":\"x\"}", NULL));
        /* E: only reads have a rule; writes skip the policy, so they are allowed */
        cr_assert_eq(chk(s, "E", (pylon_policy_op)op, &alice, NULL, NULL), op != PYLON_OP_READ);
        cr_assert_eq(pylon_policy_entity_has_rules(s, "E", (pylon_policy_op)op),
                     op == PYLON_OP_READ);
    }
    pylon_policy_set_free(s);
    assert_no_leaks();
}

Test(policy_set, actions_use_allow_only)
{
    pylon_policy_set *s = build(
        "[{\"name\":\"pay\",\"action\":\"checkout\",\"allow\":\"input.amount > 0 && auth.userId "
        "!= null\",\"allowRead\":\"false\",\"allowWrite\":\"false\"},"
        "{\"name\":\"both\",\"entity\":\"Order\",\"action\":\"refund\",\"allow\":\"auth.hasRole("
        "\\\"support\\\")\"},"
        "{\"name\":\"nothing\",\"action\":\"ping\",\"allowRead\":\"false\"}]");
    json_t *in = js("{\"amount\":12}");
    json_t *zero = js("{\"amount\":0}");
    pylon_policy_env a = {.auth = &alice, .input = in}, z = {.auth = &alice, .input = zero},
                     n = {.auth = &anon, .input = in}, ad = {.auth = &admin, .input = zero};
    const char *why = NULL;
    cr_assert(pylon_policy_check_action(s, "checkout", &a, &why));
    cr_assert(!pylon_policy_check_action(s, "checkout", &z, &why));
    cr_assert_str_eq(why, "pay");
    cr_assert(!pylon_policy_check_action(s, "checkout", &n, NULL));
    cr_assert(pylon_policy_check_action(s, "checkout", &ad, NULL)); /* admin bypass */
    cr_assert(!pylon_policy_check_action(s, "refund", &a, &why));   /* registered in both */
    cr_assert_str_eq(why, "both");
    cr_assert(!pylon_policy_check(s, "Order", PYLON_OP_READ, &a, &why));
    cr_assert_str_eq(why, "both");
    cr_assert(pylon_policy_check_action(s, "ping", &n, NULL)); /* allowRead ignored */
    cr_assert(pylon_policy_check_action(s, "unknown", &n, NULL));
    /* an action policy does not gate an entity of the same name */
    cr_assert(pylon_policy_check(s, "checkout", PYLON_OP_READ, &n, NULL));
    json_decref(in);
    json_decref(zero);
    pylon_policy_set_free(s);
    assert_no_leaks();
}

Test(policy_set, update_sees_data_and_existing)
{
    pylon_policy_set *s =
        build("[{\"name\":\"owner\",\"entity\":\"Doc\",\"allowUpdate\":\"existing.ownerId == "
              "auth.userId && data.ownerId == auth.userId\"}]");
    json_t *before = js("{\"ownerId\":\"u_alice\",\"t\":\"a\"}");
    json_t *keep = js("{\"ownerId\":\"u_alice\",\"t\":\"b\"}");
    json_t *give = js("{\"ownerId\":\"u_bob\",\"t\":\"a\"}");
    pylon_policy_env ok = {.auth = &alice, .data = keep, .existing = before};
    pylon_policy_env away = {.auth = &alice, .data = give, .existing = before};
    pylon_policy_env steal = {.auth = &bob, .data = give, .existing = before};
    const char *why = NULL;
    cr_assert(pylon_policy_check(s, "Doc", PYLON_OP_UPDATE, &ok, &why));
    cr_assert(!pylon_policy_check(s, "Doc", PYLON_OP_UPDATE, &away, &why));
    cr_assert(!pylon_policy_check(s, "Doc", PYLON_OP_UPDATE, &steal, &why));
    cr_assert_str_eq(why, "owner");
    json_decref(before);
    json_decref(keep);
    json_decref(give);
    pylon_policy_set_free(s);
    assert_no_leaks();
}

Test(policy_set, build_errors)
{
    build_refused("[{\"name\":\"todos_owner\",\"entity\":\"Todo\",\"allowRead\":\"(auth.userId "
                  "== null\"}]",
                  "policies[0].allowRead (policy \"todos_owner\"): expected \")\", found the end "
                  "of the input at column 21");
    build_refused("[{\"name\":\"a\",\"entity\":\"T\",\"allow\":\"true\"},"
                  "{\"name\":\"b\",\"entity\":\"T\",\"allowWrite\":\"data.x & 1\"}]",
                  "policies[1].allowWrite (policy \"b\"): single \"&\"");
    build_refused("[{\"name\":\"a\",\"entity\":\"T\",\"allowUpdate\":\"auth.owns(\\\"x\\\")\"}]",
                  "policies[0].allowUpdate (policy \"a\"): unknown function \"auth.owns\"");
    build_refused("[{\"name\":\"a\",\"action\":\"x\",\"allow\":\"true trailing\"}]",
                  "policies[0].allow (policy \"a\"): expected the end of the expression, found "
                  "\"trailing\" at column 6");
    build_refused("[{\"name\":\"a\",\"entity\":\"T\",\"allowDelete\":\"   \"}]",
                  "policies[0].allowDelete (policy \"a\"): empty expression");
    /* wrong JSON types are refused, never ignored: "allowRead": false would allow everything */
    build_refused("[{\"name\":\"a\",\"entity\":\"T\",\"allowRead\":false}]",
                  "policies[0].allowRead (policy \"a\"): must be a string");
    build_refused("[{\"name\":\"a\",\"entity\":\"T\",\"allow\":1}]",
                  "policies[0].allow (policy \"a\"): must be a string");
    build_refused("[{\"name\":\"a\",\"entity\":\"T\",\"allow\":\"\\u0000x\"}]", "NUL byte");
    build_refused("[{\"name\":\"a\",\"entity\":7,\"allow\":\"true\"}]",
                  "policies[0].entity (policy \"a\"): must be a string");
    build_refused("[{\"name\":\"a\",\"entity\":\"T\",\"action\":[],\"allow\":\"true\"}]",
                  "policies[0].action (policy \"a\"): must be a string");
    build_refused("[{\"name\":\"a\",\"allow\":\"true\"}]",
                  "policies[0] (policy \"a\"): needs an \"entity\" or an \"action\"");
    build_refused("[{\"entity\":\"T\",\"allow\":\"true\"}]", "policies[0].name: must be a string");
    build_refused("[{\"name\":\"a\",\"entity\":\"T\"}, 3]", "policies[1]: must be an object");
    build_refused("{\"name\":\"a\"}", "policies: must be an array");
    assert_no_leaks();
}

Test(policy_set, many_policies_lookup)
{
    /* 200 entities, two policies each, interleaved: lookup finds exactly each entity's pair */
    json_t *arr = json_array();
    for (int i = 0; i < 200; i++) {
        char name[32], ent[32], expr[64];
        snprintf(ent, sizeof ent, "E%d", i);
        snprintf(name, sizeof name, "p%d_a", i);
        snprintf(expr, sizeof expr, "data.v >= %d", i);
        json_array_append_new(
            arr, json_pack("{s:s,s:s,s:s}", "name", name, "entity", ent, "allowRead", expr));
    }
    for (int i = 0; i < 200; i++) {
        char name[32], ent[32], expr[64];
        snprintf(ent, sizeof ent, "E%d", i);
        snprintf(name, sizeof name, "p%d_b", i);
        snprintf(expr, sizeof expr, "data.v <= %d", i + 1);
        json_array_append_new(
            arr, json_pack("{s:s,s:s,s:s}", "name", name, "entity", ent, "allowRead", expr));
    }
    char err[256];
    pylon_policy_set *s = pylon_policy_set_build(arr, err, sizeof err);
    cr_assert_not_null(s, "%s", err);
    for (int i = 0; i < 200; i++) {
        char ent[32], row[32], want[32];
        const char *why = NULL;
        snprintf(ent, sizeof ent, "E%d", i);
        snprintf(row, sizeof row, "{\"v\":%d}", i);
        cr_assert(chk(s, ent, PYLON_OP_READ, &alice, row, NULL), "%s", ent);
        snprintf(row, sizeof row, "{\"v\":%d}", i - 1);
        cr_assert(!chk(s, ent, PYLON_OP_READ, &alice, row, &why));
        snprintf(want, sizeof want, "p%d_a", i);
        cr_assert_str_eq(why, want);
        snprintf(row, sizeof row, "{\"v\":%d}", i + 2);
        cr_assert(!chk(s, ent, PYLON_OP_READ, &alice, row, &why));
        snprintf(want, sizeof want, "p%d_b", i);
        cr_assert_str_eq(why, want);
    }
    pylon_policy_set_free(s);
    json_decref(arr);
    assert_no_leaks();
}
