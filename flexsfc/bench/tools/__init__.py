"""The programs the benchmarks run and read: load generators and latency probes inside the pods
(iperf3, sockperf, the UDP ping-pong, the many-flow UDP sender), perf sampling, eBPF run statistics."""
