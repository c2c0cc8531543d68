"""The ``thresher`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from thresher import inputs
from thresher.atomic import human_bytes
from thresher.pathcheck import check_directory, check_output_file, check_readable_file, describe_os_error

if TYPE_CHECKING:
    from thresher.recipe import Recipe

T = TypeVar("T")

NETWORK_HELP = "where to fetch from, and what to trust"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if not args.quiet else logging.WARNING,
                        format="thresher: %(message)s", stream=sys.stderr)
    from thresher.conversion import interrupt
    from thresher.errors import ThresherError

    try:
        with interrupt.remembered():
            status = args.run(args) or 0
            interrupt.check()  # one that Python swallowed after the last unit of work
            return status
    except (ThresherError, KeyError, ValueError, OSError) as exc:
        if isinstance(exc, OSError):
            message = describe_os_error(exc)
        else:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"thresher: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("thresher: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thresher", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("list", help="recipes with splits, sizes and whether a manual download is needed")
    p.set_defaults(run=cmd_list)

    p = commands.add_parser("info", help="description, homepage, license, citation, sources, schema")
    _name_argument(p)
    p.set_defaults(run=cmd_info)

    p = commands.add_parser("download", help="download and verify a recipe's files")
    _name_argument(p)
    _root_option(p)
    _network_options(p)
    p.set_defaults(run=cmd_download)

    p = commands.add_parser("prepare", help="download, verify and convert into shards")
    _name_argument(p)
    _root_option(p)
    _network_options(p)
    p.add_argument("--format", default="lmdb", choices=("lmdb", "minidb", "hdf5"))
    p.add_argument("--codec", choices=("datum", "tensorprotos"),
                   help="value encoding for lmdb/minidb (default: datum for image+label, else tensorprotos)")
    p.add_argument("--splits", nargs="+", help="only these splits (default: all)")
    p.add_argument("--workers", type=_workers, default=1,
                   help="conversion processes, or auto for one per usable core (default 1; output is the same for any N)")
    p.add_argument("--executor", choices=("local", "dask"), default="local",
                   help="dask: one task per shard on a Dask cluster (same output as local)")
    p.add_argument("--scheduler", help="Dask scheduler address for --executor dask, e.g. tcp://host:8786")
    p.add_argument("--shard-size", type=_size, default=None, help="target shard size, e.g. 512M, 1G (default 1G)")
    p.add_argument("--resize", type=_resize,
                   help="HxW: decode and resize images like convert_imageset; short=N: the shorter side to N, "
                        "aspect kept; none: keep them as published (default: the recipe's, as its Caffe tool "
                        "makes, else none)")
    p.add_argument("--resampler", choices=("pillow", "opencv"), default="pillow",
                   help="pillow (default): antialiased bilinear; opencv: INTER_LINEAR as convert_imageset "
                        "(pip install 'thresher[opencv]')")
    p.add_argument("--image-encoding", choices=("asis", "raw", "jpeg", "png"), default="asis",
                   help="asis keeps images as published (raw after --resize)")
    p.add_argument("--audio-encoding", choices=("raw", "flac"), default="raw")
    p.add_argument("--channel-order", choices=("RGB", "BGR"), help="override the Caffe tool's order for raw pixels")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed records, count them in the manifest")
    p.add_argument("--verify", action="store_true",
                   help="re-hash an existing output before trusting it (rewrites damaged shards)")
    _own_files_options(p)
    p.set_defaults(run=cmd_prepare)

    p = commands.add_parser("mean", help="the mean image of a prepared split: mean.binaryproto, mean.npy, mean.json")
    p.add_argument("path", type=Path, help="a split directory")
    p.add_argument("-o", "--output", type=Path, help="where to write the three files (default: the split directory)")
    p.add_argument("--field", help="the image field to average (default: the split's only image field)")
    p.set_defaults(run=cmd_mean)

    p = commands.add_parser("verify", help="re-hash every shard and decode every record")
    p.add_argument("path", type=Path)
    p.add_argument("--no-decode", action="store_true", help="only re-hash")
    p.set_defaults(run=cmd_verify)

    p = commands.add_parser("inspect", help="schema, counts and the first records")
    p.add_argument("path", type=Path)
    p.add_argument("-n", type=int, default=3, help="records to show per split")
    p.set_defaults(run=cmd_inspect)

    p = commands.add_parser("relocate", help="after moving an output: rewrite the shard lists that name it "
                                             "by absolute path (HDF5 files.txt)")
    p.add_argument("path", type=Path, help="a format directory (or one split directory) at its new place")
    p.set_defaults(run=cmd_relocate)

    p = commands.add_parser("show", help="a contact sheet of images (or waveform strips) with labels")
    p.add_argument("path", type=Path, help="a split directory")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("-n", type=int, default=32)
    p.set_defaults(run=cmd_show)

    p = commands.add_parser("checksums", help="hash the downloaded files, in the --checksums file format")
    _name_argument(p)
    _root_option(p)
    p.add_argument("--download-dir", type=Path)
    p.add_argument("--update", action="store_true", help="accept changed upstream files as the new record")
    p.set_defaults(run=cmd_checksums)
    return parser


def _name_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME[/VARIANT]",
                   help="a recipe from `thresher list`; NAME alone is its default variant")


def _root_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=Path(os.environ.get("THRESHER_ROOT", "datasets")),
                   help="data root (default ./datasets, or $THRESHER_ROOT)")


def _own_files_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("your own files (the images recipe)")
    g.add_argument("--source", help="the folder of images")
    g.add_argument("--list", help="a list file of 'relative/path label' lines (default: one subfolder per class)")
    g.add_argument("--split-name", help="the split's name (default: the list file's name, else train)")
    g.add_argument("--name", dest="output_name",
                   help="the output's name under ROOT/images/ (default: the folder's name, then '-' and the list's)")
    g = p.add_argument_group("a recipe's hold-out (imagenet/21k, which has no published split)")
    g.add_argument("--holdout", metavar="N", help="photos held out of each class for validation (default 50)")
    g.add_argument("--seed", metavar="TEXT", help="the seed of the hold-out's hash of member names")


def _recipe_arguments(args: argparse.Namespace) -> dict[str, str]:
    """The ``--source/--list/--split-name/--name/--holdout/--seed`` given, as the arguments a recipe receives."""
    given = {"source": args.source, "list": args.list, "split_name": args.split_name, "name": args.output_name,
             "holdout": args.holdout, "seed": args.seed}
    return {key: value for key, value in given.items() if value is not None}


def _network_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(NETWORK_HELP)
    g.add_argument("--mirror", default=os.environ.get("THRESHER_MIRROR"),
                   help="base URL tried first as BASE/<name>/<filename> (also $THRESHER_MIRROR)")
    g.add_argument("--offline", action="store_true", help="never contact a host other than the mirror")
    g.add_argument("--checksums", type=Path, help="TSV filename<TAB>size<TAB>sha256 overriding the recipe's")
    g.add_argument("--download-dir", type=Path, help="where source files are (files placed by hand are used)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)


def _argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a parser of :mod:`thresher.inputs`: its ValueError becomes the usage error."""
    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


