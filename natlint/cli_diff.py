"""``natlint diff``: what a change to the rules does to traffic."""

from __future__ import annotations

import sys

import click

_HOST_HELP = ("Host model: a TOML file, or 'live' (this machine, read with ip -j). Default: inferred from both"
              " dumps together.")


@click.command()
@click.argument("old_path", metavar="OLD", type=click.Path(allow_dash=True, dir_okay=False))
@click.argument("new_path", metavar="NEW", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--host", "host_path", default=None, help=_HOST_HELP)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--family", type=click.Choice(["4", "6"]), default=None, help="IPv4 or IPv6 (default: detected).")
def diff(old_path: str, new_path: str, host_path: str | None, fmt: str, family: str | None) -> None:
    """Compare what two dumps do to traffic: the packets whose fate changed.

    Every new connection arriving on an interface of the host, and every one the host opens,
    goes through both rulesets. Reported, each with an example packet and the rules that
    decided on both sides: newly exposed (blocked before, let through now), newly blocked,
    NAT changed (let through in both, rewritten differently) and other changes.

    \b
    natlint diff /etc/iptables/rules.v4 rules.v4.new
    iptables-save | natlint diff - rules.v4.new --host live

    \b
    Exit codes: 0 nothing became exposed, 1 something became exposed (for CI review of
    firewall changes), 2 unreadable input, or the analysis did not complete.
    """
    import json

    from natlint.cli import _host_for, _load_one
    from natlint.netfilter.engine import BranchBudgetExceeded
    from natlint.packets.space import BudgetExceeded
    from natlint.semdiff import diff as semantic_diff
    from natlint.semdiff import format_text

    if old_path == "-" and new_path == "-":
        raise click.UsageError("only one of OLD and NEW can be '-' (standard input)")
    old = _load_one(old_path, family)
    new = _load_one(new_path, family)
    for ruleset in (old, new):
        errors = [f for f in ruleset.diagnostics if getattr(f, "severity", "") == "error"]
        if errors:
            click.echo(f"natlint: warning: {len(errors)} line(s) of {ruleset.path} do not parse and are left out"
                       " (run 'natlint check' to see them)", err=True)
    if old.family != new.family:
        click.echo(f"natlint: error: {old.path} is IPv{old.family} and {new.path} IPv{new.family}:"
                   " compare dumps of one family (use --family if the detection is wrong)", err=True)
        sys.exit(2)
    host = _host_for(old, host_path) if host_path is not None else None
    try:
        report = semantic_diff(old, new, host)
    except (BudgetExceeded, BranchBudgetExceeded) as exc:
        report = None
        why = str(exc)
    if report is None:  # out of the except block: the exception's frames (and BDD nodes) are let go
        click.echo(f"natlint: analysis incomplete: {why}. The rulesets split the traffic into too many classes"
                   " to compare in full; nothing is reported. Give a host model (--host) or compare the tables"
                   " separately.", err=True)
        sys.exit(2)
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(format_text(report), nl=False)
    if report.exposed:
        sys.exit(1)
