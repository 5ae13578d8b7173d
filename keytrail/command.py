"""The `keytrail` command's entry point: the console's CLI, or one line saying which extra it needs."""

import sys


def main() -> None:
    """Run the console CLI; on an SDK-only install, say how to get it instead of a traceback."""
    try:
        from keytrail.console.cli import main as console_main
    except ModuleNotFoundError as missing:
        sys.exit(
            "keytrail: the command line needs the console's dependencies, which the SDK install leaves out: "
            f"pip install 'keytrail[server]' (or '[worker]', '[all]'); missing module: {missing.name}"
        )
    console_main()
