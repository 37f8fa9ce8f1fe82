"""Test isolation for every package's tests: no hub, no user caches, no stray models."""

import os
import tempfile

_root = tempfile.mkdtemp(prefix="codex-tests-")
os.environ["CODEX_CACHE_DIR"] = os.path.join(_root, "cache")  # tiny models are built here once per session
os.environ["CODEX_MODELS_DIR"] = os.path.join(_root, "models")
os.environ["HF_HOME"] = os.path.join(_root, "hf")
os.environ["XDG_CONFIG_HOME"] = os.path.join(_root, "config")  # no user config file (models roots)
os.environ.pop("CODEX_CONFIG", None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("CODEX_LOAD_PLUGINS", None)
os.environ.pop("CODEX_DISABLE_PLUGINS", None)
for name in [n for n in os.environ if n.startswith("CODEX_MODEL_")]:
    del os.environ[name]


def pytest_report_header(config):
    seed = os.environ.get("CODEX_PROPERTY_SEED", "20261130")
    examples = os.environ.get("CODEX_PROPERTY_EXAMPLES", "6")
    return f"codex property tests: hypothesis seed {seed} (CODEX_PROPERTY_SEED), {examples} examples per engine and task"
