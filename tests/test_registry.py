"""The registry on a fake recipe package on a temporary path: broken modules, missing extras, variants."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from server import LoopbackServer

import thresher
from thresher import registry
from thresher.miniature import write_checksums

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
PACKAGE = "fake_thresher_recipes"
HEAVY = ("numpy", "requests", "urllib3", "tqdm", "lmdb", "h5py", "PIL", "scipy", "soundfile", "google.protobuf",
         "dask")
NEEDY = '''
from thresher.recipe import Recipe, Source, Split
from thresher.schema import Field, Schema


class Needy(Recipe):
    name = "needy"
    requires = ("no_such_module_for_thresher",)
    extra = "needy"
    sources = (Source("needy.bin", ("http://127.0.0.1:9/needy.bin",)),)
    splits = (Split("train", 1),)
    schema = Schema((Field("label", "int"),))

    def records(self, split, files):
        import no_such_module_for_thresher  # noqa: F401 - the optional module, imported only here
        yield {"label": 0}


RECIPE = Needy()
'''


@pytest.fixture
def fake_package(tmp_path: Path) -> Path:
    """A recipe package outside the project: one broken module, one recipe needing a missing module, duo."""
    package = tmp_path / "pkgs" / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "broken.py").write_text("import no_such_module_at_all_for_thresher\n")
    (package / "needy.py").write_text(NEEDY)
    shutil.copy(HERE / "recipe_fixtures" / "duo.py", package / "duo.py")
    return package.parent


@pytest.fixture
def env(fake_package: Path) -> dict[str, str]:
    """The environment of a process that sees the fake package."""
    path = os.pathsep.join([str(fake_package), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, registry.PACKAGES_VARIABLE: PACKAGE}


@pytest.fixture
def here(fake_package: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process sees the fake package (the registry forgets it afterwards)."""
    monkeypatch.syspath_prepend(str(fake_package))
    monkeypatch.setenv(registry.PACKAGES_VARIABLE, PACKAGE)
    registry.reset()
    yield
    registry.reset()


