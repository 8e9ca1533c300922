"""Release evidence: what is in each asset (SBOM), where every byte came from (provenance), the
values an attestation service checks (reference values, `osbuilder verify`), size and boot-time
budgets, and a report people can read. One module per job; the build steps call them through
small, marked hooks."""
