"""Is this file iptables-save / iptables-restore input at all? (``natlint check --only-iptables``)

The pre-commit hook matches ``*.rules`` files, a name that udev, polkit, auditd and Snort use
too. With ``--only-iptables`` the ``check`` command asks :func:`should_check` first and skips,
with a note on standard error, a file that has neither a well-known iptables file name nor one
line only an iptables file has: a table header (``*filter``), a chain declaration
(``:INPUT ACCEPT [0:0]``) or ``COMMIT``. None of these is valid in a udev rule (``KEY=="v"``),
an audit rule (``-a always,exit ...``), a polkit script (JavaScript) or a Snort rule
(``alert tcp ...``). A file with a well-known name (``rules.v4``, ``/etc/sysconfig/iptables``,
...) is always checked: if it is broken, natlint must say so, not skip it.
"""

from __future__ import annotations

import re
from pathlib import PurePath

__all__ = ["looks_like_iptables", "is_iptables_name", "should_check"]

# A line (at column 0, as iptables-restore reads it) that only iptables input has. Chain and
# table names are what iptables-restore accepts: no space, at most 28 characters.
_MARKER = re.compile(
    rb"^(?:\*[A-Za-z0-9_]{1,28}|:[^\s:]{1,28}[ \t]+(?:ACCEPT|DROP|-)(?:[ \t]+\[\d+:\d+\])?|COMMIT)[ \t]*\r?$",
    re.M,
)

# File names iptables tools and distributions save rules under (Debian iptables-persistent,
# RHEL iptables-services, Arch, Gentoo, Alpine), and a copy named after the family.
_NAMES = re.compile(r"^(?:rules\.v[46]|rules6?-save|ip6?tables(?:\.rules|\.save|-save)?|[^/]+\.ip6?tables)$")


def looks_like_iptables(data: bytes) -> bool:
    """Whether ``data`` has a ``*table``, ``:CHAIN POLICY`` or ``COMMIT`` line.

    >>> looks_like_iptables(b"*filter\\n-A INPUT -j ACCEPT\\nCOMMIT\\n")
    True
    >>> looks_like_iptables(b'SUBSYSTEM=="usb", ATTR{idVendor}=="1d6b", MODE="0664"\\n')
    False
    >>> looks_like_iptables(b"-a always,exit -F arch=b64 -S execve -k exec\\n")
    False
    """
    return _MARKER.search(data) is not None


def is_iptables_name(path: str) -> bool:
    """Whether a file name is one iptables rules are saved under (``rules.v4``, ``iptables``...)."""
    return _NAMES.match(PurePath(path).name) is not None


def should_check(path: str, data: bytes) -> bool:
    """What ``--only-iptables`` checks: a well-known name, or content that looks like iptables."""
    return is_iptables_name(path) or looks_like_iptables(data)