def cli(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thresher.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture
def duo_mirror(tmp_path: Path, here: None) -> Iterator[tuple[LoopbackServer, dict[str, Path]]]:
    """Both variants' files on a loopback mirror as ``duo/<file>``, and a --checksums file per variant."""
    served = tmp_path / "www" / "duo"
    served.mkdir(parents=True)
    checksums = {}
    for variant in ("a", "b"):
        miniature = registry.get_recipe(f"duo/{variant}").write_miniature(served)
        checksums[variant] = write_checksums(miniature.files, tmp_path / f"duo-{variant}.tsv")
    with LoopbackServer(tmp_path / "www", name="mirror") as srv:
        yield srv, checksums


def test_list_shows_every_recipe_despite_a_broken_module_and_a_missing_extra(env: dict[str, str]) -> None:
    proc = cli(env, "list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for name in ("mnist", "cifar10", "flowers102", "an4"):
        assert any(line.startswith(f"{name} ") for line in lines), proc.stdout
    assert any(line.startswith("duo/a (default) ") for line in lines), proc.stdout
    assert any(line.startswith("duo/b ") and "train 1, test 2" in line for line in lines), proc.stdout
    needy = next(line for line in lines if line.startswith("needy "))
    assert needy.endswith("needy needs no_such_module_for_thresher: pip install 'thresher[needy]'")
    broken = next(line for line in lines if line.startswith("broken "))
    assert f"({PACKAGE}.broken)" in broken and "no_such_module_at_all_for_thresher" in broken


def test_list_imports_nothing_heavy() -> None:
    code = ("import sys, contextlib, io\nfrom thresher.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['list'])\n"
            f"print(' '.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "", f"`thresher list` imported {proc.stdout.strip()}"


def test_prepare_with_a_missing_extra_fails_at_once_naming_what_to_install(env: dict[str, str], tmp_path: Path
                                                                          ) -> None:
    with LoopbackServer(tmp_path / "www", name="mirror") as srv:
        proc = cli(env, "prepare", "needy", "--root", tmp_path / "root", "--mirror", srv.url)
        assert srv.requests == []
    assert proc.returncode == 1
    assert proc.stderr.strip() == "thresher: error: needy needs no_such_module_for_thresher: pip install 'thresher[needy]'"
    assert not (tmp_path / "root" / "needy").exists()
    assert cli(env, "info", "needy").returncode == 0  # facts still shown


def test_a_broken_recipe_is_named_with_its_reason(env: dict[str, str]) -> None:
    proc = cli(env, "prepare", "broken")
    assert proc.returncode == 1
    assert "recipe 'broken' cannot be loaded" in proc.stderr and "no_such_module_at_all_for_thresher" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_variant_prepares_into_its_own_directory_from_cli_and_api(
        duo_mirror: tuple[LoopbackServer, dict[str, Path]], env: dict[str, str], tmp_path: Path) -> None:
    srv, checksums = duo_mirror
    root = tmp_path / "root"
    proc = cli(env, "prepare", "duo/b", "--root", root, "--mirror", srv.url, "--offline",
               "--checksums", checksums["b"])
    assert proc.returncode == 0, proc.stderr
    ds = thresher.open(root / "duo" / "b" / "lmdb" / "test")
    assert [ds[i] for i in range(len(ds))] == [{"label": 6, "text": "six"}, {"label": 7, "text": "seven"}]
    assert (root / "duo" / "downloads" / "duo-b.txt").is_file()  # every variant's files in ROOT/NAME/downloads
    assert not (root / "duo" / "b" / "downloads").exists()

    manifest = thresher.prepare("duo", root=root, format="hdf5", mirror=srv.url, offline=True,
                                checksums=checksums["a"])  # NAME alone: the default variant, a
    assert manifest.recipe == "duo/a" and manifest.splits["train"].records == 3
    ds = thresher.open(root / "duo" / "a" / "hdf5" / "train")
    assert [ds[i]["text"] for i in range(len(ds))] == ["one", "two", "three"]
    assert not (root / "duo" / "lmdb").exists() and not (root / "duo" / "hdf5").exists()
    assert sorted(p.name for p in (root / "duo" / "downloads").glob("duo-*.txt")) == ["duo-a.txt", "duo-b.txt"]
    assert "\nduo-a.txt\t" in cli(env, "checksums", "duo/a", "--root", root).stdout  # the CLI finds it there too
    again = cli(env, "prepare", "duo/b", "--root", root, "--mirror", srv.url, "--offline", "--checksums", checksums["b"])
    assert "already prepared" in again.stdout, again.stdout + again.stderr  # the CLI's no-op path finds them too
    assert not (root / "duo" / "b" / "downloads").exists()


def test_unknown_variant_and_variants_in_info(env: dict[str, str]) -> None:
    proc = cli(env, "prepare", "duo/c")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "thresher: error: duo has no variant 'c'; it has duo/a, duo/b"
    assert cli(env, "info", "mnist/x").stderr.strip() == (
        "thresher: error: mnist has no variants; ask for it as 'mnist'")
    info = cli(env, "info", "duo/b").stdout
    assert info.startswith("duo/b 1.0.0: ")
    assert "variants: duo/a (default): the first edition, duo/b: the second edition" in info
    assert "test: 2 records" in info


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_target_with_a_variant(duo_mirror: tuple[LoopbackServer, dict[str, Path]], env: dict[str, str],
                                    tmp_path: Path) -> None:
    srv, checksums = duo_mirror
    args = f"--root {tmp_path / 'root'} --mirror {srv.url} --offline --checksums {checksums['b']} --format minidb"
    proc = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "duo/b"], capture_output=True,
                          text=True, timeout=600, env={**env, "ARGS": args})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "duo/b (minidb" in proc.stdout
    assert len(thresher.open(tmp_path / "root" / "duo" / "b" / "minidb" / "train")) == 1


PLAIN = '''
from thresher.recipe import Recipe, Source, Split, Variant
from thresher.schema import Field, Schema


class Plain(Recipe):
    name = "plain"
    plain_edition = True
    sources = (Source("plain.txt", ("http://127.0.0.1:9/plain.txt",)),)
    splits = (Split("train", 1),)
    schema = Schema((Field("label", "int"),))
    variants = (Variant({variant!r}, "more", schema=Schema((Field("label", "int"), Field("text", "str")))),)


RECIPE = Plain()
'''


def add_plain(fake_package: Path, variant: str, *, plain: bool = True) -> None:
    """The fake package with recipe ``plain`` in it, as this process's registry sees it from now on."""
    text = PLAIN.format(variant=variant).replace("plain_edition = True", f"plain_edition = {plain}")
    (fake_package / PACKAGE / "plain.py").write_text(text)
    for module in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[module]  # an earlier test's package, from another temporary directory
    importlib.invalidate_caches()
    registry.reset()


@pytest.mark.parametrize(("variant", "plain", "broken"), [
    ("extra", True, False), ("downloads", True, True), ("lmdb", True, True), ("hdf5", True, True),
    ("downloads", False, True), ("lmdb", False, False)])
def test_variant_names_that_would_share_a_directory_are_refused(fake_package: Path, here: None, variant: str,
                                                                plain: bool, broken: bool) -> None:
    add_plain(fake_package, variant, plain=plain)
    problems = [b.reason for b in registry.broken_recipes() if b.name == "plain"]
    if broken:
        assert problems == [f"recipe 'plain' has a variant named {variant!r}, which cannot be a directory beside "
                            + ("downloads, lmdb, minidb, hdf5" if plain else "downloads")]
    else:
        assert problems == [] and registry.get_recipe(f"plain/{variant}").key == f"plain/{variant}"


def test_plain_name_is_the_plain_edition_beside_named_variants(fake_package: Path, here: None) -> None:
    add_plain(fake_package, "extra")
    plain = registry.get_recipe("plain")
    assert (plain.key, plain.variant, plain.default_variant, plain.schema.names) == ("plain", None, None, ("label",))
    extra = registry.get_recipe("plain/extra")
    assert (extra.key, extra.variant, extra.schema.names) == ("plain/extra", "extra", ("label", "text"))
    assert plain.edition_names == (None, "extra") and [e.key for e in plain.editions()] == ["plain", "plain/extra"]
    assert [e.key for e in registry.editions() if e.name == "plain"] == ["plain", "plain/extra"]
    with pytest.raises(KeyError, match="plain has no variant 'x'; it has plain, plain/extra"):
        registry.get_recipe("plain/x")
    duo = registry.get_recipe("duo")  # without a plain edition NAME alone is still the first variant
    assert (duo.key, duo.default_variant, duo.edition_names) == ("duo/a", "a", ("a", "b"))


def test_list_info_and_catalog_show_a_plain_edition(fake_package: Path, env: dict[str, str], here: None) -> None:
    add_plain(fake_package, "extra")
    lines = cli(env, "list").stdout.splitlines()
    assert [line.split()[0] for line in lines if line.startswith("plain")] == ["plain", "plain/extra"]
    assert not any(line.startswith("plain") and "(default)" in line for line in lines)
    assert "variants: plain (default), plain/extra: more" in cli(env, "info", "plain").stdout
    info = cli(env, "info", "plain/extra").stdout
    assert info.startswith("plain/extra 1.0.0") and "\n  text" in info

    from thresher import catalog

    rows = [line for line in catalog.render().splitlines() if line.startswith("| `plain")]
    assert [row.split("|")[1:3] for row in rows] == [[" `plain` ", " none (default), extra "],
                                                      [" `plain/extra` ", " none (default), extra "]]
