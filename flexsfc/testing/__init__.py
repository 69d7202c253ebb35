"""Support shared by the test suite and the benchmarks, kept out of the production packages:
crafted frames (frames), the program run on them (progtest), hand-assembled reference programs
(bpfasm), private namespaces, veths and data planes (netlab). Of flexsfc's own packages only the
benchmarks import it (an import-linter contract keeps it so)."""
