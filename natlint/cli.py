"""The ``natlint`` command line: a thin layer over the library."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple, TextIO

import click

from natlint import __version__

if TYPE_CHECKING:
    from natlint.config import Config, Settings
    from natlint.findings import Finding
    from natlint.host import HostModel
    from natlint.model import Ruleset

_EPILOG = """\b
Examples:
  natlint check /etc/iptables/rules.v4
  iptables-save | natlint check -
  ip6tables-save | natlint check --family 6 -
  natlint check --format json rules.v4 rules.v6
  natlint check --format sarif -o natlint.sarif rules.v4
  natlint check --select NL1,NL3 --ignore NL102 rules.v4
  natlint rule NL101

\b
Exit codes: 0 no finding at or above --fail-on, 1 findings, 2 usage or configuration error, or
an unreadable file.
"""


@click.group(epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="natlint")
def main() -> None:
    """natlint: find what is wrong with an iptables-save dump before you load it.

    Parses iptables-save / ip6tables-save output and iptables-restore files (every table,
    nf_tables and legacy), and reports syntax errors, structural problems and what the rules
    do to traffic: dead rules, broken port forwards, missing MASQUERADE, published ports that
    bypass INPUT, Docker and kube-proxy traps. 'natlint trace' follows a packet, 'natlint
    ports' lists what is exposed, 'natlint diff' says what a change does to traffic.
    """


_HOST_HELP_CHECK = ("Host model for the semantic checks: a TOML file, or 'live' (this machine, read with ip -j)."
                    " Default: inferred from each dump.")


_FORMATS = ("concise", "full", "json", "sarif", "github")


class _ConfigProblem(click.ClickException):
    """A configuration file or selector natlint cannot use: exit 2, like any usage error."""

    exit_code = 2

    def format_message(self) -> str:
        return self.message


@main.command(epilog=_EPILOG)
@click.argument("paths", nargs=-1, type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(_FORMATS), default=None, envvar="NATLINT_FORMAT",
              help="Output format (env NATLINT_FORMAT; default: the config's 'format', else concise).")
@click.option("-o", "--output", type=click.File("w", encoding="utf-8", lazy=True), default=None,
              help="Write the report to this file instead of standard output.")
@click.option("--fail-on", type=click.Choice(["error", "warning", "info"]), default=None,
              help="Exit 1 when a finding of this severity or higher is reported (default: the config's, else error).")
@click.option("--exit-zero", is_flag=True, help="Always exit 0 when the files could be read.")
@click.option("--select", "select", multiple=True, metavar="CODES",
              help="Only these codes: prefixes (NL1), codes (NL301), rule names, or ALL; comma separated.")
@click.option("--extend-select", multiple=True, metavar="CODES", help="Add these codes to the selection.")
@click.option("--ignore", multiple=True, metavar="CODES", help="Leave these codes out.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Use this configuration file (natlint.toml, or a pyproject.toml with [tool.natlint]).")
@click.option("--isolated", is_flag=True, help="Ignore every configuration file.")
@click.option("--no-suppressions", is_flag=True,
              help="Ignore '# natlint: ignore[...]' comments and rule comments (for audits).")
@click.option("--stdin-filename", default=None, help="The name to report (and find the config for) for '-'.")
@click.option("--family", type=click.Choice(["4", "6"]), default=None,
              help="IPv4 or IPv6 (default: from the file's header, name and addresses).")
@click.option("--host", "host_path", default=None, help=_HOST_HELP_CHECK)
@click.option("--only-iptables", is_flag=True,
              help="Skip (with a note) files that are not iptables input: no *table, :CHAIN or COMMIT line and not a"
                   " well-known name (rules.v4, iptables...). For hooks that match *.rules, a name udev uses too.")
@click.option("-j", "--jobs", type=click.IntRange(min=0), default=1, show_default=True,
              help="Check this many files at once, in separate processes (0: one per CPU). The report is the same.")
@click.option("--budget", type=click.FloatRange(min=0, max=10**9), default=None, metavar="SECONDS",
              help="Time the semantic checks may take per file before they stop with NL007 (analysis incomplete)"
                   " (default: the config's 'budget', else 60; 0: no limit).")
def check(paths: tuple[str, ...], fmt: str | None, output: TextIO | None, fail_on: str | None, exit_zero: bool,
          select: tuple[str, ...], extend_select: tuple[str, ...], ignore: tuple[str, ...], config_path: str | None,
          isolated: bool, no_suppressions: bool, stdin_filename: str | None, family: str | None,
          host_path: str | None, only_iptables: bool, jobs: int, budget: float | None) -> None:
    """Check iptables-save dumps. PATHS are files, or - for standard input (the default).

    Settings come from the nearest natlint.toml, .natlint.toml or pyproject.toml [tool.natlint]
    above each file (or --config); options given here override them. Findings can be suppressed
    in the file with '# natlint: ignore[NL201] reason' on the line before a rule, or
    -m comment --comment "natlint: ignore[NL201] reason" in the rule.
    """
    from natlint.checks import load_all
    from natlint.config import ConfigError, Selection, Settings, parse_selectors, validate_selectors
    from natlint.findings import SEVERITY_RANK

    if isolated and config_path:
        raise click.UsageError("--isolated and --config exclude each other")
    if not paths:
        if sys.stdin.isatty():
            raise click.UsageError("give one or more files to check, or '-' to read standard input")
        paths = ("-",)
    load_all()  # registers every code: selectors are checked against them
    try:
        cli = Selection(parse_selectors(select) if select else None, parse_selectors(extend_select),
                        parse_selectors(ignore))
        validate_selectors((*(cli.select or ()), *cli.extend_select, *cli.ignore), "command line")
    except ConfigError as exc:
        raise click.BadParameter(str(exc).removeprefix("command line: "), param_hint="--select/--ignore") from None
    fam = int(family) if family else None
    findings: list[Finding] = []
    sources: dict[str, tuple[str, ...]] = {}
    failures: list[str] = []
    first: Settings | None = None
    configs: dict[str, Config] = {}  # each configuration file is read once per run
    tasks: list[_Task] = []
    for path in paths:
        name = (stdin_filename or "<stdin>") if path == "-" else path
        try:
            config_file = _config_for(name if path != "-" or stdin_filename else None, config_path, isolated, configs)
            settings = Settings(config_file, cli)
        except ConfigError as exc:
            raise _ConfigProblem(f"natlint: error: {exc}") from None
        first = first or settings
        tasks.append(_Task(path, name, settings, fam, host_path, no_suppressions, only_iptables, budget))
    for outcome in _run_tasks(tasks, jobs):
        for note in outcome.notes:
            click.echo(note, err=True)
        if outcome.error is not None:
            raise outcome.error.rebuild()
        if outcome.failure is not None:
            failures.append(outcome.failure)
        if outcome.lines is not None:
            sources[outcome.name] = outcome.lines
        findings.extend(outcome.findings)
    config = first.config if first is not None else None
    fmt = fmt or (config.format if config else None) or "concise"
    fail_on = fail_on or (config.fail_on if config else None) or "error"
    out = output or click.get_text_stream("stdout")
    out.write(_render(fmt, findings, sources, failures, len(paths), out))
    out.flush()  # the summary goes to stderr: keep it after the findings on a terminal
    _summary(findings, len(paths), bool(failures))
    if failures:
        sys.exit(2)
    threshold = SEVERITY_RANK[fail_on]
    if not exit_zero and any(SEVERITY_RANK[f.severity] >= threshold for f in findings):
        sys.exit(1)


class _Task(NamedTuple):
    """One file for ``check`` (sent to a worker process with --jobs)."""

    path: str
    name: str
    settings: Settings
    family: int | None
    host_path: str | None
    no_suppressions: bool
    only_iptables: bool
    budget: float | None
    data: bytes | None = None  # standard input, read by the main process
    unreadable: str | None = None  # why standard input could not be read


class _Error(NamedTuple):
    """A usage or configuration error met while checking a file, in a form that pickles."""

    kind: str  # "config" (exit 2 with the message) or "param" (a bad --host)
    message: str
    hint: str | None = None

    def rebuild(self) -> click.ClickException:
        if self.kind == "config":
            return _ConfigProblem(self.message)
        return click.BadParameter(self.message, param_hint=self.hint)


class _Outcome(NamedTuple):
    name: str
    findings: list[Finding]
    lines: tuple[str, ...] | None = None  # for the full and SARIF formats
    notes: tuple[str, ...] = ()  # for standard error, in order
    failure: str | None = None  # unreadable
    error: _Error | None = None


def _check_one(task: _Task) -> _Outcome:
    """Read, check and filter one file (in this process, or a worker's with --jobs)."""
    from natlint.api import apply_settings
    from natlint.checks import CheckContext, run_checks
    from natlint.checks.context import DEFAULT_BUDGET_SECONDS
    from natlint.syntax.reader import read
    from natlint.syntax.sniff import should_check

    path, name, settings = task.path, task.name, task.settings
    try:
        if task.unreadable is not None:
            raise OSError(task.unreadable)
        if task.data is not None:
            data = task.data
        else:
            with open(path, "rb") as handle:
                data = handle.read()
    except OSError as exc:
        message = f"cannot read {path}: {exc.strerror or exc}"
        return _Outcome(name, [], notes=(f"natlint: {message}",), failure=message)
    if task.only_iptables and not should_check(name, data):
        return _Outcome(name, [], notes=(f"natlint: skipped {name}: not an iptables file (no *table, :CHAIN or"
                                         " COMMIT line)",))
    ruleset = read(data, name, task.family)  # type: ignore[arg-type]
    del data
    host_model = None
    try:
        if task.host_path is not None:
            host_model = _host_for(ruleset, task.host_path)
        elif settings.config.host is not None:
            try:
                host_model = _host_for(ruleset, settings.config.host)
            except click.BadParameter as exc:
                return _Outcome(name, [], error=_Error(
                    "config", f"natlint: error: {settings.config.path}: host: {exc.message}"))
    except click.BadParameter as exc:
        return _Outcome(name, [], error=_Error("param", exc.message, exc.param_hint))  # type: ignore[arg-type]
    budget = task.budget if task.budget is not None else settings.config.budget
    seconds = DEFAULT_BUDGET_SECONDS if budget is None else (budget or None)  # 0: no limit
    ctx = CheckContext(ruleset, host_model, budget_seconds=seconds,
                       trusted_interfaces=settings.config.trusted_interfaces,
                       trusted_networks=settings.config.trusted_networks)
    raw = run_checks(ruleset, host_model, ctx=ctx)
    return _Outcome(name, apply_settings(raw, ruleset, settings, suppressions=not task.no_suppressions),
                    ruleset.lines)


def _run_tasks(tasks: list[_Task], jobs: int) -> Iterator[_Outcome]:
    """The outcome of each task, in order: here one after the other, or from ``jobs`` worker
    processes (0: one per CPU) that check files meanwhile."""
    import os

    if jobs == 0:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    stdin = [i for i, t in enumerate(tasks) if t.path == "-"]
    for i in stdin:  # workers do not share standard input: read it here (once; it is empty after)
        try:
            tasks[i] = tasks[i]._replace(data=sys.stdin.buffer.read())
        except OSError as exc:
            tasks[i] = tasks[i]._replace(unreadable=exc.strerror or str(exc))
    if jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield _check_one(task)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # fork: the workers start with natlint imported; nothing here holds threads or BDD managers yet
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    with ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=multiprocessing.get_context(method)) as pool:
        futures = [pool.submit(_check_one, task) for task in tasks]
        try:
            for task, future in zip(tasks, futures, strict=True):
                try:
                    yield future.result()
                except BrokenProcessPool:
                    message = f"cannot check {task.name}: a worker process died (out of memory?)"
                    yield _Outcome(task.name, [], notes=(f"natlint: {message}",), failure=message)
        finally:
            for future in futures:
                future.cancel()


