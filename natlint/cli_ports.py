"""``natlint ports``: the exposure table (what the host publishes, forwards and accepts)."""

from __future__ import annotations

import sys
from typing import TextIO

import click

_EPILOG = """\b
Examples:
  natlint ports /etc/iptables/rules.v4
  iptables-save | natlint ports -
  natlint ports --host live rules.v4
  natlint ports --format json rules.v4 | jq '.services[] | {front_end, destinations}'

\b
JSON (--format json), stable keys:
  {"services": [{"proto", "address", "port", "front_end", "addresses", "scope", "kind",
                 "destinations", "label", "rules": [RULE], "notes",
                 "reach": [{"origin": "outside"|"host"|"bridge", "interfaces", "status":
                            "yes"|"restricted"|"no"|"unknown", "via", "sources", "masquerade":
                            "yes"|"no"|"partly", "snat_rules", "accepted_by", "blocked_by",
                            "destinations", "condition", "note", "certainty", "reasons"}]}],
   "input": [{"proto", "ports", "sources", "addresses", "interfaces", "accepted_by": RULE,
              "certainty", "reasons"}],
   "notes": [str]}
  RULE = {"table", "chain", "line", "index" (1-based, or "policy"), "action", "rule"}
"""


@click.command("ports", epilog=_EPILOG)
@click.argument("path", type=click.Path(allow_dash=True, dir_okay=False), default="-")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("-o", "--output", type=click.File("w", encoding="utf-8", lazy=True), default=None,
              help="Write the table to this file instead of standard output.")
@click.option("--family", type=click.Choice(["4", "6"]), default=None, help="IPv4 or IPv6 (default: detected).")
@click.option("--host", "host_path", default=None,
              help="Host model: a TOML file, 'live' (read this machine with ip -j), default: inferred from the dump.")
def ports(path: str, fmt: str, output: TextIO | None, family: str | None, host_path: str | None) -> None:
    """The exposure table of a dump, like 'docker port' for the whole host.

    For every published or forwarded service (DNAT/REDIRECT): the host address and port,
    where it goes, from where it is reachable (outside, the host itself, each bridge), from
    which sources, whether it is masqueraded, and the rules that decide. Then what the host
    itself accepts on INPUT from outside. Docker's userland proxy and --iptables=false are
    called out where they carry connections instead of iptables.
    """
    import json

    from natlint.cli import _host_for, _load_one, _use_color
    from natlint.portmap import format_text
    from natlint.portmap import ports as build

    if path == "-" and sys.stdin.isatty():
        raise click.UsageError("give a file, or '-' to read standard input")
    ruleset = _load_one(path, family)
    broken = sum(1 for d in ruleset.diagnostics if getattr(d, "severity", "") == "error")
    if broken:
        click.echo(f"natlint: warning: {ruleset.path}: {broken} line(s) do not parse and are left out of the"
                   " table ('natlint check' shows them)", err=True)
    model = _host_for(ruleset, host_path) if host_path is not None else None
    report = build(ruleset, model)
    out = output or click.get_text_stream("stdout")
    if fmt == "json":
        out.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        out.write(format_text(report, color=_use_color(out)))
    out.flush()
