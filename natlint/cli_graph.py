"""``natlint graph``: draw the chain graph of a dump, with its findings highlighted."""

from __future__ import annotations

import sys
from typing import TextIO

import click

_HELP_HOST = "Host model for the checks: a TOML file, or 'live' (default: inferred from the dump)."
_NO_DOT = ("natlint: error: --format svg needs Graphviz's 'dot' program, which is not installed:"
           " install graphviz (apt-get install graphviz) or use --format dot")


@click.command()
@click.argument("path", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["dot", "mermaid", "svg"]), default="dot", show_default=True,
              help="Graphviz dot, a Mermaid flowchart (GitHub renders it in a ```mermaid block), or SVG"
              " (needs Graphviz's dot).")
@click.option("-t", "--table", default=None, help="Only this table (default: every table of the dump).")
@click.option("-o", "--output", type=click.File("w", encoding="utf-8", lazy=True), default=None,
              help="Write to this file instead of standard output.")
@click.option("--family", type=click.Choice(["4", "6"]), default=None, help="IPv4 or IPv6 (default: detected).")
@click.option("--host", "host_path", default=None, help=_HELP_HOST)
@click.option("--no-findings", is_flag=True, help="Draw the graph only (do not run the checks).")
def graph(path: str, fmt: str, table: str | None, output: TextIO | None, family: str | None, host_path: str | None,
          no_findings: bool) -> None:
    """Draw the chain graph: hooks -> built-in chains -> user chains.

    Jumps are solid edges, gotos dashed, each labelled with its rule's line; unreferenced
    chains are grey; chains and rules with error or warning findings are red or orange, their
    findings listed in the label (and the tooltip, in dot and SVG).

    \b
    natlint graph rules.v4 -o rules.dot
    natlint graph rules.v4 --format svg -t filter -o filter.svg
    natlint graph rules.v4 --format mermaid
    """
    import shutil

    from natlint.cli import _host_for, _load_one
    from natlint.graph.render import GraphvizError, build_view, to_dot, to_mermaid, to_svg

    dot_binary = shutil.which("dot") if fmt == "svg" else None
    if fmt == "svg" and dot_binary is None:
        click.echo(_NO_DOT, err=True)
        sys.exit(2)
    ruleset = _load_one(path, family)
    findings = []
    if not no_findings:
        from natlint.checks import run_checks

        findings = run_checks(ruleset, _host_for(ruleset, host_path) if host_path is not None else None)
    try:
        view = build_view(ruleset, findings, table)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--table") from None
    if fmt == "mermaid":
        text = to_mermaid(view)
    else:
        text = to_dot(view)
        if dot_binary is not None:
            try:
                text = to_svg(text, dot_binary)
            except GraphvizError as exc:
                click.echo(f"natlint: error: Graphviz failed: {exc}", err=True)
                sys.exit(2)
    out = output or click.get_text_stream("stdout")
    out.write(text)
    out.flush()
