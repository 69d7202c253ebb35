"""Import submodules of a package without running the package's ``__init__``.

A CNI plugin is a fresh process per call and its start-up is part of every pod's creation. Some
packages import all their components in ``__init__`` (``pyroute2``: conntrack, ndb, ipdb...;
``flexsfc.model``: manifest loading with PyYAML, planning), which costs ~100 ms each here while the
few submodules flexsfc-cni needs cost a few milliseconds. Registering the package as a bare module
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
