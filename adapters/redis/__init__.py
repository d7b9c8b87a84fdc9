"""The cache Redis (and a Redis broker's connection): connecting, deleting with leases, the
`primer_cache` functions, and the state both sides keep there (completion, liveness, stats)."""
