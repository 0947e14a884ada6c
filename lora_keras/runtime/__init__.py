"""Where and how training runs: devices and distribution strategies (`devices`), a
TensorFlow graph-memory workaround (`graph_memory`), the throughput benchmark
(`benchmark`), and state files written whole (`atomic_files`)."""
