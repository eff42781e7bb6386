"""The ``seqrec`` command line: one subcommand per job, each implemented in its own module.

Every command module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Errors caused by the user's
input (`SeqrecError`) print one line and exit 2; ``--verbose`` shows the traceback.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from trainer.errors import SeqrecError
from trainer.logs import setup_logging

# name -> (module, one-line help). Modules are imported only when their command runs (torch is slow to import).
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("trainer.data.prepare", "turn a raw interaction log into a dataset folder"),
    "synth": ("trainer.data.synth", "generate a synthetic interaction log with learnable structure"),
    "forget": ("trainer.data.forget", "write a new dataset version without the named users' events"),
    "inspect": ("trainer.data.inspect", "print a dataset folder's manifest, lengths, popularity and splits"),
    "plan": ("trainer.plan", "show the sharding plan TorchRec's planner makes on a simulated cluster (meta device)"),
    "train": ("trainer.train", "train a model (Hydra overrides; one process here, torchx for several)"),
    "evaluate": ("trainer.evaluate", "full-ranking evaluation of a trained run on the valid or test split"),
    "compare": ("trainer.compare", "paired significance tests and a report (plots) over evaluated runs"),
    "benchmark": ("trainer.benchmark", "run a resumable models x datasets x seeds grid; results table + reports"),
    "export": ("serving.export", "export a run as an INT8 TorchScript model (+ TorchServe archive with --archive)"),
    "drift": ("serving.drift", "compare served requests with the training distribution (PSI per statistic)"),
    "recommend": ("serving.recommend", "top-K recommendations for many users from an exported model, into Parquet"),
    "serve": ("serving.serve", "start/stop a locked-down TorchServe serving an exported archive"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong, a close match, where the help is) and exit 2."""

    def error(self, message: str) -> NoReturn:
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            options = re.findall(r"'([^']*)'", choice.group(2)) or [x.strip() for x in choice.group(2).split(",")]
            close = difflib.get_close_matches(choice.group(1), options, n=1)
            message += f"; did you mean '{close[0]}'?" if close else ""
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def version_line() -> str:
    """``seqrec X (torch Y, torchrec Z, fbgemm-gpu W)`` from the installed distributions (no torch import)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    stack = ", ".join(f"{name} {of(dist)}" for name, dist in
                      (("torch", "torch"), ("torchrec", "torchrec"), ("fbgemm-gpu", "fbgemm-gpu-cpu")))
    return f"seqrec {of('seqrec')} ({stack})"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s module is imported (all of them when None, e.g. for tests)."""
    parser = _Parser(
        prog="seqrec",
        description="Distributed trainer for sequential recommendation (PyTorch + TorchRec).",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="show debug logs and full tracebacks")
    parser.add_argument("--version", action="version", version=version_line(), help="print the versions and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        if command is not None and name != command:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or help_text).strip()
        cmd = sub.add_parser(
            name, help=help_text, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        cmd.add_argument(
            "--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``seqrec`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else "")
    args, unknown = parser.parse_known_args(argv)
    # KEY=VALUE overrides may follow options (`evaluate RUN --split test eval.ks=[5]`); argparse cannot interleave.
    if unknown and hasattr(args, "overrides") and all("=" in u and not u.startswith("-") for u in unknown):
        args.overrides = [*args.overrides, *unknown]
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    setup_logging(args.verbose)
    try:
        return int(args._run(args) or 0)
    except SeqrecError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
