"""Per-record options applied between recipe and codec: decode, resize, re-encode, FLAC.

Each feature says how the options change it (:meth:`Feature.stored`) and converts its values
(:meth:`Feature.convert`). These run in worker processes, so they are plain functions of
(record, plan). What they
produce is fixed by the options alone, never by which worker ran them, so output bytes
are the same for any worker count.
"""

from __future__ import annotations

from thresher.features import Feature, Schema
from thresher.options import ConvertOptions
from thresher.recipe import BadRecord, Record

__all__ = ["ConvertOptions", "apply", "needs_work", "output_field", "output_schema"]  # ConvertOptions: its old home


def output_field(f: Feature, options: ConvertOptions) -> Feature:
    """The field as it will be stored once the options are applied (the feature decides)."""
    return f.stored(options)


def output_schema(schema: Schema, options: ConvertOptions) -> Schema:
    return Schema(tuple(output_field(f, options) for f in schema))


def needs_work(schema: Schema, options: ConvertOptions) -> bool:
    """True when some field changes form, i.e. records must pass through :func:`apply`."""
    return output_schema(schema, options) != schema


def apply(record: Record, source: Schema, target: Schema, options: ConvertOptions, where: str) -> Record | BadRecord:
    """Turn a record from the recipe's form into the stored form; bad content becomes a BadRecord."""
    from PIL import Image

    out = dict(record)
    for before, after in zip(source, target, strict=True):
        if before == after:
            continue
        try:
            out[before.name] = before.convert(record[before.name], record, after, options)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            return BadRecord(where, before.name, f"cannot convert {before.kind}: {exc}")
    return out
