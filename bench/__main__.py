"""`make bench`: run every benchmark and print its table."""

from . import billing_report, execution, job_latency, limiter, submit_path

BENCHMARKS = [limiter.run, submit_path.run, job_latency.run, execution.run, billing_report.run]

for bench in BENCHMARKS:
    bench()
