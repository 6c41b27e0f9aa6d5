"""Packaged recipes: per-dataset preprocessing and GPU-scale training configs (`configs/recipes/`).

`recipe:NAME` names a packaged config wherever the CLI takes one (`mammokit train recipe:rsna`, `mammokit preprocess
... --config recipe:rsna`); `python -m mammokit.recipes list` prints them. One store per dataset: training splits it
by patient (`data.split_source`, `val_fraction`, `test_fraction`) and records the split in runs/NAME/splits.csv,
which `calibrate --split val` and `evaluate --split test` read (docs/datasets.md, "Recipes").
"""

from __future__ import annotations

import sys
from pathlib import Path

from mammokit.errors import InvalidInputError

RECIPES_DIR = Path(__file__).parent / "configs" / "recipes"
KINDS = ("preprocess", "train")
PREFIX = "recipe:"


def list_recipes(kind: str = "train") -> list[str]:
    """Names of the packaged recipes of one kind ("train" or "preprocess")."""
    if kind not in KINDS:
        raise InvalidInputError(f"recipe kind {kind!r}: choose one of {', '.join(KINDS)}")
    return sorted(p.stem.partition("_")[2] for p in RECIPES_DIR.glob(f"{kind}_*.yaml"))


def recipe_path(name: str, kind: str = "train") -> Path:
    """The packaged YAML of recipe `name` (e.g. "rsna"); an unknown name is an error listing the known ones."""
    path = RECIPES_DIR / f"{kind}_{name}.yaml"
    if kind not in KINDS or not path.is_file():
        raise InvalidInputError(f"no {kind} recipe {name!r}; the {kind} recipes are: {', '.join(list_recipes(kind))}")
    return path


def resolve_config(config: str | Path | None, kind: str) -> Path | None:
    """A config argument as a file: `recipe:NAME` is the packaged recipe, anything else is returned as given."""
    text = str(config) if config is not None else ""
    if not text.startswith(PREFIX):
        return Path(config) if config is not None else None
    return recipe_path(text[len(PREFIX):], kind)


def main(argv: list[str] | None = None) -> None:
    """`python -m mammokit.recipes [list]`: the packaged recipes and their files."""
    if (sys.argv[1:] if argv is None else argv) not in ([], ["list"]):
        raise SystemExit("usage: python -m mammokit.recipes [list]")
    for kind in KINDS:
        for name in list_recipes(kind):
            print(f"{kind:10s} recipe:{name:16s} {recipe_path(name, kind)}")


if __name__ == "__main__":  # pragma: no cover
    main()