def _config_for(path: str | None, explicit: str | None, isolated: bool, cache: dict[str, Config]) -> Config:
    """The configuration for one checked file: --config, none (--isolated), or the nearest file
    above it (above the current folder for standard input). Each file is read once."""
    from pathlib import Path

    from natlint.config import Config, find_config, load_config, validate_selectors

    if isolated:
        return Config()
    if explicit is not None:
        found: Path | None = Path(explicit)
    else:
        found = find_config(Path(path).parent if path is not None else Path.cwd())
    if found is None:
        return Config()
    key = str(found.resolve())
    if key not in cache:
        config = load_config(found)
        validate_selectors(config.selectors(), str(config.path))
        cache[key] = config
    return cache[key]


def _use_color(stream: TextIO) -> bool:
    """Colour on a terminal; never with NO_COLOR (no-color.org), always with FORCE_COLOR."""
    import os

    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR", "") not in ("", "0"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def _render(fmt: str, findings: list[Finding], sources: dict[str, tuple[str, ...]], failures: list[str],
            files: int, out: TextIO) -> str:
    if fmt == "json":
        from natlint.report.json import format_json

        return format_json(findings, files)
    if fmt == "sarif":
        from natlint.report.sarif import format_sarif

        return format_sarif(findings, sources=sources, failures=failures)
    if fmt == "github":
        from natlint.report.github import format_github

        return format_github(findings)
    from natlint.report.text import format_concise, format_full

    color = _use_color(out)
    return format_full(findings, sources=sources, color=color) if fmt == "full" else format_concise(findings,
                                                                                                   color=color)


