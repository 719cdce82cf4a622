"""Local HTTP fakes of the outside services, for tests, benchmarks and `make run`."""
