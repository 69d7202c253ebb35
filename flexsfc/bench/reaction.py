"""`python -m flexsfc.bench.reaction`: the command docs/local-runtime.md gives, kept working now that the
section lives in flexsfc.bench.sections.reaction."""

import sys

from flexsfc.bench.sections.reaction import main

if __name__ == "__main__":
    sys.exit(main())
