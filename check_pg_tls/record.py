"""Typed records that cost a check's start-up what collections.namedtuple costs.

Every check creates some forty record classes before it connects. As a
``typing.NamedTuple`` each costs about 120 µs, most of it typing checking
every field's annotation, which under ``from __future__ import annotations``
is a string it compiles into a ForwardRef that nothing here ever evaluates;
``collections.namedtuple`` makes the same class in about 40 µs.

``class Target(Record):`` is therefore ``typing.NamedTuple`` to the type
checker, which checks the records' fields and construction as it always did,
and at run time a base that makes the class with ``collections.namedtuple``
from the class body: the annotated names are the fields, in order, their
values the defaults, and the rest of the body (docstring, methods,
properties) is set on the class, as ``typing.NamedTuple`` does. The class
that comes out is a plain namedtuple (``_fields``, ``_replace``, equality,
hashing, pickling, subclassing as before); its ``__annotations__`` stay the
strings written.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

__all__ = ["Record"]

if TYPE_CHECKING:
    from typing import NamedTuple as Record
else:
    # What of the body is not set on the class as it is, and what the body
    # must not replace (namedtuple's own machinery), as typing has them.
    _OWN = frozenset({"__module__", "__qualname__", "__annotations__"})
    _NAMEDTUPLE = frozenset(
        {
            "__new__",
            "__init__",
            "__slots__",
            "__getnewargs__",
            "_fields",
            "_field_defaults",
            "_make",
            "_replace",
            "_asdict",
            "_source",
        }
    )

    class _RecordType(type):
        def __new__(cls, name: str, bases: tuple[type, ...], body: dict[str, Any]) -> type:
            if not bases:  # Record itself
                return super().__new__(cls, name, bases, body)
            if bases != (Record,):
                raise TypeError(f"{name}: a record derives from Record only")
            fields = body.get("__annotations__", {})
            defaults = [field for field in fields if field in body]
            # namedtuple gives its defaults to the last fields: a field
            # without one after a field with one would take another's.
            if defaults != list(fields)[len(fields) - len(defaults) :]:
                raise TypeError(f"{name}: a field without a default follows one with one")
            record = collections.namedtuple(
                name,
                fields,
                defaults=[body[field] for field in defaults],
                module=body["__module__"],
            )
            record.__qualname__ = body["__qualname__"]
            record.__annotations__ = fields
            for key, value in body.items():
                if key in _NAMEDTUPLE:
                    raise AttributeError(f"{name}: cannot overwrite namedtuple's {key}")
                if key not in _OWN and key not in fields:
                    setattr(record, key, value)
            return record

    class Record(metaclass=_RecordType):
        """Base of a typed record (see the module's docstring)."""
