"""Merged into the registered section flexsfc.bench.sections.cni_latency (shim and Python plugin,
interleaved); this name stays so that `python -m flexsfc.bench.sections.cni_shim_latency` still runs."""

import sys

from flexsfc.bench.sections.cni_latency import main, measure

__all__ = ["main", "measure"]

if __name__ == "__main__":
    sys.exit(main())
