"""``dermbridge model train-demo|show``: the demonstration model and the cards of configured models."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path


def model_command(args: argparse.Namespace) -> int:
    logging.basicConfig(level="INFO", format="%(message)s")
    if args.action == "train-demo":
        from inference.demo import DEMO_DIR, train_demo

        out = Path(args.out) if args.out else DEMO_DIR
        card = train_demo(out, epochs=args.epochs)
        print(f"wrote {card.id} {card.version} to {out}")
        for row in card.performance:
            print(f"  {row['subgroup']}: {row['metric']} {row['value']}")
        return 0
    from inference.registry import ModelRegistry

    registry = ModelRegistry.load([Path(p) for p in args.path] or None)
    for model in registry.models:
        print(json.dumps({"source": str(model.source), **model.card.to_dict()}, indent=2))
    return 0


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    model = commands.add_parser("model", help="train the demo model, or show the model cards")
    model.add_argument("action", choices=["train-demo", "show"])
    model.add_argument("path", nargs="*", help="show: models to load (default: the demo model)")
    model.add_argument("--out", help="train-demo: where to write the bundle (default: the shipped one)")
    model.add_argument("--epochs", type=int, default=16)
    model.set_defaults(func=model_command)
