/* The ttRPC services the agent implements (Kata 4.1.0 protocol subset):
 *   grpc.Health/Check, grpc.Health/Version,
 *   grpc.AgentService/GetGuestDetails, grpc.AgentService/DestroySandbox. */
#ifndef OSB_SERVICE_H
#define OSB_SERVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "pb.h"
#include "ttrpc.h"

#define API_VERSION "0.0.1"

struct agent_info {
	const char *version; /* AGENT_VERSION */
	bool init_daemon;    /* running as PID 1 */
};
extern struct agent_info g_agent;

struct call_result {
	int32_t code;     /* google.rpc.Code */
	char message[256];
	bool destroy;     /* DestroySandbox: shut down once the reply is out */
};

/* Runs one request. On CODE_OK the response message bytes are in out. */
void service_call(const struct ttrpc_request *req, struct pb_writer *out, struct call_result *res);

#endif
