"""Stream layer: the faust application of a worker. It owns the topics, the RocksDB learned-state table
and its agent, the batch ingest of access records (parse, resolve, edges and dead letters), partitioning,
the rewind of edges dropped in a rebalance, the Prometheus poller (the other source of edges, for the
leader in prometheus mode), and the Kafka client error counts; the decisions are the
domain core's. It reads the cluster only through ``domain.cluster.ClusterView`` and is independent of
the Kubernetes layer.
"""
