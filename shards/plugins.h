/*
 * plugins.h — simulations from shared objects (PYLON_SHARD_PLUGINS).
 *
 * Owns: loading the plugin list (paths separated by ':' or ','), checking each one, and
 * keeping them loaded for the life of the process. A plugin exports
 * `const pylon_sim_vtable *pylon_sim_plugin(void)` (pylon/sim.h). A path that does not load, a
 * missing symbol, another ABI version, a missing required function or a kind that already
 * exists refuses the start with one line naming the plugin and the fix.
 */
#ifndef PYLON_SHARDS_PLUGINS_H
#define PYLON_SHARDS_PLUGINS_H

#include "shards/shard.h"

#include <stddef.h>

/* Loads every plugin of `list` into the registry. False with a one-line reason in err. */
bool pylon_plugins_load(pylon_shards *r, const char *list, char *err, size_t errlen);

#endif
