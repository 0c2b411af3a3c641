"""The `rankwise` command: one small module per subcommand, registered here."""

from __future__ import annotations

import importlib
import signal
import sys
import threading

from rankwise._version import __version__
from rankwise.cli.common import Parser, interrupt_message
from rankwise.errors import RankwiseError

#: Subcommand modules, each with ``register(subparsers)``; a new command is one file plus one entry.
SUBCOMMANDS = ["info", "eval_cmd", "analyze", "compress", "finetune", "export_peft", "merge_adapter", "merge",
               "extract_lora"]


def build_parser() -> Parser:
    parser = Parser(prog="rankwise", description="Spectral analysis, compression, adaptation and merging "
                    "of transformer language models through their singular values.")
    parser.add_argument("--version", action="version", version=f"rankwise {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in SUBCOMMANDS:
        importlib.import_module(f"rankwise.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except KeyboardInterrupt as exc:
        message = interrupt_message(exc)
    # Printed outside the handler: the interrupted frames, and any progress bar still open in them, are
    # gone by now, so a bar draws its last state before this line, not after it.
    print(message, file=sys.stderr)
    return 130


def _run(argv: list[str] | None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        code: int = args.func(args)
        return code
    except RankwiseError as exc:
        print(f"rankwise: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the environment, not a bug: a full disk, a file removed mid-run, a permission
        print(f"rankwise: error: {exc}; check the path, its permissions and the free space", file=sys.stderr)
        return 2
    finally:
        if argv is None and threading.current_thread() is threading.main_thread():
            # The work is over; a Ctrl-C now would only interrupt the interpreter's exit handlers and
            # print their traceback. (Only on the command line: an in-process caller keeps its handler.)
            signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
