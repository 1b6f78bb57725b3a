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
    status = cli_main()
    if status in (129, 130, 143):  # stopped by a signal: another Ctrl-C while the process exits says nothing more
        import signal

        for num in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if num is not None:
                signal.signal(num, signal.SIG_IGN)
    return status
