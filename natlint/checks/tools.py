"""Chains that tools write (and rewrite at will): findings inside them are for information.

A person does not edit Docker's, kube-proxy's or ufw's chains: a shadowed rule or an unused
chain there is how the tool ships, and the fix is in the tool's configuration, not in the
dump. DOCKER-USER is the user's own chain.
"""

from __future__ import annotations

__all__ = ["GENERATED", "generated_by"]

GENERATED: tuple[tuple[str, str], ...] = (
    ("DOCKER", "Docker"), ("KUBE-", "kube-proxy"), ("FLANNEL-", "flannel"), ("cali-", "Calico"),
    ("CNI-", "a CNI plugin"), ("CILIUM_", "Cilium"), ("WEAVE", "Weave Net"),
    ("ufw6-", "ufw"), ("ufw-", "ufw"), ("f2b-", "fail2ban"), ("LIBVIRT_", "libvirt"),
)


def generated_by(chain: str) -> str | None:
    """The tool that writes this chain, for chains no person edits (DOCKER-USER is the user's)."""
    if chain == "DOCKER-USER":
        return None
    for prefix, tool in GENERATED:
        if chain.startswith(prefix):
            return tool
    return None
