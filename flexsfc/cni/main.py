"""Entry point of the ``flexsfc-cni`` executable: CNI_* environment + configuration on stdin in,
result or the spec's error JSON on stdout out (exit status 1 on error).

Only the standard library and flexsfc's small model modules are imported before the verb is known;
pyroute2 and the kubernetes client load on demand (start-up time is part of every pod's creation).
"""

import os
import sys

from flexsfc.cni.lightimport import register_bare_package

# Before any pyroute2 import: load only the submodules we use (see lightimport).
register_bare_package("pyroute2")

from flexsfc.cni.dispatch import handle  # noqa: E402


def main() -> None:
    # The same call the node agent serves (flexsfc.cni.dispatch), with this process's environment;
    # an internal error's traceback goes to stderr through logging's last-resort handler.
    status, output = handle(dict(os.environ), sys.stdin.buffer.read())
    if output:
        sys.stdout.buffer.write(output)
        sys.stdout.flush()
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
