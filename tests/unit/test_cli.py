"""The ``semstore`` CLI end to end on a SQLite file, with the tiny non-semantic test model.

One module-scoped workspace (images, data directory, database) is ingested once and then
queried by the other tests; a few tests make their own collections beside it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.main import get_command
from typer.testing import CliRunner, Result

from semstore.cli import app
from semstore.cli.errors import CliError
from semstore.cli.params import parse_pairs, parse_value, parse_where
from semstore.codec import PQVAECodec

TINY = "semstore-tiny-test"
IMAGE_COUNT = 12

runner = CliRunner()


@dataclass
class Workspace:
    root: Path
    images: Path
    env: dict[str, str | None]

    def run(self, *args: str | Path, input: str | None = None) -> Result:
        return runner.invoke(app, [str(a) for a in args], env=self.env, input=input)


def _draw_images(folder: Path) -> None:
    """12 small PNGs that differ in colour and shape, and one corrupt "PNG"."""
    folder.mkdir()
    colours = {
        "red": (230, 20, 20),
        "green": (20, 200, 40),
        "blue": (20, 40, 230),
        "yellow": (240, 230, 20),
        "white": (255, 255, 255),
        "black": (0, 0, 0),
    }
    for name, rgb in colours.items():
        Image.new("RGB", (40, 40), rgb).save(folder / f"solid-{name}.png")
    shapes = [
        ("circle", "red", "white"),
        ("square", "blue", "yellow"),
        ("triangle", "green", "black"),
        ("circle", "black", "yellow"),
        ("square", "white", "red"),
        ("triangle", "yellow", "blue"),
    ]
    for shape, fg, bg in shapes:
        image = Image.new("RGB", (48, 32), colours[bg])
        draw = ImageDraw.Draw(image)
        if shape == "circle":
            draw.ellipse((8, 2, 36, 30), fill=colours[fg])
        elif shape == "square":
            draw.rectangle((12, 4, 36, 28), fill=colours[fg])
        else:
            draw.polygon([(24, 2), (4, 30), (44, 30)], fill=colours[fg])
        image.save(folder / f"{shape}-{fg}-on-{bg}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is not really a png" * 4)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("cli")
    _draw_images(root / "images")
    env: dict[str, str | None] = {
        "SEMSTORE_MODEL": TINY,
        "SEMSTORE_PRETRAINED": None,
        "SEMSTORE_DATA_DIR": str(root / "data"),
        "SEMSTORE_DATABASE_URL": None,  # the default: a SQLite file in the data directory
        "SEMSTORE_COLLECTION": None,
        "SEMSTORE_CODEC_NUM_SUBVECTORS": "4",
        "SEMSTORE_CODEC_CODEBOOK_SIZE": "16",
        "SEMSTORE_DEBUG": None,
        "COLUMNS": "300",  # wide tables: file names are not folded across lines
    }
    return Workspace(root, root / "images", env)


@pytest.fixture(scope="module")
def ingested(workspace: Workspace) -> Result:
    """The first ingest of the images folder into the default collection."""
    return workspace.run("ingest", workspace.images, "--no-progress", "--meta", "batch=1", "--meta", "source=test")


def _json_lines(result: Result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _assert_one_error_line(result: Result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


# -- help and parsing ------------------------------------------------------------------------


def test_every_command_has_help() -> None:
    commands = get_command(app).commands  # type: ignore[attr-defined]
    assert {"init", "ingest", "search", "classify", "stats", "collections", "delete-collection", "train-codec", "serve"} <= set(commands)
    for name in commands:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage" in result.output and name in result.output


def test_version_and_usage_errors() -> None:
    from semstore import __version__

    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.strip() == f"semstore {__version__}"
    usage = runner.invoke(app, ["search", "--top-k", "zero"])
    assert usage.exit_code == 2 and "Traceback" not in usage.output


@pytest.mark.parametrize(
    ("text", "value"),
    [("3", 3), ("-2", -2), ("2.5", 2.5), ("1e3", 1000.0), ("true", True), ("False", False), ("cat", "cat"),
     ("", ""), ('"42"', "42"), ("nan", "nan"), ("a=b", "a=b")],
)
def test_parse_value(text: str, value: object) -> None:
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_parse_pairs() -> None:
    assert parse_pairs(["a=1", "b = x=y", "c="], "--meta") == {"a": 1, "b": "x=y", "c": ""}
    with pytest.raises(CliError, match="KEY=VALUE"):
        parse_pairs(["novalue"], "--where")
    with pytest.raises(CliError, match="KEY=VALUE"):
        parse_pairs(["=1"], "--where")


def test_parse_where_comparisons_and_json() -> None:
    assert parse_where(["a=1", "b!=x", "y>=2020", "y<2024", "s<=z"]) == {
        "a": 1, "b": {"$ne": "x"}, "y": {"$gte": 2020, "$lt": 2024}, "s": {"$lte": "z"}
    }
    assert parse_where(["a=b>c"]) == {"a": "b>c"}  # the first operator splits
    assert parse_where(["n>1"], '{"tag": {"$in": ["cat", "dog"]}}') == {"tag": {"$in": ["cat", "dog"]}, "n": {"$gt": 1}}
    assert parse_where(["a=1", "a<5"]) == {"a": {"$eq": 1, "$lt": 5}}
    with pytest.raises(CliError, match="KEY=VALUE"):
        parse_where(["novalue"])
    with pytest.raises(CliError, match="twice"):
        parse_where(["a>1", "a>2"])
    with pytest.raises(CliError, match="--filter is not valid JSON"):
        parse_where([], "{")
    with pytest.raises(CliError, match="JSON object"):
        parse_where([], "[1]")


# -- ingest, search, classify, stats ---------------------------------------------------------


def test_ingest_adds_images_and_reports_the_corrupt_file(ingested: Result) -> None:
    assert ingested.exit_code == 0, ingested.output
    assert f"added {IMAGE_COUNT}, skipped 0 unchanged, failed 1" in ingested.stdout
    failed_rows = [line for line in ingested.stdout.splitlines() if "broken.png" in line]
    assert len(failed_rows) == 1
    reason = failed_rows[0].split("broken.png", 1)[1].strip(" │|")
    assert reason, "the failure table gives a reason"
    assert "Traceback" not in ingested.output


def test_reingest_adds_nothing(workspace: Workspace, ingested: Result) -> None:
    again = workspace.run("ingest", workspace.images, "--no-progress")
    assert again.exit_code == 0, again.output
    assert f"added 0, skipped {IMAGE_COUNT} unchanged, failed 1" in again.stdout
    assert "note:" not in again.stdout
    # issue #19, item 5: re-ingest with --meta says that stored items keep their metadata
    tagged = workspace.run("ingest", workspace.images, "--no-progress", "-m", "source=laptop")
    assert tagged.exit_code == 0, tagged.output
    assert f"the {IMAGE_COUNT} already stored kept their metadata" in tagged.stdout


def test_search_by_image_finds_it_first(workspace: Workspace, ingested: Result) -> None:
    for name in ("solid-red.png", "triangle-green-on-black.png"):
        result = workspace.run("search", "--image", workspace.images / name, "--json", "-k", "3")
        assert result.exit_code == 0, result.output
        hits = _json_lines(result)
        assert [hit["rank"] for hit in hits] == [1, 2, 3]
        assert Path(hits[0]["source"]).name == name


def test_search_text_table_and_json(workspace: Workspace, ingested: Result) -> None:
    table = workspace.run("search", "red")
    assert table.exit_code == 0, table.output
    assert "rank" in table.stdout and "score" in table.stdout and ".png" in table.stdout

    hits = _json_lines(workspace.run("search", "red", "--json"))
    assert len(hits) == 10
    assert {"rank", "id", "score", "source", "metadata", "width", "height"} <= set(hits[0])
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert hits[0]["metadata"] == {"batch": 1, "source": "test"}

    by_item = _json_lines(workspace.run("search", "--item", str(hits[0]["id"]), "--json", "-k", "1"))
    assert by_item[0]["id"] == hits[0]["id"]


def test_search_where_filters_by_typed_metadata(workspace: Workspace, ingested: Result) -> None:
    matching = _json_lines(workspace.run("search", "red", "--where", "batch=1", "--json", "-k", "50"))
    assert len(matching) == IMAGE_COUNT
    none = workspace.run("search", "red", "--where", "batch=2", "--json")
    assert none.exit_code == 0 and none.stdout.strip() == ""
    as_string = workspace.run("search", "red", "--where", 'batch="1"')  # the string "1" is not the number 1
    assert as_string.exit_code == 0 and "no results" in as_string.stdout
    ranged = _json_lines(workspace.run("search", "red", "--where", "batch>=1", "--where", "batch<2", "--json", "-k", "50"))
    assert {hit["id"] for hit in ranged} == {hit["id"] for hit in matching}
    excluded = workspace.run("search", "red", "--filter", '{"batch": {"$nin": [1]}}', "--json")
    assert excluded.exit_code == 0 and excluded.stdout.strip() == ""
    bad = workspace.run("search", "red", "--filter", '{"batch": {"$regex": "1"}}')
    assert bad.exit_code == 1 and "$regex" in bad.output and "Traceback" not in bad.output


def test_classify_counts_sum_to_item_count(workspace: Workspace, ingested: Result) -> None:
    result = workspace.run("classify", "--labels", "red,green,blue", "--json", "--limit", "5")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["labels"] == ["red", "green", "blue"]
    assert sum(data["counts"].values()) == data["total"] == IMAGE_COUNT
    assert len(data["items"]) == 5
    assert all(item["label"] in data["labels"] and item["source"].endswith(".png") for item in data["items"])

    table = workspace.run("classify", "--label", "red", "--label", "green", "--label", "blue", "--limit", "3")
    assert table.exit_code == 0, table.output
    assert "first 3 of 12 items" in table.stdout and "counts" in table.stdout


def test_stats_json(workspace: Workspace, ingested: Result) -> None:
    result = workspace.run("stats", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["items"] == IMAGE_COUNT
    assert stats["bits_per_vector"] == 4 * 4  # 4 codes of log2(16) bits
    # One byte per code (uint8 for codebooks up to 256): bits_per_vector / 8 only holds at K = 256.
    assert stats["bytes_per_item"] == stats["code_bytes"] / IMAGE_COUNT == 4
    assert stats["bits_per_pixel"] > 0
    assert stats["model"] == TINY and len(stats["codec_hash"]) == 64
    assert stats["codec_config"]["num_subvectors"] == 4
    # K = 16: the 4-bit fast-scan layout; RAM = 4 half-bytes of codes + an 8-byte id per item.
    assert stats["index_kind"] == "adc-fastscan" and stats["index_bytes_per_item"] > 8

    # The saved index lives beside the SQLite file it belongs to (issue #19, item 9), and exists.
    database_file = workspace.root / "data" / "semstore.db"
    index_directory = Path(stats["index_directory"])
    assert index_directory.parent == database_file.with_name("semstore.db.indexes")
    assert index_directory.name.endswith("-default") and (index_directory / "config.json").is_file()
    assert stats["pretrained"] is None  # the tiny model has no weights to name

    table = workspace.run("stats")
    assert table.exit_code == 0 and "bits per vector" in table.stdout and "index RAM per item" in table.stdout
    assert "index saved in" in table.stdout


def test_collections_lists_counts(workspace: Workspace, ingested: Result) -> None:
    rows = _json_lines(workspace.run("collections", "--json"))
    default = next(row for row in rows if row["name"] == "default")
    assert default["items"] == IMAGE_COUNT and default["model"] == TINY
    table = workspace.run("collections")
    assert table.exit_code == 0 and "default" in table.stdout


# -- codecs and collections ------------------------------------------------------------------


def test_train_codec_then_share_it(workspace: Workspace, tmp_path: Path) -> None:
    vectors = np.random.default_rng(0).standard_normal((100, 64)).astype(np.float32)
    np.save(tmp_path / "embeddings.npy", vectors)
    codec_file = tmp_path / "codec.safetensors"
    trained = workspace.run(
        "train-codec", tmp_path / "embeddings.npy", "--output", codec_file,
        "--subvectors", "4", "--codebook-size", "16", "--beam", "4", "--no-progress",
    )
    assert trained.exit_code == 0, trained.output
    assert codec_file.is_file() and "relative error" in trained.stdout and "16 bits" in trained.stdout
    assert PQVAECodec.load(codec_file).config.beam_size == 4
    short_hash = trained.stdout.split("saved codec ", 1)[1].split()[0]

    created = workspace.run("init", "-c", "shared", "--codec", codec_file)
    assert created.exit_code == 0, created.output
    assert short_hash in created.stdout

    # A single image is enough: the collection does not need to train a codec.
    added = workspace.run(
        "ingest", workspace.images / "solid-blue.png", "-c", "shared", "--codec", codec_file, "--no-progress",
        "--meta", "n=3", "--meta", "flag=true",
    )
    assert added.exit_code == 0, added.output
    assert "added 1," in added.stdout
    stats = json.loads(workspace.run("stats", "-c", "shared", "--json").stdout)
    assert stats["items"] == 1 and stats["codec_hash"].startswith(short_hash)
    hits = _json_lines(workspace.run("search", "blue", "-c", "shared", "--where", "flag=true", "--json"))
    assert [hit["metadata"] for hit in hits] == [{"n": 3, "flag": True}]

    # Another codec is refused for a collection that has its own (this test makes both, so it
    # does not depend on what earlier tests left in the workspace).
    np.save(tmp_path / "other.npy", np.random.default_rng(1).standard_normal((100, 64)).astype(np.float32))
    other_codec = tmp_path / "other.safetensors"
    assert workspace.run(
        "train-codec", tmp_path / "other.npy", "-o", other_codec, "--subvectors", "4", "--codebook-size", "16",
        "--no-progress",
    ).exit_code == 0
    assert workspace.run("init", "-c", "own-codec", "--codec", other_codec).exit_code == 0
    other = workspace.run(
        "ingest", workspace.images / "solid-red.png", "-c", "own-codec", "--codec", codec_file, "--no-progress"
    )
    _assert_one_error_line(other, "own-codec", "uses codec")


def test_init_twice_and_delete_collection(workspace: Workspace) -> None:
    assert workspace.run("init", "-c", "scratch").exit_code == 0
    _assert_one_error_line(workspace.run("init", "-c", "scratch"), "already exists")
    assert workspace.run("init", "-c", "scratch", "--exist-ok").exit_code == 0

    refused = workspace.run("delete-collection", "scratch", input="n\n")
    assert refused.exit_code == 1
    assert "scratch" in workspace.run("collections").stdout

    deleted = workspace.run("delete-collection", "scratch", "--yes")
    assert deleted.exit_code == 0, deleted.output
    names = [row["name"] for row in _json_lines(workspace.run("collections", "--json"))]
    assert "scratch" not in names


def test_ingest_of_only_bad_files_fails(workspace: Workspace) -> None:
    result = workspace.run("ingest", workspace.images / "broken.png", "-c", "broken", "--no-progress")
    _assert_one_error_line(result)
    assert "broken.png" in result.stdout


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["stats", "-c", "nope"], "nope"),
        (["search", "red", "-c", "nope"], "nope"),
        (["ingest", "/no/such/folder", "--no-progress"], "/no/such/folder"),
        (["search", "red", "--where", "batch"], "--where"),
        (["search", "red", "--image", "/no/such/image.png"], ""),
        (["search", "--top-k", "3"], "exactly one"),
        (["classify", "--labels", "red"], "label"),
        (["classify", "--labels", "red,blue", "--template", "a photo"], "--template"),
        (["classify", "--labels", "red,blue", "--template", "a {} of {kind}"], "--template"),
        (["init", "-c", "bad name!"], "bad name!"),
        (["collections", "--db", "nosuchdialect://x"], ""),
        (["collections", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2"], "database"),
        (["train-codec", "/no/such/file.npy", "-o", "/tmp/x.safetensors"], "/no/such/file.npy"),
        (["init", "-c", "other", "--codec", "/no/such/codec.safetensors"], "/no/such/codec.safetensors"),
    ],
)
def test_errors_are_one_line(workspace: Workspace, ingested: Result, args: list[str], needle: str) -> None:
    _assert_one_error_line(workspace.run(*args), needle)


def test_invalid_setting_from_the_environment(workspace: Workspace) -> None:
    result = runner.invoke(app, ["stats"], env={**workspace.env, "SEMSTORE_BATCH_SIZE": "many"})
    _assert_one_error_line(result, "invalid setting", "batch_size")


def test_bad_codec_and_embedding_files(workspace: Workspace, tmp_path: Path) -> None:
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    _assert_one_error_line(workspace.run("init", "-c", "junk", "--codec", tmp_path / "junk.safetensors"), "codec")
    np.save(tmp_path / "flat.npy", np.zeros(10, dtype=np.float32))
    _assert_one_error_line(workspace.run("train-codec", tmp_path / "flat.npy", "-o", tmp_path / "c"), "2-D")


def test_model_without_weights_offline(workspace: Workspace, tmp_path: Path) -> None:
    """Through the real console entry point, in a fresh process: no traceback, exit code 1."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SEMSTORE_")}
    env.update({k: v for k, v in workspace.env.items() if v is not None})
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(tmp_path / "hf" / "hub"))
    result = subprocess.run(
        [sys.executable, "-c", "from semstore.cli import main; main()", "init", "-c", "vit", "--model", "ViT-B-32"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "ViT-B-32" in lines[0]


# -- serve -----------------------------------------------------------------------------------


def test_health_route(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from semstore.config import get_settings
    from server.app import create_app

    settings = get_settings(database_url=f"sqlite:///{tmp_path / 'server.db'}", data_dir=tmp_path, model=TINY)
    with TestClient(create_app(settings)) as client:
        response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["database"] == "ok"

    down = get_settings(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2", data_dir=tmp_path)
    with TestClient(create_app(down)) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unhealthy"


def test_serve_hands_source_roots_to_the_server_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import server.serving

    seen: dict[str, object] = {}
    monkeypatch.setattr(server.serving, "serve", lambda settings: seen.update(settings=settings, env=dict(os.environ)))
    # serve exports its options as SEMSTORE_* variables for the server process: keep them out of this one.
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if not k.startswith("SEMSTORE_")})
    photos = tmp_path / "photos"
    photos.mkdir()
    result = runner.invoke(
        app, ["serve", "--port", "0", "--source-root", str(photos), "--data-dir", str(tmp_path / "data"), "--model", TINY]
    )
    assert result.exit_code == 0, result.output
    assert seen["settings"].source_roots == [photos.resolve()]  # type: ignore[attr-defined]
    assert json.loads(seen["env"]["SEMSTORE_SOURCE_ROOTS"]) == [str(photos.resolve())]  # type: ignore[index]


# -- database URLs (issue #19, item 6) -------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["collections"], ["stats", "-c", "photos"], ["search", "anything"], ["keys", "list"], ["delete-collection", "photos", "--yes"]],
    ids=lambda c: c[0],
)
def test_read_commands_never_create_a_database(workspace: Workspace, tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "typo" / "photos.db"
    result = workspace.run(*command, "--db", f"sqlite:///{missing}")
    _assert_one_error_line(result, "no database at", str(missing))
    assert not missing.parent.exists()  # neither the file nor its folder


def test_database_url_errors_name_the_real_cause(workspace: Workspace, tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = workspace.run("collections", "--db", f"postgresql://postgres@127.0.0.1:{port}/test")
    _assert_one_error_line(refused, f"cannot connect to the database at 127.0.0.1:{port}", "refused")
    dialect = workspace.run("collections", "--db", "mysql://user@localhost/photos")
    _assert_one_error_line(dialect, "unsupported database 'mysql'", "sqlite:///", "postgresql://")
    bare = workspace.run("collections", "--db", str(tmp_path / "photos.db"))
    _assert_one_error_line(bare, "invalid database URL", f"sqlite:///{tmp_path / 'photos.db'}")
    assert not (tmp_path / "photos.db").exists()


def test_read_commands_leave_an_empty_postgres_database_empty(workspace: Workspace, postgres_url: str) -> None:
    import sqlalchemy as sa

    result = workspace.run("collections", "--db", postgres_url)
    _assert_one_error_line(result, "no semstore database at")
    engine = sa.create_engine(postgres_url)
    try:
        assert sa.inspect(engine).get_table_names() == []  # no schema was created
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "command", [["--help"], ["collections"], ["stats"], ["keys", "list"], ["search", "--item", "1"]], ids=" ".join
)
def test_commands_without_a_model_do_not_import_torch(workspace: Workspace, ingested: Result, command: list[str]) -> None:
    # issue #19, item 4: importing torch/open_clip costs ~10 s; these commands must not pay it
    # (a search by a stored item decodes its codes: no model either). --help needs no database
    # either: 0.2 s instead of 0.9 s with SQLAlchemy and the storage layer imported.
    heavy = ("torch", "open_clip", "torchvision") + (("sqlalchemy", "semstore.storage") if command == ["--help"] else ())
    code = (
        "import sys; from semstore.cli.app import main\n"
        f"sys.argv = ['semstore', *{command!r}]\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        f"heavy = sorted(m for m in {heavy!r} if m in sys.modules)\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in workspace.env}
    env.update({k: v for k, v in workspace.env.items() if v is not None})
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY=\n" in done.stderr, done.stderr


def _run_cli_process(workspace: Workspace, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in workspace.env and k not in ("FORCE_COLOR", "NO_COLOR")}
    env.update({k: v for k, v in workspace.env.items() if v is not None})
    env.update(extra_env)
    command = [sys.executable, "-m", "semstore.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_model_loading_shows_a_spinner_on_a_terminal_only(workspace: Workspace, ingested: Result) -> None:
    # issue #19, item 4: the seconds spent loading the model are announced on a terminal's
    # stderr; off a terminal (here: pipes) stdout and stderr carry only the results.
    shown = _run_cli_process(workspace, "search", "red circle", "-k", "2", FORCE_COLOR="1")
    assert shown.returncode == 0, shown.stderr
    stderr = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.stderr)  # (the terminal's colour and cursor codes)
    assert f"loading model {TINY} (no pretrained weights) ..." in stderr
    assert re.search(rf"model {TINY} \(no pretrained weights\) loaded in \d+\.\d s", stderr), stderr
    piped = _run_cli_process(workspace, "search", "red circle", "-k", "2", "--json")
    assert piped.returncode == 0, piped.stderr
    assert "loading model" not in piped.stderr + piped.stdout
    assert [json.loads(line)["rank"] for line in piped.stdout.splitlines()] == [1, 2]
    by_item = _run_cli_process(workspace, "search", "--item", "1", "-k", "2", FORCE_COLOR="1")
    assert by_item.returncode == 0, by_item.stderr
    assert "loading model" not in by_item.stderr  # no model is loaded for it
