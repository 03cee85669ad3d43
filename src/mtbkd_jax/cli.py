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
    experiment = commands.add_parser("experiment", help="run one of the paper's experiments")
    experiment.add_argument("name", choices=["digits", "synthetic", "deeploc", "fashion-mnist"])
    experiment.add_argument("--out", required=True, help="folder for metrics.json and figures")
    experiment.add_argument("--seed", type=int, default=0)
    experiment.add_argument("--smoke", action="store_true", help="tiny settings (tests)")
    experiment.add_argument("--data", default=None, help="data folder (deeploc, fashion-mnist)")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from mtbkd_jax.demo import DemoSettings, run_demo

        settings = DemoSettings.quick(args.seed) if args.quick else DemoSettings(seed=args.seed)
        run_demo(args.out, settings, progress=not args.no_progress)
    elif args.command == "experiment":
        from mtbkd_jax.experiments import run_experiment

        run_experiment(args.name, args.out, smoke=args.smoke, seed=args.seed, data_path=args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
