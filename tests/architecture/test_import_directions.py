"""Dependencies point down: contracts and settings at the bottom, the console on top."""

from pathlib import Path

from tests.architecture import layers


def test_no_import_points_up_or_sideways():
    found = layers.violations()
    assert not found, "imports against the layer rules (docs/architecture.md):\n" + "\n".join(found)


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The rule check itself: a core module importing the console is reported."""
    core = tmp_path / "stream_processors" / "core"
    core.mkdir(parents=True)
    (core / "__init__.py").write_text("")
    (core / "bad.py").write_text("def f():\n    from keytrail.console.settings import x\n")
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "bad.py").write_text("import sqlalchemy\nfrom producers.emitter import E\n")
    monkeypatch.setattr(layers, "REPO", tmp_path)
    monkeypatch.setattr(layers, "PACKAGE_DIRS", {"keytrail.stream_processors": "stream_processors",
                                                 "keytrail.schemas": "schemas"})
    found = layers.violations()
    assert any("bad.py:2: keytrail.stream_processors.core.bad (core) imports keytrail.console" in f for f in found)
    assert any("imports the I/O package sqlalchemy" in f for f in found)
    assert any("by its old top-level name" in f for f in found)


def test_every_package_folder_is_in_the_wheel():
    """pyproject.toml lists packages explicitly (package-dir maps folders under `keytrail.`)."""
    import tomllib

    config = tomllib.loads((layers.REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == layers.PACKAGE_DIRS
    listed = set(config["packages"])
    on_disk = {layers.module_name(init) for folder in layers.PACKAGE_DIRS.values()
               for init in Path(layers.REPO, folder).rglob("__init__.py")}
    assert on_disk == listed, f"missing from pyproject: {sorted(on_disk - listed)}; stale: {sorted(listed - on_disk)}"
