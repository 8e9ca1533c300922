/* The sandbox: CreateSandbox (hostname, shared storages) and DestroySandbox (every container taken
 * down, storages unmounted, then power-off / exit). */
#ifndef OSB_SANDBOX_H
#define OSB_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server.h"

void sandbox_init(void);
bool sandbox_created(void);
void sandbox_create(const struct call_ref *ref, const uint8_t *payload, size_t len);
void sandbox_destroy(const struct call_ref *ref, const uint8_t *payload, size_t len);

#endif
