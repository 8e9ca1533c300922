"""ttRPC for the Kata agent protocol: the wire format (``wire``), a client that carries concurrent calls on
one connection (``client.TtrpcClient``) with the typed AgentService calls (``agent_calls``), the .proto
files (``protos/``) and their generated modules. Regenerate those with
``python -m osbuilder.ttrpc.regenerate``: this package imports nothing itself, so the regenerator runs even
when the committed modules do not import (and command discovery does not load protobuf)."""
