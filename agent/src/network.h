/* The network calls the runtime makes before CreateSandbox (rtnetlink, no tools): interfaces that
 * exist are configured and brought up; one that does not is a NOT_FOUND naming it. */
#ifndef OSB_NETWORK_H
#define OSB_NETWORK_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

/* Finds the interface by hwAddr (else device, else name), renames it to name, sets the MTU and the
 * addresses (replacing equal ones) and brings it up; answers with the Interface. */
void network_update_interface(const struct call_ref *ref, const uint8_t *payload, size_t len);
/* Adds (or replaces) each route of the main table, link routes before gateway routes; answers with
 * the Routes. */
void network_update_routes(const struct call_ref *ref, const uint8_t *payload, size_t len);
/* Adds (or replaces) each neighbour entry (NUD_PERMANENT unless a state is given). */
void network_add_arp_neighbors(const struct call_ref *ref, const uint8_t *payload, size_t len);

#endif
