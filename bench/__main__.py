"""`make bench`: run every benchmark and print its table; `python -m bench NAME…` runs only
the named ones (limiter, submit_path, pipeline, api_workers, attack, job_latency, execution,
integrator, billing_report, quality, usage, scale_out, lists)."""

import sys

from . import (
    api_workers,
    attack,
    billing_report,
    execution,
    integrator,
    job_latency,
    limiter,
    lists,
    pipeline,
    quality,
    scale_out,
    submit_path,
    usage,
)

BENCHMARKS = {m.__name__.rsplit(".", 1)[1]: m.run
              for m in (limiter, submit_path, pipeline, api_workers, attack, job_latency,
                        execution, integrator, billing_report, quality, usage, scale_out,
                        lists)}

for name in sys.argv[1:] or BENCHMARKS:
    BENCHMARKS[name]()
