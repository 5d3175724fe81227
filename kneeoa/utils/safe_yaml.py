"""Bounded YAML for presets and run configs: `load_yaml(path) -> dict`, or a ConfigError naming the file.

`yaml.safe_load` runs no code, but a small file can still exhaust memory or the stack: nested anchors and
aliases expand exponentially ("billion laughs"), thousands of nested `[` recurse through the composer,
and a thousand-digit integer is built digit by digit (Python refuses past 4,300 digits with a traceback).
A KneeOA config is a flat mapping of a few dozen numbers and strings, so this loader refuses aliases
outright and caps the file size, the nesting depth, the node count and the length of numbers. A key given
twice in one mapping (PyYAML silently keeps the last) is refused too.
Why by hand: PyYAML has no such limits and no maintained YAML library for Python offers them.
"""

from __future__ import annotations

import math
from pathlib import Path

from kneeoa.errors import ConfigError

MAX_BYTES = 1 << 20  # presets are ~2 kB
MAX_DEPTH = 32  # a preset nests 3 levels (backbones -> name -> options)
MAX_NODES = 100_000
MAX_NUMBER_CHARS = 40  # digits of the longest number accepted (a float64 needs 17 significant)


def _loader_class():
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        """SafeLoader that counts what it composes and refuses aliases, depth and size past the limits."""

        def __init__(self, stream):
            super().__init__(stream)
            self._depth = 0
            self._nodes = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in KneeOA configs",
                                                  self.peek_event().start_mark)
            self._nodes += 1
            if self._nodes > MAX_NODES:
                raise yaml.composer.ComposerError(None, None, f"more than {MAX_NODES} values",
                                                  self.peek_event().start_mark)
            if self._depth >= MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            self._depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def construct_mapping(self, node, deep=False):
            # PyYAML keeps the last of two equal keys silently: a preset saying `lr:` twice is a typo to report
            if isinstance(node, yaml.MappingNode):
                seen = set()
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=True)
                    try:
                        duplicate = key in seen
                    except TypeError:  # an unhashable key: the base class reports it
                        break
                    if duplicate:
                        raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                                key_node.start_mark)
                    seen.add(key)
            return super().construct_mapping(node, deep)

        def construct_yaml_int(self, node):
            if len(str(node.value)) > MAX_NUMBER_CHARS:
                raise yaml.constructor.ConstructorError(None, None, f"number with more than {MAX_NUMBER_CHARS} "
                                                        "characters", node.start_mark)
            return super().construct_yaml_int(node)

        def construct_yaml_float(self, node):
            value = super().construct_yaml_float(node)
            if len(str(node.value)) > MAX_NUMBER_CHARS or not math.isfinite(value):
                raise yaml.constructor.ConstructorError(None, None, f"number {str(node.value)[:20]!r} is not a "
                                                        "finite number of reasonable length", node.start_mark)
            return value

    BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)
    BoundedLoader.add_constructor("tag:yaml.org,2002:float", BoundedLoader.construct_yaml_float)
    return BoundedLoader


def load_text(text: str, path: str | Path | None = None) -> object:
    """The YAML document in `text` within the limits (any type); ConfigError naming `path` otherwise."""
    import yaml

    try:
        loader = _loader_class()(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML: {' '.join(str(err).split())}", path) from None
    except (RecursionError, MemoryError, ValueError) as err:
        raise ConfigError(f"YAML too large or deep to read ({type(err).__name__})", path) from None


def load_yaml(path: str | Path) -> dict:
    """A YAML mapping from `path`: UTF-8, at most 1 MiB, no aliases, bounded depth/nodes/number length."""
    path = Path(path)
    try:
        if not path.is_file():
            raise ConfigError("YAML file not found (or not a regular file)", path)
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"YAML file of {path.stat().st_size} bytes; a config is at most {MAX_BYTES}", path)
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text (is this a YAML file?)", path) from None
    except OSError as err:
        raise ConfigError(f"cannot read ({err.strerror})", path) from None
    data = load_text(text, path)
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of options at the top level", path)
    return data
