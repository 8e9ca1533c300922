"""Generated protobuf modules (see osbuilder/ttrpc/regenerate.py)."""
