"""Both engines' worlds implement the World protocol the trainer is written against
(imnet64.cluster.world): every member, with the protocol's parameters, so that a collective
added to one engine and not the other fails here, not in a two-rank run on a cluster."""

from __future__ import annotations

import inspect

from imnet64.cluster.horovod_world import HorovodWorld
from imnet64.cluster.tf_world import TFWorld
from imnet64.cluster.world import World

import pytest


def _members(cls: type) -> dict[str, object]:
    """The protocol's own members: its fields and its methods and properties."""
    names = set(cls.__annotations__) | {n for n in vars(cls) if not n.startswith("_")}
    return {n: vars(cls).get(n) for n in sorted(names)}


@pytest.mark.parametrize("world_class", [HorovodWorld, TFWorld])
def test_each_engine_world_has_every_member_of_the_protocol(world_class):
    fields = set(getattr(world_class, "__dataclass_fields__", {}))
    for name, member in _members(World).items():
        if member is None:  # a field
            assert name in fields, f"{world_class.__name__} lacks the field {name}"
            continue
        theirs = inspect.getattr_static(world_class, name, None)
        assert theirs is not None, f"{world_class.__name__} lacks {name}"
        if isinstance(member, property):
            assert isinstance(theirs, property), f"{world_class.__name__}.{name} is no property"
            continue
        ours, got = inspect.signature(member), inspect.signature(theirs)
        assert list(got.parameters) == list(ours.parameters), \
            f"{world_class.__name__}.{name}{got} is not World.{name}{ours}"
