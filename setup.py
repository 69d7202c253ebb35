"""Build hooks (setuptools): compile what flexsfc runs but Python cannot be, into the wheel.

Everything else is in pyproject.toml. At wheel build time, after build_py has copied the package into
the build tree, this compiles there, fresh from the sources being packaged (never a developer's
local build):

- the eBPF object ``dataplane/bpf/xconnect.bpf.o`` (clang; architecture-independent) and the
  native helpers ``dataplane/native/*.so`` (ctypes), each marked ``.packaged`` with the digest of
  its sources: ``flexsfc.dataplane.build`` then uses them without a compiler at run time;
- the node shim ``cni/shim/flexsfc-cni`` (static; musl-gcc, else gcc), which the agent image installs
  on nodes.

The helpers and the shim are machine code, so the wheel is tagged for this platform (py3-none-<plat>;
nothing depends on the Python ABI). Editable installs compile nothing (the source tree builds on
demand, as before). ``FLEXSFC_SKIP_NATIVE_BUILD=1`` builds a wheel without them (it then needs clang
at run time, like a source checkout).
"""

import importlib.util
import os
from pathlib import Path
from types import ModuleType

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

SKIP_VARIABLE = "FLEXSFC_SKIP_NATIVE_BUILD"


def _load(path: Path, name: str) -> ModuleType:
    """A build module of the build tree by file (stdlib only), so its outputs land in that tree."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithNative(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False) or os.environ.get(SKIP_VARIABLE) == "1":
            return
        package = Path(self.build_lib).resolve() / "flexsfc"
        dataplane = _load(package / "dataplane" / "build.py", "_flexsfc_build_dataplane")
        shim = _load(package / "cni" / "shim" / "build.py", "_flexsfc_build_shim")
        try:
            outputs = [*dataplane.build_for_package(), shim.ensure_built(force=True)]
        except (dataplane.BuildError, shim.BuildError) as exc:
            raise SystemExit(
                f"flexsfc: cannot compile the eBPF object, native helpers or node shim: {exc}\n"
                f"(install clang, llvm, libbpf-dev, gcc and musl-tools, or set {SKIP_VARIABLE}=1 for a "
                "wheel that compiles at run time)"
            ) from None
        for output in outputs:
            self.announce(f"flexsfc: built {output.relative_to(package.parent)}", level=2)


def _native() -> bool:
    return os.environ.get(SKIP_VARIABLE) != "1"


class NativeDistribution(Distribution):
    """Machine code inside (not as extension modules): installed to platlib, a platform wheel."""

    def has_ext_modules(self) -> bool:
        return _native()


class PlatformWheel(bdist_wheel):
    def get_tag(self) -> tuple[str, str, str]:
        python, abi, plat = super().get_tag()
        return ("py3", "none", plat) if _native() else (python, abi, plat)


setup(distclass=NativeDistribution, cmdclass={"build_py": BuildPyWithNative, "bdist_wheel": PlatformWheel})
