"""The ``mtbkd`` command."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtbkd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="distil three teachers into an MLP on digits")
    demo.add_argument("--out", default=None, help="folder for metrics.json, posterior.nc, PNG")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    demo.add_argument("--no-progress", action="store_true", help="no progress output")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from mtbkd_jax.demo import DemoSettings, run_demo

        settings = DemoSettings.quick(args.seed) if args.quick else DemoSettings(seed=args.seed)
        run_demo(args.out, settings, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
