"""`python -m flexsfc.bench.cni_latency`: the command docs/cni.md gives, kept working now that the
section lives in flexsfc.bench.sections.cni_latency."""

import sys

from flexsfc.bench.sections.cni_latency import main

if __name__ == "__main__":
    sys.exit(main())
