/* The ttRPC methods the agent implements (Kata 4.1.0 protocol subset): grpc.Health/Check, Version;
 * grpc.AgentService: GetGuestDetails, the network calls, the sandbox, container and process lifecycle
 * and the stdio streams. Dispatches each request to its handler. */
#ifndef OSB_SERVICE_H
#define OSB_SERVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "pb.h"
#include "server.h"
#include "ttrpc.h"

#define API_VERSION "0.0.1"

struct agent_info {
	const char *version; /* AGENT_VERSION */
	bool init_daemon;    /* running as PID 1 */
};
extern struct agent_info g_agent;

/* Runs one request; the handler answers through server_reply, now or later. Unknown methods get
 * UNIMPLEMENTED. */
void service_call(const struct call_ref *ref, const struct ttrpc_request *req);

#endif
