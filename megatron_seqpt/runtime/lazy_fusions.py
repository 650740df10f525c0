"""megatron-core's fused functions compiled at their first call, not when imported.

megatron-core decorates its fusions (bias-GeLU, bias-dropout-add, GeGLU, ...) with
``megatron.core.jit.jit_fuser``, which is ``torch.compile``: decorating imports torch's
compiler stack (dynamo, inductor), about 1.8 s of every process's start on a 2-core machine
(3.0-3.3 s for ``import megatron.core`` against 1.3-1.5 s), although a CPU run, a conversion,
a data tool or a rank whose layers call no fusion needs none of it. As ``megatron.core.jit``
is imported, its ``jit_fuser`` is wrapped so that the decorator runs on the function at its
first call: the same compiled function where a fusion is called, nothing imported where none
is. ``torch.compile`` itself is untouched.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Callable

JIT_MODULE = "megatron.core.jit"


def decorate_at_first_call(decorator: Callable[[Callable], Callable]) -> Callable:
    """``decorator`` deferred: applied to a function when the function is first called."""

    def deferred(function: Callable) -> Callable:
        decorated = None

        @functools.wraps(function)
        def call(*args, **kwargs):
            nonlocal decorated
            if decorated is None:
                decorated = decorator(function)
            return decorated(*args, **kwargs)

        return call

    return deferred


def _defer_jit_fuser(module: ModuleType) -> None:
    fuser = module.jit_fuser
    if fuser is not module.noop_decorator and not getattr(fuser, "deferred", False):
        module.jit_fuser = decorate_at_first_call(fuser)
        module.jit_fuser.deferred = True


class _DeferringLoader(importlib.abc.Loader):
    """Runs ``megatron.core.jit`` with its own loader, then defers its ``jit_fuser``."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        _defer_jit_fuser(module)


class _JitFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != JIT_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _DeferringLoader(spec.loader)
        return spec


def install() -> None:
    """Defer megatron-core's fusion compiling in this process (before or after its import:
    after, only modules imported from then on are affected)."""
    if JIT_MODULE in sys.modules:
        _defer_jit_fuser(sys.modules[JIT_MODULE])
    elif not any(isinstance(finder, _JitFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _JitFinder())
