"""`make bench`: every benchmark with its defaults, one after the other.

Run one alone, with its own options: `python -m bench.bench_pipeline --help`.
"""

import sys

from bench import (
    bench_client,
    bench_cluster,
    bench_http,
    bench_leases,
    bench_listener,
    bench_partitions,
    bench_pipeline,
    bench_replicas,
    bench_soak,
    bench_warming,
)

for bench in (
    bench_pipeline,
    bench_listener,
    bench_warming,
    bench_replicas,
    bench_leases,
    bench_partitions,
    bench_cluster,
    bench_soak,
    bench_client,
    bench_http,
):
    print(f"\n===== {bench.__name__} =====", flush=True)
    sys.argv = [bench.__name__]
    bench.main()
