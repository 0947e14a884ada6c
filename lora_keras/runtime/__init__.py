"""Where and how training runs: devices and distribution strategies (`devices`), a
TensorFlow graph-memory workaround (`graph_memory`), and the throughput benchmark
(`benchmark`)."""
