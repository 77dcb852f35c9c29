"""The records' base: at run time a collections.namedtuple made from the class
body, as typing.NamedTuple would make it."""

from __future__ import annotations

import pickle

import pytest

from check_pg_tls.model import Target
from check_pg_tls.record import Record
from check_pg_tls.targets import Unparsed


def test_a_record_is_the_namedtuple_its_body_describes() -> None:
    target = Target("db.test", servername="name.test")
    assert Target._fields == ("host", "port", "servername", "family", "sni", "settings", "display")
    assert target == ("db.test", 5432, "name.test", 0, True, (), None)
    assert target._replace(port=6432).port == 6432
    assert pickle.loads(pickle.dumps(target)) == target
    assert hash(target) == hash(Target("db.test", servername="name.test"))
    # The body's docstring, methods and properties are the class's.
    assert Target.__doc__ == "Where to connect and which name the certificate must carry."
    assert target.checked_name == "name.test"
    assert str(target) == "db.test(name.test):5432"
    assert Target.__qualname__ == "Target"
    assert Target.__module__ == "check_pg_tls.model.records"
    assert isinstance(Unparsed("x"), Target)


def test_a_field_without_default_after_one_with_one_is_refused() -> None:
    with pytest.raises(TypeError, match="follows"):

        class Wrong(Record):
            first: int = 0
            second: int


def test_namedtuples_own_attributes_cannot_be_replaced() -> None:
    with pytest.raises(AttributeError, match="_replace"):

        class Wrong(Record):
            first: int

            def _replace(self) -> None:
                pass
