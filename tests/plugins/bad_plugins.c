/*
 * bad_plugins.c — shard plugins the server must refuse at start (tests/e2e/shard-plugins):
 * built twice, as pylon_wrong_abi (PYLON_BAD_PLUGIN_WRONG_ABI: a vtable from a future ABI
 * version) and as pylon_incomplete (PYLON_BAD_PLUGIN_INCOMPLETE: the right version, but
 * required callbacks left unset). Neither is ever run.
 */
#include "pylon/sim.h"

#include <stddef.h>

static void *init(const pylon_sim_ctx *ctx, char *err, size_t errlen)
{
    (void)ctx, (void)err, (void)errlen;
    return NULL;
}

#ifdef PYLON_BAD_PLUGIN_WRONG_ABI
static const pylon_sim_vtable VTABLE = {
    .abi_version = PYLON_SIM_ABI_VERSION + 1, .kind = "wrong_abi", .init = init};
#else
static const pylon_sim_vtable VTABLE = {
    .abi_version = PYLON_SIM_ABI_VERSION, .kind = "incomplete", .init = init};
#endif

const pylon_sim_vtable *pylon_sim_plugin(void)
{
    return &VTABLE;
}
