"""Write the llm-tpu(1) man page (roff) to stdout from the argparse parser: `--help` is the documentation.

Every subcommand (and sub-subcommand) gets a section with its usage, description and options, in the
order `llm-tpu --help` lists them. Run with the interpreter that has the appliance installed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Iterator

from appliance import __version__
from appliance.cli.main import build_parser


def roff(text: str) -> str:
    """Escape text for roff: backslashes, hyphens, and leading dots or quotes."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line[:1] in (".", "'") else line for line in text.splitlines())


def subcommands(
    parser: argparse.ArgumentParser, prefix: str
) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub, helps.get(name, "")
                yield from subcommands(sub, f"{prefix} {name}")


def options(parser: argparse.ArgumentParser) -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            names = ", ".join(action.option_strings)
            if action.nargs != 0:
                metavar = action.metavar or (
                    action.dest.upper()
                    if not action.choices
                    else "{" + ",".join(map(str, action.choices)) + "}"
                )
                names += f" {metavar}"
        else:
            names = str(action.metavar or action.dest)
        text = (action.help or "").replace("%(default)s", str(action.default)).replace("%%", "%")
        if action.choices and not action.option_strings:
            text += f" ({', '.join(map(str, action.choices))})"
        out += [".TP", f"\\fB{roff(names)}\\fR", roff(text or "")]
    return out


def usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().removeprefix("usage: ").split())


def manpage() -> str:
    parser = build_parser()
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or None
    date = (
        datetime.datetime.fromtimestamp(epoch or 0, datetime.UTC)
        if epoch
        else datetime.datetime.now(datetime.UTC)
    )
    lines = [
        f'.TH LLM\\-TPU 1 "{date:%Y-%m-%d}" "llm-tpu-appliance {__version__}" "User Commands"',
        ".SH NAME",
        "llm\\-tpu \\- " + roff(parser.description or ""),
        ".SH SYNOPSIS",
        ".B llm\\-tpu",
        "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]",
        ".SH DESCRIPTION",
        roff(parser.description or ""),
        ".SH OPTIONS",
        *options(parser),
        ".SH COMMANDS",
    ]
    for name, sub, summary in subcommands(parser, "llm-tpu"):
        lines += [".SS " + roff(name), roff(summary) if summary else "", ".PP", "Usage: " + roff(usage(sub))]
        if sub.description and sub.description != summary:
            lines += [".PP", roff(sub.description)]
        opts = options(sub)
        if opts:
            lines += [".PP", "Options and arguments:", *opts]
    lines += [
        ".SH FILES",
        ".TP",
        "\\fI/etc/llm\\-tpu/appliance.yaml\\fR",
        "The configuration; every key is documented in it.",
        ".TP",
        "\\fI/etc/llm\\-tpu/conf.d/*.yaml\\fR",
        "Drop\\-ins, read after it in lexical order; provisioning and Ansible write here.",
        ".TP",
        "\\fI/var/lib/llm\\-tpu/models/\\fR",
        "Installed models.",
        ".TP",
        "\\fI/run/llm\\-tpu/llm.sock\\fR",
        "The service's API socket (group llm\\-tpu).",
        ".SH SEE ALSO",
        "\\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1): the service is \\fIllm\\-tpu.service\\fR.",
    ]
    return "\n".join(line for line in lines if line != "") + "\n"


if __name__ == "__main__":
    sys.stdout.write(manpage())
