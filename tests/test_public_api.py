"""The public API is documented: every function and class the public modules
export has a docstring of its own (not the one dataclasses generate), and so
has every public method and property of those classes.

tests/test_typing.py checks that the same names are typed.
"""

from __future__ import annotations

import enum
import importlib
import inspect

import pytest

#: The modules a user imports names from.
PUBLIC_MODULES = ("mainline_dht", "mainline_dht.aio", "mainline_dht.blocking")


def _exported() -> list[tuple[str, object]]:
    names = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names += [(f"{module_name}.{name}", getattr(module, name)) for name in module.__all__]
    return names


def _own_doc(obj: object) -> bool:
    doc = inspect.getdoc(obj) or ""
    name = getattr(obj, "__name__", "")
    return bool(doc.strip()) and not (inspect.isclass(obj) and doc.startswith(f"{name}("))


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_modules_say_what_they_hold(module_name: str) -> None:
    assert _own_doc(importlib.import_module(module_name))


def test_every_exported_function_and_class_is_documented() -> None:
    undocumented = [name for name, obj in _exported()
                    if (inspect.isclass(obj) or inspect.isfunction(obj)) and not _own_doc(obj)]
    assert undocumented == []


def test_every_public_method_and_property_is_documented() -> None:
    undocumented = []
    for name, cls in _exported():
        if not inspect.isclass(cls) or issubclass(cls, enum.Enum) or not cls.__module__.startswith("mainline_dht"):
            continue
        for attr, value in vars(cls).items():
            if attr.startswith("_"):
                continue
            target = value.fget if isinstance(value, property) else value
            if isinstance(target, (staticmethod, classmethod)):
                target = target.__func__
            if inspect.isfunction(target) and not (target.__doc__ or "").strip():
                undocumented.append(f"{name}.{attr}")
    assert undocumented == []
