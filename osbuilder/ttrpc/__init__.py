"""ttRPC client for the Kata agent protocol (``client``), plus the .proto files (``protos/``) and their
generated modules. Regenerate those with ``python -m osbuilder.ttrpc.regenerate``: this package imports
nothing itself, so the regenerator runs even when the committed modules do not import."""
