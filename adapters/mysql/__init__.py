"""The primer database: which source is primary, its replicas, the collations of compared
columns, and the primer query itself."""
