"""What the kit writes for machines and for readers: `--json` however argparse lets it be spelled keeps stdout
to the one document; a model card's Python never runs what a name smuggled into it.

    $ PYTHONPATH=$PWD python -m pytest tests/test_hostile_output.py -q
"""

import ast
import json
import re
import shutil

import pytest

from helpers import run_cli


@pytest.mark.parametrize("flag", ["--json", "--jso", "--js"])  # argparse takes any unambiguous prefix
def test_json_spelled_short_is_still_one_document_on_stdout(tiny_llama_tied, tmp_path, flag):
    bare = tmp_path / "no-tokenizer"
    bare.mkdir()
    shutil.copy(tiny_llama_tied / "config.json", bare)  # plan then says a note: it must go to stderr
    result = run_cli("plan", "quickstart", f"model_name_or_path={bare}", flag)
    assert result.returncode == 0 and "no tokenizer files" in result.stderr
    assert json.loads(result.stdout)["fits"] in (True, False)


def test_a_base_model_name_with_quotes_is_a_string_in_the_cards_python(tiny_run, tmp_path):
    hostile = 'me/b", dtype="auto"); import os; os.system("echo pwned"); ("'
    result = run_cli("push", str(tiny_run), "--repo", "me/x", "--base-model", hostile, "--dry-run", "--out",
                     str(tmp_path / "hub"))
    assert result.returncode == 0, result.stderr
    card = (tmp_path / "hub" / "README.md").read_text()
    for block in re.findall(r"```python\n(.*?)```", card, flags=re.S):
        tree = ast.parse(block)
        calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
        assert not any(isinstance(c.func, ast.Attribute) and c.func.attr == "system" for c in calls)
        assert not any(isinstance(node, ast.Import) and node.names[0].name == "os" for node in ast.walk(tree))
    assert f"from_pretrained({json.dumps(hostile)}, dtype=\"auto\")" in card
