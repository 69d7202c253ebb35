"""`python -m flexsfc.bench.dataplane_micro`: the command docs/dataplane.md gives, kept working now that the
section lives in flexsfc.bench.sections.dataplane_micro."""

import sys

from flexsfc.bench.sections.dataplane_micro import main

if __name__ == "__main__":
    sys.exit(main())
