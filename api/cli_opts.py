"""Options every ``corlens`` command spells the same way (typer annotations, no imports of the
commands themselves, so command modules can share them without importing :mod:`api.cli`)."""

from __future__ import annotations

from typing import Annotated

import typer

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="YAML config file (default: $CORLENS_CONFIG, then ./corlens.yaml)"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
