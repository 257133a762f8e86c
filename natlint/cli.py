"""The ``natlint`` command line: a thin layer over the library."""

from __future__ import annotations

import sys
from typing import TextIO

import click

from natlint import __version__

_EPILOG = """\b
Examples:
  natlint check /etc/iptables/rules.v4
  iptables-save | natlint check -
  ip6tables-save | natlint check --family 6 -
  natlint check --format json rules.v4 rules.v6
  natlint rule NL101

\b
Exit codes: 0 no finding at or above --fail-on, 1 findings, 2 usage error or unreadable file.
"""


@click.group(epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="natlint")
def main() -> None:
    """natlint: find what is wrong with an iptables-save dump before you load it.

    Parses iptables-save / ip6tables-save output and iptables-restore files (every table,
    nf_tables and legacy), and reports syntax errors, structural problems and (soon) what
    the rules do to traffic: dead rules, broken port forwards, missing MASQUERADE, Docker and
    kube-proxy traps.
    """


@main.command(epilog=_EPILOG)
@click.argument("paths", nargs=-1, type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["concise", "full", "json"]), default="concise", show_default=True,
              envvar="NATLINT_FORMAT", help="Output format.")
@click.option("--fail-on", type=click.Choice(["error", "warning", "info"]), default="error", show_default=True,
              help="Exit 1 when a finding of this severity or higher is reported.")
@click.option("--exit-zero", is_flag=True, help="Always exit 0 when the files could be read.")
@click.option("--family", type=click.Choice(["4", "6"]), default=None,
              help="IPv4 or IPv6 (default: from the file's header, name and addresses).")
@click.option("-o", "--output", type=click.File("w"), default=None, help="Write the report to this file.")
def check(paths: tuple[str, ...], fmt: str, fail_on: str, exit_zero: bool, family: str | None,
          output: TextIO | None) -> None:
    """Check iptables-save dumps. PATHS are files, or - for standard input (the default)."""
    from natlint.checks import run_checks
    from natlint.findings import SEVERITY_RANK, Finding
    from natlint.report.json import format_json, summary
    from natlint.report.text import format_concise, format_full
    from natlint.syntax.reader import read

    if not paths:
        if sys.stdin.isatty():
            raise click.UsageError("give one or more files to check, or '-' to read standard input")
        paths = ("-",)
    fam = int(family) if family else None
    findings: list[Finding] = []
    unreadable = False
    for path in paths:
        try:
            if path == "-":
                data = sys.stdin.buffer.read()
                name = "<stdin>"
            else:
                with open(path, "rb") as handle:
                    data = handle.read()
                name = path
        except OSError as exc:
            click.echo(f"natlint: cannot read {path}: {exc.strerror or exc}", err=True)
            unreadable = True
            continue
        ruleset = read(data, name, fam)  # type: ignore[arg-type]
        findings.extend(run_checks(ruleset))
    out = output or click.get_text_stream("stdout")
    if fmt == "json":
        out.write(format_json(findings, len(paths)))
    else:
        out.write(format_full(findings) if fmt == "full" else format_concise(findings))
        stats = summary(findings, len(paths))
        if findings:
            click.echo(f"Found {stats['errors']} error(s), {stats['warnings']} warning(s), {stats['infos']} info"
                       f" in {len(paths)} file(s).", err=True)
        elif not unreadable:
            click.echo(f"All checks passed ({len(paths)} file(s)).", err=True)
    if unreadable:
        sys.exit(2)
    threshold = SEVERITY_RANK[fail_on]
    if not exit_zero and any(SEVERITY_RANK[f.severity] >= threshold for f in findings):
        sys.exit(1)


@main.command()
@click.argument("code", required=False)
@click.option("--all", "show_all", is_flag=True, help="List every code.")
def rule(code: str | None, show_all: bool) -> None:
    """Explain a finding code (natlint rule NL101), or list them all (--all)."""
    from natlint.checks import structure  # noqa: F401  (registers its codes)
    from natlint.findings import CODES

    if show_all or code is None:
        for listed in CODES.values():
            click.echo(f"{listed.code}  {listed.name:<28} {listed.severity:<8} {listed.summary}")
        return
    entry = CODES.get(code.upper())
    if entry is None:
        raise click.BadParameter(f"unknown code {code!r}; 'natlint rule --all' lists them", param_hint="CODE")
    click.echo(f"{entry.code} {entry.name} ({entry.severity})\n\nWhat it finds\n  {entry.summary}\n")
    if entry.why:
        click.echo(f"Why it matters\n  {entry.why}\n")
    if entry.example:
        click.echo("Example (flagged)\n" + _indent(entry.example) + "\n")
    if entry.fixed:
        click.echo("Fixed\n" + _indent(entry.fixed))


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


if __name__ == "__main__":  # pragma: no cover
    main()
