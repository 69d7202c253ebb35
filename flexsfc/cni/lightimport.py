"""Import submodules of a package without running the package's ``__init__``.

A CNI plugin is a fresh process per call and its start-up is part of every pod's creation.
``pyroute2`` imports all its components in ``__init__`` (conntrack, ndb, ipdb...), which costs
~100 ms here while the few submodules flexsfc-cni needs cost a few milliseconds. (``flexsfc.model``
needs no such help: its ``__init__`` loads its names lazily.) Registering the package as a bare module
with the right ``__path__`` lets ``import package.submodule`` load just that submodule.

Only the ``flexsfc-cni`` executable does this (before anything else is imported); library users of
:mod:`flexsfc.cni.state` get the packages as usual.
"""

import importlib.util
import sys
import types


def register_bare_package(name: str) -> None:
    """Make ``name`` importable as a package whose ``__init__`` never runs (no-op if imported)."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an installed package")
    package = types.ModuleType(name)
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules[name] = package
