"""What the import-linter contracts cannot express (LAYOUT.md §4.5): start-up stays light,
nothing imports the package root, the public names resolve, every error lives in
mlvc.errors, and every CLI command shows an example."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import click
import pytest

import mlvc

HEAVY = ("duckdb", "pyarrow", "numpy", "pandas")


def _loaded_after(code: str) -> set[str]:
    """The modules loaded by ``code`` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_importing_the_cli_loads_no_heavy_module():
    loaded = _loaded_after("import mlvc.cli")
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_mlvc_help_loads_no_heavy_module_and_no_repository_code():
    loaded = _loaded_after(
        "from mlvc.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
    )
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    # the commands import the library when they run, not when they are listed
    assert "mlvc.api.repo" not in loaded and "mlvc.store.odb" not in loaded


def test_a_low_layer_runs_nothing_else_of_the_library():
    loaded = _loaded_after("import mlvc.core.ids")
    assert {m for m in loaded if m.split(".")[0] == "mlvc"} == {
        "mlvc",
        "mlvc._version",
        "mlvc.core",
        "mlvc.core.ids",
    }


def test_no_module_imports_the_package_root():
    """``mlvc/__init__.py`` resolves the public names from the layers; a module that
    imported it back (for ``__version__``, say) would tie every layer to every other."""
    import grimp

    graph = grimp.build_graph("mlvc")
    assert graph.find_modules_that_directly_import("mlvc") <= {"mlvc.__main__"}


@pytest.mark.parametrize("package", ["mlvc", "mlvc.models"])
def test_every_public_name_resolves(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


def _all_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(mlvc.__path__, "mlvc."):
        if info.name != "mlvc.__main__":  # runs the CLI
            names.append(info.name)
    return names


def test_every_error_class_of_every_module_is_defined_in_mlvc_errors():
    """tests/test_errors.py checks the classes of the modules a test happens to import;
    this imports every module first, so a stray class anywhere is found."""
    from mlvc.errors import error_classes

    for name in _all_modules():
        try:
            importlib.import_module(name)
        except ImportError as e:  # an optional extra (the serve stack) not installed
            if e.name and e.name.split(".")[0] == "mlvc":
                raise
    strays = [f"{c.__module__}.{c.__qualname__}" for c in error_classes()]
    assert [s for s in strays if not s.startswith("mlvc.errors.")] == []


def _commands(group: click.Group, prefix: str):
    for name, cmd in sorted(group.commands.items()):
        yield f"{prefix} {name}", cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix} {name}")


def test_every_cli_command_shows_an_example():
    """sqlite-utils' habit: the help of every command ends in something to copy."""
    from mlvc.cli import main

    missing = [
        full
        for full, cmd in _commands(main, "mlvc")
        if not (cmd.help and ("Example:" in cmd.help or "Example session:" in cmd.help))
    ]
    assert missing == []


def test_command_modules_import_only_the_common_module_of_the_shell():
    """cli/__init__ gathers the command modules; they never import one another or it, so
    the shell has no import cycle (LAYOUT.md §4.3)."""
    import grimp

    graph = grimp.build_graph("mlvc")
    commands = graph.find_children("mlvc.cli") - {"mlvc.cli._common"}
    for module in commands:
        shell = {m for m in graph.find_modules_directly_imported_by(module) if "mlvc.cli" in m}
        assert shell <= {"mlvc.cli._common"}, (module, shell)


def test_every_exit_code_has_one_owner():
    # two branches once both took exit code 21; the table kept one meaning and lost the other
    from mlvc.errors import _exit_codes, error_classes

    owned = [c.exit_code for c in error_classes() if "meaning" in vars(c)]
    assert len(owned) == len(set(owned))
    assert set(owned) <= set(_exit_codes())
