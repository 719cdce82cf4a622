"""`make bench`: run every benchmark and print its table."""

from . import job_latency

BENCHMARKS = [job_latency.run]

for bench in BENCHMARKS:
    bench()
