"""Plugin discovery, allow/deny lists, broken plugins, and the hook surface itself."""

import inspect
import re
from pathlib import Path

import pytest

from codex_core import Engine, Txt2ImgParams, hookimpl, hookspecs, plugins, registry
from codex_core.matrix import project_distributions
from codex_core.testing import add_entry_point

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


@pytest.fixture
def fresh_plugins():
    plugins.reset_for_tests()
    yield
    plugins.reset_for_tests()


def test_installed_plugins_are_discovered(fresh_plugins):
    assert {"sd15", "sdxl"} <= set(registry.engines())
    spec = registry.get_engine("sd15")
    assert (spec.plugin, spec.distribution) == ("sd", "codex-sd")


def test_load_list_empty_loads_no_entry_points(fresh_plugins, monkeypatch):
    monkeypatch.setenv("CODEX_LOAD_PLUGINS", "")
    assert registry.engines() == {}
    assert registry.exporters()["png"].kind == "image"  # default plugins still there


def test_disable_list_by_distribution_name(fresh_plugins, monkeypatch):
    monkeypatch.setenv("CODEX_DISABLE_PLUGINS", "codex-sd")
    assert "sd15" not in registry.engines()


def test_broken_plugin_is_reported_and_does_not_stop_others(fresh_plugins, monkeypatch, capsys):
    add_entry_point(monkeypatch, "broken", "no_such_module_xyz")
    assert "sd15" in registry.engines()
    assert "ModuleNotFoundError" in plugins.load_errors["broken"]
    assert 'error importing plugin "broken"' in capsys.readouterr().err
    assert {"name": "broken", "error": plugins.load_errors["broken"]} in plugins.describe_plugins()


class InTestEngine(Engine):
    key = "in_test"
    tasks = {"txt2img": Txt2ImgParams}


def test_an_in_process_plugin_can_register_an_engine(fresh_plugins):
    class InTestPlugin:
        @hookimpl
        def codex_register_engines(self, register):
            register(InTestEngine())

    plugins.load_plugins()
    plugins.pm.register(InTestPlugin(), name="in-test")
    try:
        registry.clear_cache()
        assert registry.get_engine("in_test").plugin == "in-test"
    finally:
        plugins.pm.unregister(name="in-test")
        registry.clear_cache()


def test_unknown_engine_names_installed_ones_and_the_package_to_install(fresh_plugins, monkeypatch):
    monkeypatch.setenv("CODEX_LOAD_PLUGINS", "codex-sd")
    with pytest.raises(Exception) as caught:
        registry.get_engine("wan_ti2v_5b")
    assert "installed engines: sd15, sd35, sdxl" in str(caught.value)
    # installed here but left out by the load list; where it is not installed the hint is "pip install codex-wan"
    # (tests/check_wheels.sh checks that in an environment without it)
    assert "provided by codex-wan, which is installed but not in CODEX_LOAD_PLUGINS" in str(caught.value)


HOOKS = [name for name in dir(hookspecs) if name.startswith("codex_")]
# Every hook is implemented by the installed example plugin and exercised through the CLI in
# tests/test_third_party_engine.py::test_every_hook_is_implemented_by_an_installed_plugin_and_takes_effect.


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook):
    signature = f"{hook}({', '.join(inspect.signature(getattr(hookspecs, hook)).parameters)})"
    assert re.search(rf"^### `{re.escape(signature)}`$", DOCS.read_text(), re.M), f"docs/plugins.md lacks {signature}"


def test_every_project_plugin_is_installed_here_with_its_engines():
    """The development environment has every package under plugins/, each with the engines the catalog names."""
    installed = {engine.distribution for engine in registry.engines().values()}
    catalog = registry.known_engine_packages()
    assert set(catalog.values()) <= installed <= project_distributions()
    for key, package in catalog.items():
        assert registry.get_engine(key).distribution == package


def _register_in_test(*plugin_objects):
    plugins.load_plugins()
    for index, plugin in enumerate(plugin_objects):
        plugins.pm.register(plugin, name=f"in-test-{index}")
    registry.clear_cache()


class OtherInTestEngine(InTestEngine):
    description = "the other one"


def test_hook_wrappers_run_because_hooks_are_called_through_pluggy(fresh_plugins):
    seen = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def codex_register_engines(self, register):
            seen.append("before")
            result = yield
            register(InTestEngine())  # a wrapper can add its own after the others
            seen.append("after")
            return result

    _register_in_test(Wrapper())
    assert registry.get_engine("in_test").plugin == "in-test-0" and seen == ["before", "after"]
    assert "sd15" in registry.engines()


def test_a_key_registered_twice_warns_naming_both_plugins_and_the_winner(fresh_plugins, capsys):
    class First:
        @hookimpl
        def codex_register_engines(self, register):
            register(InTestEngine())

    class Second:
        @hookimpl
        def codex_register_engines(self, register):
            register(OtherInTestEngine())

    _register_in_test(First(), Second())  # pluggy calls the plugin registered last first: it wins
    assert registry.get_engine("in_test").description == "the other one"
    assert registry.get_engine("in_test").plugin == "in-test-1"
    err = capsys.readouterr().err
    assert "engine 'in_test' is registered by plugin 'in-test-1' and by plugin 'in-test-0'; 'in-test-1' wins" in err


def test_tryfirst_decides_the_winner_as_pluggy_orders_the_calls(fresh_plugins, capsys):
    class First:
        @hookimpl(tryfirst=True)
        def codex_register_engines(self, register):
            register(InTestEngine())

    class Second:
        @hookimpl
        def codex_register_engines(self, register):
            register(OtherInTestEngine())

    _register_in_test(First(), Second())
    assert registry.get_engine("in_test").plugin == "in-test-0"
    assert "'in-test-0' wins" in capsys.readouterr().err


def test_a_plugin_can_override_a_core_sampler_and_is_told_so(fresh_plugins, capsys):
    from codex_core import SamplerDef

    class Samplers:
        @hookimpl
        def codex_register_samplers(self, register):
            register(SamplerDef("euler", "discrete", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}))

    _register_in_test(Samplers())
    euler = next(s for s in registry.samplers()[0] if s.family == "discrete" and s.name.casefold() == "euler")
    assert euler.flags == {"timestep_spacing": "trailing"}
    assert ("sampler 'discrete:Euler' is registered by plugin 'in-test-0' and by plugin "
            "'diffusers'; 'in-test-0' wins") in capsys.readouterr().err


def test_garbage_and_invalid_engines_are_skipped_with_a_warning(fresh_plugins, capsys):
    class BadTask(InTestEngine):
        key = "bad_task"
        tasks = {"Text To Image": Txt2ImgParams}

    class Garbage:
        @hookimpl
        def codex_register_engines(self, register):
            register("not an engine")
            register(BadTask())

    _register_in_test(Garbage())
    assert "bad_task" not in registry.engines() and "sd15" in registry.engines()
    err = capsys.readouterr().err
    assert "plugin 'in-test-0' registered an invalid engine (got str, not a codex_core.Engine instance)" in err
    assert "task 'Text To Image' is not a lower-case name" in err
