"""Write :mod:`indexer.tables`, the Core mirror of the SQLModel models.

    python -m indexer.tables_gen           # rewrite indexer/tables.py
    python -m indexer.tables_gen --check   # exit 1 if indexer/tables.py is not current

The models (:mod:`indexer.models`, :mod:`gateway.models`) stay the one place the schema is
declared; the mirror is rendered from their metadata, table by table, so that the indexing
processes reach the tables without importing SQLModel and the ORM under it (0.3 s of every
``corlens index`` start). tests/test_migrations.py checks that the file is current and that
every table and index renders the same DDL from both, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

TARGET = Path(__file__).resolve().parent / "tables.py"
HEADER = '''"""The indexer's and the gateway's tables in SQLAlchemy Core, named as their models.

Generated from the models by ``python -m indexer.tables_gen``: do not edit. The indexing
processes use these rather than the models, which load SQLModel and the ORM.
"""

from __future__ import annotations

import sqlalchemy as sa

from indexer.schema import BigId, UtcDateTime

metadata = sa.MetaData()
'''
PLAIN_TYPES = {
    "BigInteger": "sa.BigInteger()",
    "Integer": "sa.Integer()",
    "Boolean": "sa.Boolean()",
    "Float": "sa.Float()",
    "JSON": "sa.JSON()",
    "Text": "sa.Text()",
    "AutoString": "sa.String()",
    "String": "sa.String()",
    "UTCDateTime": "UtcDateTime()",
}


def _type(t: Any) -> str:
    name = type(t).__name__
    variants = getattr(t, "_variant_mapping", None)
    if variants:
        if name == "BigInteger" and {k: type(v).__name__ for k, v in variants.items()} == {
            "sqlite": "Integer"
        }:
            return "BigId"
        raise SystemExit(f"tables_gen: no rendering for the variant type {t!r}")
    if name not in PLAIN_TYPES or getattr(t, "length", None):
        raise SystemExit(f"tables_gen: no rendering for the column type {t!r}")
    return PLAIN_TYPES[name]


def _column(c: sa.Column[Any]) -> str:
    args = [repr(c.name), _type(c.type)]
    if c.primary_key:
        args.append("primary_key=True")
    args.append(f"nullable={c.nullable}")
    if c.default is not None:
        if not getattr(c.default, "is_scalar", False):
            raise SystemExit(f"tables_gen: no rendering for the default of {c}")
        args.append(f"default={getattr(c.default, 'arg', None)!r}")
    if c.server_default is not None or c.autoincrement != "auto":
        raise SystemExit(f"tables_gen: no rendering for {c}'s server default or autoincrement")
    return f"    sa.Column({', '.join(args)}),"


def _model_names() -> dict[str, str]:
    from sqlmodel import SQLModel

    return {
        str(getattr(m, "__tablename__")): m.__name__  # noqa: B009
        for m in _subclasses(SQLModel)
        if hasattr(m, "__table__")
    }


def _subclasses(cls: type) -> list[type]:
    subs: list[type] = cls.__subclasses__()
    out: list[type] = []
    for sub in subs:
        out += [sub, *_subclasses(sub)]
    return out


def render() -> str:
    from sqlmodel import SQLModel

    import gateway.models  # noqa: F401  (registers the gateway's tables)
    import indexer.models  # noqa: F401  (registers the indexer's tables)

    names = _model_names()
    parts = [HEADER]
    for t in SQLModel.metadata.sorted_tables:
        lines = [f"{names[t.name]} = sa.Table(", f"    {t.name!r},", "    metadata,"]
        lines += [_column(c) for c in t.columns]
        for k in sorted(t.constraints, key=lambda k: str(k.name)):
            if isinstance(k, sa.PrimaryKeyConstraint):
                continue
            if not isinstance(k, sa.UniqueConstraint):
                raise SystemExit(f"tables_gen: no rendering for the constraint {k!r}")
            cols = ", ".join(repr(c.name) for c in k.columns)
            lines.append(f"    sa.UniqueConstraint({cols}, name={k.name!r}),")
        for i in sorted(t.indexes, key=lambda i: str(i.name)):
            cols = ", ".join(repr(c.name) for c in i.columns)
            unique = ", unique=True" if i.unique else ""
            lines.append(f"    sa.Index({i.name!r}, {cols}{unique}),")
        lines.append(")")
        parts.append("\n" + "\n".join(lines) + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if indexer/tables.py is stale")
    a = p.parse_args(argv)
    text = render()
    current = TARGET.read_text() if TARGET.exists() else ""
    if a.check:
        if current != text:
            print(f"stale: {TARGET} (run `python -m indexer.tables_gen`)", file=sys.stderr)
            return 1
        return 0
    if current != text:
        TARGET.write_text(text)
        print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
