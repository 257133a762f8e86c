"""Text rendering of ``natlint trace`` outcomes."""

from __future__ import annotations

from collections.abc import Sequence

from natlint.netfilter.engine import Outcome
from natlint.report.text import clean

__all__ = ["format_trace"]


def _where(outcome: Outcome) -> str:
    if outcome.delivered is None:
        step = outcome.decided_by
        by = ""
        if step is not None and step.line is not None and step.rule is not None:
            by = f" by line {step.line}"
        elif step is not None and step.table == "-":
            by = f": {step.action}"
        elif step is not None:
            by = f" by the {step.table} {step.chain} {step.action}"
        return {"DROP": "dropped", "REJECT": "rejected", "QUEUE": "queued to userspace"}.get(
            outcome.verdict, "fate unknown") + by
    fails = ", but the TCP connection never completes" if outcome.connection == "fails" else ""
    if outcome.delivered.to == "local":
        return "delivered to a local socket on this host" + fails
    return f"forwarded out of {outcome.delivered.interface}" + fails


def format_trace(outcomes: Sequence[Outcome]) -> str:
    if not outcomes:
        return "No packet matches this description.\n"
    blocks: list[str] = []
    for n, outcome in enumerate(outcomes, 1):
        pkt = outcome.packets.pick()  # type: ignore[attr-defined]
        head = f"Outcome {n}/{len(outcomes)}: {outcome.verdict}, {_where(outcome)}"
        lines = [head]
        if len(outcomes) > 1:
            lines.append(f"  packets: {clean(outcome.packets.describe())}")  # type: ignore[attr-defined]
        if pkt is not None:
            ports = f":{pkt.sport} -> {pkt.dst}:{pkt.dport}" if pkt.proto in (6, 17, 132, 33, 136) else f" -> {pkt.dst}"
            lines.append(f"  e.g. proto {pkt.proto} {pkt.src}{ports}")
            if pkt.orig_dst != pkt.dst or pkt.orig_src != pkt.src or pkt.orig_dport != pkt.dport:
                lines.append(f"  before NAT: {pkt.orig_src}:{pkt.orig_sport} -> {pkt.orig_dst}:{pkt.orig_dport}")
        answered = False
        for step in outcome.steps:
            if step.reply and not answered:
                lines.append("    the answer the REJECT sends:" if outcome.verdict != "ACCEPT"
                             else "    the packet of the handshake that is dropped:")
                answered = True
            where = f"{step.hook:<11} {step.table}/{step.chain}"
            rule = f"  line {step.line}: {clean(step.rule)}" if step.rule else ""
            lines.append(f"    {where:<34} {clean(step.action)}{rule}")
        if outcome.note:
            lines.append(f"  note: {clean(outcome.note)}")
        for reason in outcome.reasons:
            lines.append(f"  ~ approximate: {clean(reason)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
