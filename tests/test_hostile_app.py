"""The app's API is its page: served beyond this machine without a login, no event reads or writes a path a
client names; with the Train tab on, every folder it writes or watches lies under --runs.

    $ PYTHONPATH=$PWD python -m pytest tests/test_hostile_app.py -q
"""

import json
from pathlib import Path

import pytest

from helpers import free_port
from lima_lite import LimaError

SECRET = "the text of a private file"


def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "private" / "secret.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps({"messages": [{"role": "user", "content": SECRET}]}) + "\n")
    return path


def hostile_value(component: dict, secret: Path, target: Path):
    """What an anonymous client sends for one input: a path to read or write wherever a text goes."""
    kind = component.get("type")
    if kind in ("chatbot",):
        return [{"role": "user", "content": str(secret)}]
    if kind in ("slider", "number"):
        return 1
    if kind == "state":
        return None
    if kind == "checkbox":
        return True
    return f"{secret}" if component.get("id", 0) % 2 else f"{target}"


def files_under(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*")}


def test_every_event_of_a_public_app_answers_an_anonymous_client_without_touching_paths(tmp_path, capsys):
    import httpx
    from gradio_client import Client

    from lima_lite.app.ui import app_from_args, launch, parser

    secret = secret_file(tmp_path)
    runs, target = tmp_path / "runs", tmp_path / "elsewhere"
    runs.mkdir()
    args = parser().parse_args(["--runs", str(runs), "--host", "0.0.0.0", "--adapter", "me/not-loaded"])
    app = app_from_args(args)  # built as `lima-lite ui --host 0.0.0.0` builds it, served here on loopback
    assert "no Train tab" in capsys.readouterr().err
    before = files_under(tmp_path)
    port = free_port()
    launch(app, "127.0.0.1", port, False, None, 4, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}"
    try:
        config = httpx.get(f"{url}/config").json()
        ids = {c["id"]: c for c in config["components"]}
        elem_ids = {c.get("props", {}).get("elem_id") or "" for c in config["components"]}
        assert not any(e.startswith(("train-", "export-")) for e in elem_ids), "the Train tab was built"
        client = Client(url, verbose=False)
        called = 0
        for index, dependency in enumerate(config["dependencies"]):
            if not dependency.get("backend_fn"):
                continue
            inputs = [hostile_value(ids[i], secret, target) for i in dependency["inputs"] if ids[i]["type"] != "state"]
            try:
                result = client.predict(*inputs, fn_index=index)
            except Exception as error:  # noqa: BLE001 - a refusal is an answer; only what it says matters here
                result = str(error)
            called += 1
            assert SECRET not in json.dumps(result, default=str), f"event {index} returned the private file"
        assert called >= 10  # chat, retry, undo, compare, judge: every event with a handler was called
    finally:
        app.close()
    written = files_under(tmp_path) - before
    assert not target.exists() and not any("elsewhere" in p for p in written), written
    assert all(p.startswith(str(runs)) for p in written), written


@pytest.fixture
def trusted_form(tmp_path):
    from lima_lite.app.train_tab import Training, recipe_values

    runs = tmp_path / "runs"
    runs.mkdir()
    return Training(runs), recipe_values("quickstart", runs)


@pytest.mark.parametrize("where, more", [
    ("field", ""),
    ("more", "output_dir={tmp}/outside"),
    ("more", "output_dir={runs}/../outside"),
    ("more", "logging_dir={tmp}/outside/logs"),
    ("link", ""),
])
def test_the_train_tab_writes_only_under_runs(trusted_form, tmp_path, where, more):
    from lima_lite.app.train_tab import check_form, form_handler, start_form

    training, values = trusted_form
    runs = training.runs_dir
    fields = dict(values)
    if where == "field":
        fields["output_dir"] = str(tmp_path / "outside")
    if where == "link":  # a folder under --runs that is a link out of it
        (tmp_path / "real").mkdir()
        (runs / "link").symlink_to(tmp_path / "real")
        fields["output_dir"] = str(runs / "link" / "run")
    typed = more.format(tmp=tmp_path, runs=runs)
    for handler in (check_form, start_form):
        status, *_ = form_handler(training, handler)("quickstart", *fields.values(), typed)
        assert status.startswith("error: ") and "under" in status and "--runs" in status, status
    assert training.process is None and not (tmp_path / "outside").exists()
    assert not (tmp_path / "real").exists() or not any((tmp_path / "real").iterdir())


def test_export_and_progress_stay_under_runs(tmp_path):
    from lima_lite.app.train_tab import Training, tick
    from lima_lite.app.ui import Models

    runs = tmp_path / "runs"
    (runs / "r" / "adapter").mkdir(parents=True)
    models = Models({"r/adapter": (str(runs / "r" / "adapter"), True)}, runs_dir=runs)
    from lima_lite.app.train_tab import export_adapter

    for kind in ("merge", "gguf", "push"):
        with pytest.raises(LimaError, match="not a folder under"):
            next(export_adapter(models, kind, "r/adapter", str(tmp_path / "out"), "me/x", ""))
    outside = tmp_path / "other-run"
    outside.mkdir()
    (outside / "run.json").write_text(json.dumps({"status": SECRET}))
    line, *_ = tick(Training(runs), str(outside))
    assert SECRET not in line and "not a folder under" in line
