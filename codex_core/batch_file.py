"""Reading a batch file: JSON Lines (one item a line) or YAML (a list of items, or ``items:`` and ``grid:``).

An item whose fields are wrong is kept as invalid, by its line, so that the others can still run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import grid as grid_module
from .batch_items import BatchFile, Broken, Invalid, parse_item, settle_ids
from .errors import UsageError
from .paths import user_path
from .requests import no_duplicate_keys


def read_batch_file(path: Path) -> BatchFile:
    """The items (and grids) of a batch file; an item whose fields are wrong is in ``invalid``, by line."""
    path = user_path(str(path), "FILE")
    if path.is_dir():
        raise UsageError(f"FILE: {str(path)!r} is a folder, not a batch file")
    if not path.is_file():
        raise UsageError(f"FILE: no such file {str(path)!r}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"FILE: {str(path)!r} is not UTF-8 text (byte offset {exc.start})") from None
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        raw, grid_specs = _json_lines(text, path), []
    elif suffix in (".yaml", ".yml"):
        raw, grid_specs = _yaml_items(text, path)
    else:
        raise UsageError(f"FILE: {str(path)!r}: unknown batch file type {suffix or '(none)'!r}; allowed: .jsonl or "
                         ".ndjson (JSON Lines, one item a line), .yaml or .yml (a list of items, and/or grid:)")
    batch = BatchFile([], [])
    for line, data in raw:
        try:
            batch.items.append(parse_item(data, line))
        except UsageError as exc:
            given = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None
            batch.invalid.append(Invalid(line, given, exc.message))
    for line, data in grid_specs:
        try:
            found = grid_module.parse_grid(data, line)
        except UsageError as exc:
            batch.invalid.append(Invalid(line, None, exc.message))
            continue
        batch.grids.append(found)
        batch.items.extend(found.items())
    settle_ids(batch)
    if not batch.items and not batch.invalid:
        raise UsageError(f"FILE: {str(path)!r} holds no items", hint="one JSON object a line (JSON Lines), or a YAML "
                         "list of {engine, task, request}")
    return batch


def _json_lines(text: str, path: Path) -> list[tuple[int, Any]]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            found.append((number, json.loads(line, object_pairs_hook=no_duplicate_keys)))
        except json.JSONDecodeError as exc:
            found.append((number, Broken(f"not valid JSON: {exc.msg} at column {exc.colno}")))
        except ValueError as exc:
            found.append((number, Broken(str(exc))))
    return found


def _strict_yaml_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            keys = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in keys:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} appears twice in one mapping; give each field once",
                        key_node.start_mark)
                keys.add(key)
            return super().construct_mapping(node, deep=deep)

    return Loader


def _yaml_items(text: str, path: Path) -> tuple[list[tuple[int, Any]], list[tuple[int, Any]]]:
    """(line, item) and (line, grid) pairs: line numbers from the YAML nodes."""
    import yaml

    loader_class = _strict_yaml_loader()
    try:
        root = yaml.compose(text, Loader=loader_class)
    except yaml.YAMLError as exc:
        raise UsageError(f"FILE: {str(path)!r} is not valid YAML: {exc}") from None
    if root is None:
        return [], []

    def value(node):
        loader = loader_class("")
        try:
            return loader.construct_document(node)
        except yaml.YAMLError as exc:
            return Broken(str(exc).replace("\n", " "))

    def line(node) -> int:
        return node.start_mark.line + 1

    items_node, grid_node = None, None
    if isinstance(root, yaml.SequenceNode):
        items_node = root
    elif isinstance(root, yaml.MappingNode):
        for key_node, value_node in root.value:
            key = key_node.value
            if key == "items":
                items_node = value_node
            elif key == "grid":
                grid_node = value_node
            else:
                raise UsageError(f"FILE: line {line(key_node)}: unknown top-level key {key!r}; allowed: items, grid")
    else:
        raise UsageError(f"FILE: {str(path)!r}: the YAML must be a list of items, or a mapping with items: and grid:")
    items, grids = [], []
    if items_node is not None:
        if not isinstance(items_node, yaml.SequenceNode):
            raise UsageError(f"FILE: line {line(items_node)}: items: must be a list of items")
        items = [(line(node), value(node)) for node in items_node.value]
    if grid_node is not None:
        nodes = grid_node.value if isinstance(grid_node, yaml.SequenceNode) else [grid_node]
        grids = [(line(node), value(node)) for node in nodes]
    return items, grids
