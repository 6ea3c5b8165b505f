"""Recipe text: a recipe file found by path or name, read into raw values with their lines, and `key=value`
overrides read the same way.

    >>> read_yaml(resolve_recipe("quickstart"))     # {"learning_rate": ("5.0e-4", 16), ...}
    >>> parse_overrides(["lora_target_modules=[q_proj,v_proj]"])  # {"lora_target_modules": ["q_proj", "v_proj"]}

Values stay the text the user wrote; lima_lite.config reads each with its field's type.
"""

import json
import os
from pathlib import Path

import yaml

from lima_lite import LimaError
from lima_lite.files import no_file

NULL_TAG = "tag:yaml.org,2002:null"


# Plain data: what a recipe value may be (strings, numbers, booleans, null, lists, mappings).
PLAIN_TAGS = {f"tag:yaml.org,2002:{kind}" for kind in ("str", "int", "float", "bool", "null", "seq", "map")}
TAG_WORDS = {"tag:yaml.org,2002:timestamp": "a date or time (quote it to mean text)",
             "tag:yaml.org,2002:binary": "binary data", "tag:yaml.org,2002:set": "a set",
             "tag:yaml.org,2002:omap": "an ordered map", "tag:yaml.org,2002:pairs": "a list of pairs"}


def check_plain(node, where: str) -> None:
    """Refuse a value that is not plain data (a date, binary, a !!python/... or any other tag, at any depth),
    naming where it is: it is never constructed."""
    if node.tag not in PLAIN_TAGS:
        what = TAG_WORDS.get(node.tag, f"the tag {node.tag.replace('tag:yaml.org,2002:', '!!')}")
        raise LimaError(f"{where}: {what} is not a recipe value; use plain strings, numbers, booleans, lists "
                        "or mappings")
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            check_plain(item, where)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            check_plain(key, where)
            check_plain(value, where)


def raw_value(node):
    """A YAML value as the text the user wrote (a scalar), a list of texts, or a JSON object: argparse then
    reads it with the field's own type, so `save_strategy: no` stays TRL's "no" and `3e-4` is a float."""
    if isinstance(node, yaml.ScalarNode):
        return None if node.tag == NULL_TAG else node.value
    if isinstance(node, yaml.SequenceNode):
        return [raw_value(item) for item in node.value]
    return json.dumps(yaml.safe_load(yaml.serialize(node)))


def read_yaml(path: str | Path) -> dict[str, tuple[object, int]]:
    """key -> (raw value, line) of a recipe file; invalid YAML, a non-mapping and duplicate keys name their line."""
    path = Path(path)
    if not path.is_file():
        raise LimaError(no_file(path, "recipe"))
    try:
        text = path.read_text(encoding="utf-8")
        # A recipe has no use for aliases (*name), and a few nested ones expand to billions of values.
        alias = next((event for event in yaml.parse(text) if isinstance(event, yaml.AliasEvent)), None)
        root = yaml.compose(text) if alias is None else None
    except UnicodeDecodeError:
        raise LimaError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise LimaError(f"{where}: invalid YAML: {getattr(error, 'problem', error)}") from None
    if alias is not None:
        raise LimaError(f"{path}:{alias.start_mark.line + 1}: YAML alias *{alias.anchor}: a recipe cannot use "
                        "aliases; write the value out")
    if root is None or (isinstance(root, yaml.MappingNode) and not root.value):
        raise LimaError(f"{path}: the recipe is empty; give at least model_name_or_path and dataset_name "
                        "(see recipes/quickstart.yaml)")
    if not isinstance(root, yaml.MappingNode):
        raise LimaError(f"{path}:{root.start_mark.line + 1}: a recipe is a mapping of key: value")
    values = {}
    for key_node, value_node in root.value:
        key, line = key_node.value, key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            raise LimaError(f"{path}:{line}: a recipe key must be a name")
        if key in values:
            raise LimaError(f"{path}:{line}: {key}: set twice (first on line {values[key][1]}); keep one")
        check_plain(value_node, f"{path}:{value_node.start_mark.line + 1}: {key}")
        values[key] = (raw_value(value_node), line)
    return values


def parse_overrides(pairs: list[str]) -> dict:
    """`["learning_rate=3e-4", "lora_target_modules=[q_proj,v_proj]"]` -> {key: raw value}, read as in a YAML file."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise LimaError(f"override {pair!r} is not key=value")
        try:
            node = yaml.compose(value) if value.strip() else None
        except yaml.YAMLError:
            node = yaml.ScalarNode("tag:yaml.org,2002:str", value)  # not YAML: the text as it is
        if node is not None:
            check_plain(node, f"override {key.strip()}")
        overrides[key.strip()] = None if node is None else raw_value(node)
    return overrides


def resolve_recipe(name: str) -> Path:
    """A recipe path as given, or a recipe name shipped with lima_lite (`quickstart`)."""
    path = Path(name)
    if path.is_file():
        return path
    if os.path.lexists(path) and not path.is_dir():  # a FIFO, a device or a broken link by that name
        raise LimaError(no_file(path, "recipe"))
    here = Path(__file__).resolve().parent
    for folder in (here / "recipes", here.parent / "recipes"):
        for candidate in (folder / name, folder / f"{name}.yaml"):
            if candidate.is_file():
                return candidate
    raise LimaError(f"{name}: recipe file not found (give a path, or one of the names in recipes/)")