_workers = _argument(inputs.parse_workers)
_size = _argument(inputs.parse_size)
_resize = _argument(inputs.parse_resize_option)


def _downloads(args: argparse.Namespace) -> Path:
    """``--download-dir``, or ``ROOT/NAME/downloads``, which every variant of NAME shares."""
    return args.download_dir or args.root / args.name.partition("/")[0] / "downloads"


def _resolve(args: argparse.Namespace, *, usable: bool) -> Recipe:
    """The recipe ``args.name`` asks for; ``args.name`` becomes its full ``NAME/VARIANT`` key.

    ``usable``: refuse now, before any download, when the recipe's optional modules are missing.
    """
    from thresher import registry

    recipe = registry.usable_recipe(args.name) if usable else registry.get_recipe(args.name)
    args.name = recipe.key
    return recipe


def _check_fetch_paths(args: argparse.Namespace) -> None:
    """Before any download: the download directory can be written and ``--checksums`` read."""
    check_directory(_downloads(args), "--download-dir" if args.download_dir else "--root")
    if args.checksums is not None:
        check_readable_file(args.checksums, "--checksums")


def cmd_list(args: argparse.Namespace) -> int:
    from thresher.registry import broken_recipes, editions

    rows = [("name", "splits", "download", "manual", "")]
    for recipe in editions():
        default = recipe.variant is not None and recipe.variant == recipe.default_variant
        name = recipe.key + (" (default)" if default else "")
        if recipe.parameters:  # the user's own files: nothing to count or download before they are named
            first = recipe.parameters[0].replace("_", "-")
            rows.append((name, f"your own files (--{first} DIR, see info)", "none", "no", recipe.install_hint()))
            continue
        splits = ", ".join(f"{s.name} {s.num_records:,}" for s in recipe.splits)
        rows.append((name, splits, human_bytes(recipe.download_size),
                     "yes" if recipe.needs_manual_download else "no", recipe.install_hint()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for broken in broken_recipes():
        print(f"{broken.name}  BROKEN, cannot be loaded ({broken.module}): {broken.reason}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    print(info_text(_resolve(args, usable=False)))
    return 0


def info_text(recipe: Recipe) -> str:
    plain = [f"{recipe.name} (default)"] if recipe.variants and recipe.default_variant is None else []
    variants = ", ".join(plain + [f"{recipe.name}/{v.name}" + (" (default)" if v.name == recipe.default_variant else "")
                                  + (f": {v.description}" if v.description else "") for v in recipe.variants])
    lines = [
        f"{recipe.key} {recipe.version}: {recipe.title}",
        "",
        textwrap.fill(recipe.description, 100, break_on_hyphens=False),
        "",
        f"homepage: {recipe.homepage}",
        f"license:  {recipe.license}",
        *([f"variants: {variants}"] if variants else []),
        *([f"needs:    {', '.join(recipe.requires)} (pip install 'thresher[{recipe.extra}]')"
           if recipe.extra else f"needs:    {', '.join(recipe.requires)}"] if recipe.requires else []),
        *([f"missing here: {recipe.install_hint()}"] if recipe.install_hint() else []),
        f"manual download: {'yes' if recipe.needs_manual_download else 'no'}",
        f"default codec: {recipe.default_codec}; channel order of raw pixels: {recipe.channel_order}",
        "",
        "splits:",
        *(f"  {s.name}: {s.num_records:,} records" + (f" ({s.description})" if s.description else "")
          for s in recipe.splits),
        "",
        "schema:",
        *(f"  {line}" for line in recipe.schema.describe()),
        *(line for split, schema in recipe.own_split_schemas.items()
          for line in ("", f"schema of {split}:", *(f"  {x}" for x in schema.describe()))),
        "",
        "sources:",
    ]
    for s in recipe.sources:
        lines.append(f"  {s.filename}: {human_bytes(s.size) if s.size else 'size not published'}")
        lines.append(f"    sha256 {s.sha256 or '-'}  md5 {s.md5 or '-'}")
        lines.append(f"    checksums from: {s.checksum_source}")
        for url in s.urls:
            lines.append(f"    {url}")
        if s.alternative:
            lines.append(f"    or, in its place, {s.alternative} (another published form; used when only it is placed)")
    citation = "\n".join(textwrap.fill(entry, 100, subsequent_indent="    ", break_on_hyphens=False) for entry in recipe.citation.splitlines())
    lines += ["", "citation:", citation or "  (none given by the publisher)"]
    return "\n".join(lines)


def cmd_download(args: argparse.Namespace) -> int:
    from thresher.acquire import download

    recipe = _resolve(args, usable=True)
    _check_fetch_paths(args)
    files = download(recipe, _downloads(args), mirror=args.mirror, offline=args.offline,
                     checksums=args.checksums, progress=args.progress)
    for _, path in sorted(files.items()):
        print(f"{path}  {path.stat().st_size:,} bytes")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from thresher.conversion.upfront import DEFAULT_SHARD_SIZE, prepare
    from thresher.options import ConvertOptions

    arguments = _recipe_arguments(args)
    recipe = _resolve(args, usable=True).with_arguments(arguments)
    check_directory(args.root / recipe.directory / args.format, "--root")
    _check_fetch_paths(args)
    resize = recipe.default_resize if args.resize is None else args.resize or None
    short = resize if isinstance(resize, int) else None
    options = ConvertOptions(image_encoding=args.image_encoding, resize=None if short else resize,
                             resize_short=short, resampler=args.resampler,
                             audio_encoding=args.audio_encoding, channel_order=args.channel_order)
    manifest = prepare(
        args.name, root=args.root, format=args.format, codec=args.codec, splits=args.splits, options=options,
        mirror=args.mirror, offline=args.offline, checksums=args.checksums, download_dir=args.download_dir,
        shard_size=DEFAULT_SHARD_SIZE if args.shard_size is None else args.shard_size, verify=args.verify,
        progress=args.progress, workers=args.workers, skip_bad=args.skip_bad, executor=args.executor,
        scheduler=args.scheduler, arguments=arguments,
    )
    print(manifest.summary())
    return 0


def cmd_mean(args: argparse.Namespace) -> int:
    from thresher.mean import compute_mean

    print(compute_mean(args.path, output=args.output, field=args.field).summary())
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from thresher.verify import verify

    report = verify(args.path, decode=not args.no_decode)
    for problem in report.problems:
        print(f"FAIL {problem}")
    for warning in report.warnings:
        print(f"WARNING {warning}")
    state = "OK" if report.ok else f"{len(report.problems)} problem(s)"
    print(f"{report.directory}: {report.files} files hashed, {report.records:,} records decoded: {state}")
    return 0 if report.ok else 1


def cmd_inspect(args: argparse.Namespace) -> int:
    from thresher.verify import inspect_text

    print(inspect_text(args.path, first=args.n))
    return 0


def cmd_relocate(args: argparse.Namespace) -> int:
    from thresher.relocate import relocate

    written = relocate(args.path)
    for path in written:
        print(f"rewrote {path}")
    if not written:
        print(f"{args.path}: nothing to rewrite; this format names no shard by absolute path")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import thresher
    from thresher.show import contact_sheet

    check_output_file(args.output, "-o")
    dataset = thresher.open(args.path)
    print(contact_sheet(dataset, args.output, count=args.n))
    return 0


def cmd_checksums(args: argparse.Namespace) -> int:
    from thresher.fetch.downloader import accept_current_files, compute_checksums, format_checksums

    recipe = _resolve(args, usable=False)
    directory = _downloads(args)
    check_directory(directory, "--download-dir" if args.download_dir else "--root", writable=args.update)
    filenames = [s.filename for s in recipe.sources_to_get(directory)]
    if args.update:
        rows = accept_current_files(directory, filenames)
        print(f"thresher: recorded these as the trusted checksums in {directory / 'checksums.tsv'}",
              file=sys.stderr)
    else:
        rows = compute_checksums(directory, filenames)
    sys.stdout.write(format_checksums(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