def _summary(findings: list[Finding], files: int, unreadable: bool) -> None:
    from natlint.report.json import summary

    stats = summary(findings, files)
    if findings:
        click.echo(f"Found {stats['errors']} error(s), {stats['warnings']} warning(s), {stats['infos']} info"
                   f" in {files} file(s).", err=True)
    elif not unreadable:
        click.echo(f"All checks passed ({files} file(s)).", err=True)


@main.command()
@click.argument("code", required=False)
@click.option("--all", "show_all", is_flag=True, help="List every code.")
def rule(code: str | None, show_all: bool) -> None:
    """Explain a finding code (natlint rule NL101), or list them all (--all)."""
    from natlint.checks import load_all
    from natlint.findings import CODES

    load_all()  # the check modules register their codes

    if show_all or code is None:
        width = max(len(c.name) for c in CODES.values())
        for listed in sorted(CODES.values(), key=lambda c: c.code):
            click.echo(f"{listed.code}  {listed.name:<{width}} {listed.severity:<8} {listed.summary}")
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


def _load_one(path: str, family: str | None) -> Ruleset:
    from natlint.syntax.reader import read

    try:
        if path == "-":
            data, name = sys.stdin.buffer.read(), "<stdin>"
        else:
            with open(path, "rb") as handle:
                data, name = handle.read(), path
    except OSError as exc:
        click.echo(f"natlint: cannot read {path}: {exc.strerror or exc}", err=True)
        sys.exit(2)
    return read(data, name, int(family) if family else None)  # type: ignore[arg-type]


