/*
 * backup.h — `pylon backup DIR` and `pylon restore DIR [--yes]`.
 *
 * Owns: the bundle format. DIR/VERSION, DIR/pylon.db, DIR/sessions.db, DIR/jobs.db (each a
 * complete SQLite database made with SQLite's online backup API, so it is consistent even
 * while the server writes: a row is in it or not, never half), DIR/manifest.json and
 * DIR/uploads/. Sources that do not exist are skipped and said so.
 */
#ifndef PYLON_TOOLS_BACKUP_H
#define PYLON_TOOLS_BACKUP_H

#include "config.h"

#include <stdbool.h>

int pylon_backup_run(const pylon_config *cfg, const char *dir, bool json);
int pylon_restore_run(const pylon_config *cfg, const char *dir, bool yes, bool json);

#endif
