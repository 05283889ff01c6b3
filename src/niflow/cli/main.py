"""The niflow entry point: parse, run the command, turn known errors into one line."""

from __future__ import annotations

import os
import sys
import warnings

from niflow.cli.commands import COMMANDS
from niflow.cli.parser import build_parser
from niflow.config import ConfigError
from niflow.data.errors import DataError
from niflow.runs.run import RunError
from niflow.train.memory import ResourceError
from niflow.train.safety import TrainingError


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"niflow: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for a --resume command line
    warnings.formatwarning = _one_line_warning
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 reports
    if not main_process:
        warnings.simplefilter("ignore")
    try:
        return COMMANDS[args.command](args)
    except (DataError, ConfigError, RunError, ResourceError, TrainingError) as err:
        # messages are built to be one line; a library's text might not be
        if main_process:
            print(f"niflow {args.command}: error: {' '.join(str(err).split())}",
                  file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # a command may say what was saved and how to go on
        print(f"niflow {args.command}: {str(err) or 'interrupted'}", file=sys.stderr)
        return 130
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
