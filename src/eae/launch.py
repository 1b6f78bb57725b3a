"""The `eae` command's entry point. Importing torch takes a second or more; a Ctrl-C in
that second would otherwise end in a Python traceback, before `eae.cli.main` can answer it."""
from __future__ import annotations

import sys


def main() -> int:
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        print("eae: interrupted while starting; nothing was written", file=sys.stderr)
        return 130
    status = cli_main(exiting=True)
    # the command has ended, its status is what happened: a Ctrl-C while the process exits changes nothing
    import signal

    for num in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if num is not None:
            signal.signal(num, signal.SIG_IGN)
    return status