def _host_for(ruleset: Ruleset, host: str | None) -> HostModel:
    from natlint.api import resolve_host
    from natlint.host import infer
    from natlint.host.live import LiveHostError

    try:
        model = resolve_host(ruleset, host)
    except LiveHostError as exc:
        raise click.BadParameter(f"cannot read this machine's interfaces and routes: {exc}",
                                 param_hint="--host") from None
    except (OSError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--host") from None
    return model if model is not None else infer(ruleset)


_HOST_HELP = "Host model: a TOML file, 'live' (read this machine with ip -j), default: inferred from the dump."


@main.command()
@click.argument("path", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--family", type=click.Choice(["4", "6"]), default=None, help="IPv4 or IPv6 (default: detected).")
@click.option("--host", "host_path", default=None, help=_HOST_HELP)
def host(path: str, family: str | None, host_path: str | None) -> None:
    """Print the host model natlint uses for a dump (inferred unless --host is given), as TOML."""
    from natlint.host import dump_host_file

    ruleset = _load_one(path, family)
    model = _host_for(ruleset, host_path)
    click.echo(dump_host_file(model), nl=False)


@main.command()
@click.argument("path", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--in", "in_iface", default=None, help="Interface the packet arrives on (e.g. eth0).")
@click.option("--local", is_flag=True, help="The host itself sends the packet (instead of --in).")
@click.option("--src", default=None, help="Source address or prefix (default: any).")
@click.option("--dst", default=None, help="Destination address or prefix (default: any).")
@click.option("--proto", default=None, help="tcp, udp, icmp, a number... (default: any).")
@click.option("--sport", default=None, help="Source port or range 1024:65535.")
@click.option("--dport", default=None, help="Destination port or range 8000:9000.")
@click.option("--state", type=click.Choice(["new", "established", "related", "invalid", "untracked"]),
              default="new", show_default=True, help="Conntrack state of the packet.")
@click.option("--family", type=click.Choice(["4", "6"]), default=None, help="IPv4 or IPv6 (default: detected).")
@click.option("--host", "host_path", default=None, help=_HOST_HELP)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def trace(path: str, in_iface: str | None, local: bool, src: str | None, dst: str | None, proto: str | None,
          sport: str | None, dport: str | None, state: str, family: str | None, host_path: str | None,
          fmt: str) -> None:
    """Show what the firewall does to a packet (or a class of packets) and why.

    \b
    natlint trace rules.txt --in eth0 --src 203.0.113.9 --dst 198.51.100.1 --proto tcp --dport 8080
    natlint trace rules.txt --local --dst 1.1.1.1 --proto udp --dport 53
    natlint trace rules.txt --in eth0 --proto tcp --dport 8000:9000   # the partition of a range
    """
    import json

    from natlint.netfilter.trace import TraceQuery, outcome_to_dict
    from natlint.netfilter.trace import trace as run_trace

    if local and in_iface:
        raise click.UsageError("give either --in IFACE (arriving traffic) or --local (sent by the host), not both")
    if not local and not in_iface:
        raise click.UsageError("say where the packet comes from: --in IFACE, or --local for traffic the host sends")
    ruleset = _load_one(path, family)
    errors = [f for f in ruleset.diagnostics if getattr(f, "severity", "") == "error"]
    if errors:
        click.echo(f"natlint: warning: {len(errors)} line(s) of {ruleset.path} do not parse and are left out"
                   " (run 'natlint check' to see them)", err=True)
    model = _host_for(ruleset, host_path)
    query = TraceQuery(in_iface, local, src, dst, proto, sport, dport, state)
    from natlint.netfilter.engine import BranchBudgetExceeded
    from natlint.packets.space import BudgetExceeded

    try:
        outcomes = run_trace(ruleset, model, query)
    except (BudgetExceeded, BranchBudgetExceeded) as exc:
        click.echo(f"natlint: analysis incomplete: {exc}. The packet class is too broad to follow in full:"
                   " narrow it (--dst, --dport, --src) and trace again.", err=True)
        sys.exit(2)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps({"outcomes": [outcome_to_dict(o) for o in outcomes]}, indent=2))
        return
    from natlint.report.trace_text import format_trace

    click.echo(format_trace(outcomes), nl=False)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


# Commands that live in their own modules (each imports its heavy parts when it runs).
from natlint.cli_diff import diff as _diff_command  # noqa: E402
from natlint.cli_graph import graph as _graph_command  # noqa: E402
from natlint.cli_ports import ports as _ports_command  # noqa: E402

main.add_command(_graph_command)
main.add_command(_diff_command)
main.add_command(_ports_command)

if __name__ == "__main__":  # pragma: no cover
    main()
