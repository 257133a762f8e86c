"""Packet sets (BDDs) and the compilation of rules into them."""

from natlint.packets.compile import Compiled, HostLike, compile_interfaces, compile_rule
from natlint.packets.space import (
    BACKENDS,
    CT_STATES,
    DEFAULT_ORDER,
    FIELDS,
    ORDER_SEPARATE,
    BudgetExceeded,
    Packet,
    PacketSet,
    PacketSpace,
)

__all__ = [
    "BACKENDS",
    "CT_STATES",
    "DEFAULT_ORDER",
    "FIELDS",
    "ORDER_SEPARATE",
    "BudgetExceeded",
    "Compiled",
    "HostLike",
    "Packet",
    "PacketSet",
    "PacketSpace",
    "compile_interfaces",
    "compile_rule",
]
