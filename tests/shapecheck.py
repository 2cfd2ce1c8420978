"""A jaxtyping type checker that checks array shapes and dtypes, and nothing else.

`install_import_hook("aef_lit", "shapecheck.shapes_only")` (tests/conftest.py) decorates
every function of the package with `jaxtyped(typechecker=shapes_only)`: jaxtyping binds
the dimension names of one call ("B T D h w") and this checker tests each argument (and
the return value) annotated with a jaxtyping array type, or such a type or None. Other
annotations are documentation here: public functions accept lists, numpy arrays or
duck-typed objects and convert or refuse them with their own messages (chapter 14's
guards), which a full type checker would preempt.
"""
from __future__ import annotations

import functools
import inspect
import types
import typing

from jaxtyping import AbstractArray


def _is_array(h) -> bool:
    return isinstance(h, type) and issubclass(h, AbstractArray)


def _array_hint(h):
    """The hint if it is an array type, or a union of array types and None; else None."""
    if _is_array(h):
        return h
    if typing.get_origin(h) in (typing.Union, types.UnionType):
        args = typing.get_args(h)
        if any(_is_array(a) for a in args) and all(_is_array(a) or a is type(None) for a in args):
            return h
    return None


def _describe(value) -> str:
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    return f"{type(value).__name__} of shape {tuple(shape)} and dtype {dtype}" if shape is not None else repr(value)


def shapes_only(fn):
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
        sig = inspect.signature(fn)
    except Exception:  # an annotation that does not evaluate here: leave the function alone
        return fn
    checks = {k: h for k, v in hints.items() if (h := _array_hint(v)) is not None}
    if not checks:
        return fn
    ret = checks.pop("return", None)

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        for name, hint in checks.items():
            if name in bound.arguments and not isinstance(bound.arguments[name], hint):
                raise TypeError(f"{fn.__qualname__}: argument {name!r} is a {_describe(bound.arguments[name])}, "
                                f"the signature says {hint}")
        out = fn(*args, **kwargs)
        if ret is not None and not isinstance(out, ret):
            raise TypeError(f"{fn.__qualname__}: returned a {_describe(out)}, the signature says {ret}")
        return out

    return checked
