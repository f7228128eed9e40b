/* plugins.c — see plugins.h. The handles are never closed: a shard may run the code until
 * the process exits. */
#include "shards/plugins.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

typedef const pylon_sim_vtable *(*plugin_entry)(void);

static bool load_one(pylon_shards *r, const char *path, char *err, size_t errlen)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(err, errlen, "PYLON_SHARD_PLUGINS: cannot load %s: %s", path, dlerror());
        return false;
    }
    plugin_entry entry = (plugin_entry)dlsym(h, "pylon_sim_plugin");
    if (!entry) {
        snprintf(err, errlen,
                 "PYLON_SHARD_PLUGINS: %s does not export pylon_sim_plugin (define `const "
                 "pylon_sim_vtable *pylon_sim_plugin(void)`, see pylon/sim.h)",
                 path);
        dlclose(h);
        return false;
    }
    const pylon_sim_vtable *v = entry();
    if (!v || v->abi_version != PYLON_SIM_ABI_VERSION) {
        snprintf(err, errlen,
                 "PYLON_SHARD_PLUGINS: %s was built for SimState ABI version %u; this server "
                 "speaks version %u: rebuild it against this server's pylon/sim.h",
                 path, v ? v->abi_version : 0u, PYLON_SIM_ABI_VERSION);
        dlclose(h);
        return false;
    }
    if (!v->kind || !*v->kind || !v->init || !v->apply_input || !v->tick || !v->snapshot_for ||
        !v->destroy) {
        snprintf(err, errlen,
                 "PYLON_SHARD_PLUGINS: %s leaves kind, init, apply_input, tick, snapshot_for or "
                 "destroy unset: all are required",
                 path);
        dlclose(h);
        return false;
    }
    if (!pylon_shards_add_kind(r, v)) {
        snprintf(err, errlen,
                 "PYLON_SHARD_PLUGINS: %s: a simulation of kind \"%s\" is already loaded: give "
                 "each plugin its own kind",
                 path, v->kind);
        dlclose(h);
        return false;
    }
    return true;
}

bool pylon_plugins_load(pylon_shards *r, const char *list, char *err, size_t errlen)
{
    if (!list) return true;
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *p = strtok_r(buf, ":,", &save); p; p = strtok_r(NULL, ":,", &save)) {
        while (*p == ' ')
            p++;
        if (*p && !load_one(r, p, err, errlen)) return false;
    }
    return true;
}
