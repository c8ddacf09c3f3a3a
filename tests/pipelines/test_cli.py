"""Every ``eddy`` command, through its real entry point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.bus import KafkaBus
from connectors.embedded import ServiceProcess, free_port, pid_alive
from connectors.messages import Frame, decode
from connectors.registry import ModelRegistry
from connectors.state import Checkpoint, StateStore
from pipelines.cli import build_parser, main
from pipelines.serialization import dump_state, project_secret
from tests.pipelines import support

EDDY = str(Path(sys.executable).parent / "eddy")
EXAMPLES = Path(__file__).resolve().parents[2] / "pipelines" / "examples"


@pytest.fixture
def env(
    eddy_broker: ServiceProcess, eddy_redis: ServiceProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Environment pointing the CLI at the test services and a private home."""
    values = {
        "EDDY_BROKER": eddy_broker.url,
        "EDDY_STATE": eddy_redis.url,
        "EDDY_HOME": str(tmp_path / "home"),
        "EDDY_REGISTRY": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values}


def own_home(home: Path) -> dict[str, str]:
    """This process's environment without any ``EDDY_`` setting but ``EDDY_HOME=home``: the CLI starts its own
    embedded services there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDDY_")}
    env["EDDY_HOME"] = str(home)
    return env


def eddy_command(env: dict[str, str], *, timeout_s: float) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs the ``eddy`` console script with ``env`` and returns what it printed and its exit code."""

    def eddy(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([EDDY, *args], env=env, capture_output=True, text=True, timeout=timeout_s, check=False)

    return eddy


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in commands.items():
        assert sub.format_help().startswith("usage: eddy " + name), name
    with pytest.raises(SystemExit) as exc:
        main(["topics", "--help"])
    assert exc.value.code == 0
    assert "create" in capsys.readouterr().out


def test_topics_create_list_describe(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topics", "create", "cli.topics.a", "cli.topics.b", "--partitions", "3"]) == 0
    assert main(["topics", "list"]) == 0
    listed = capsys.readouterr().out.split()
    assert {"cli.topics.a", "cli.topics.b"} <= set(listed)
    assert main(["topics", "describe", "cli.topics.a"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["partitions"] == 3 and sum(info["messages"].values()) == 0


def test_produce_then_consume_with_keys(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["topics", "create", "cli.pc", "--partitions", "2"]) == 0
    lines = [json.dumps({"user": f"u{i % 3}", "n": i}) for i in range(12)]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert main(["produce", "cli.pc", str(path), "--key", "user"]) == 0
    capsys.readouterr()
    assert main(["consume", "cli.pc", "--from-beginning", "--limit", "12", "--meta"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(json.loads(r["value"])["n"] for r in rows) == list(range(12))
    partitions_by_key: dict[str, set[int]] = {}
    for row in rows:
        partitions_by_key.setdefault(row["key"], set()).add(row["partition"])
    assert all(len(parts) == 1 for parts in partitions_by_key.values())  # one key, one partition


def test_produce_reports_bad_lines_and_missing_topics(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"ok": 1}\nnot json\n')
    assert main(["produce", "cli.bad", str(path)]) == 2
    assert "line 2 is not JSON" in capsys.readouterr().err
    path.write_text('{"ok": 1}\n')
    assert main(["produce", "cli.missing-topic", str(path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_spec_validate_and_schema(env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    examples = sorted(str(p) for p in EXAMPLES.glob("*.yaml"))
    assert main(["spec", "validate", *examples]) == 0
    assert "ok" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ninput: {topics: [x], schema: event/v1}\noperator: {use: a.b:C}\nbatch: {max: 0}\n")
    assert main(["spec", "validate", str(bad)]) == 2
    assert "batch.max" in capsys.readouterr().err
    assert main(["spec", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "properties" in schema and "operator" in schema["properties"]


def test_models_list_promote_rollback(env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    registry = ModelRegistry(env["EDDY_REGISTRY"], tmp_path / "home" / "mlartifacts")
    secret = project_secret("", Path(env["EDDY_HOME"]))
    for value in ("A", "B"):
        registry.publish(
            "cli-model", dump_state(support.ConstantModel(value), secret), params={}, metrics={}, offsets={}, events=1
        )
    assert main(["models", "promote", "cli-model", "1"]) == 0
    assert main(["models", "promote", "cli-model", "2"]) == 0
    assert registry.load("cli-model", alias="champion").info.version == "2"
    assert main(["models", "rollback", "cli-model"]) == 0
    assert registry.load("cli-model", alias="champion").info.version == "1"
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    models = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any(m["name"] == "cli-model" for m in models)
    assert main(["models", "list", "cli-model"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    announced = [json.loads(r.value) for r in KafkaBus(env["EDDY_BROKER"]).read("eddy.models", 100, timeout_s=3)]
    assert [a["version"] for a in announced if a["model"] == "cli-model"][-3:] == ["1", "2", "1"]
    assert main(["models", "rollback", "no-such-model"]) == 2


def test_checkpoints_list_says_which_a_worker_can_restore_and_delete_removes_them(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    store = StateStore(env["EDDY_STATE"])
    ours = project_secret("", Path(env["EDDY_HOME"]))
    store.write_checkpoint(Checkpoint(pipeline="cli-ckpt-ok", state=dump_state({"learned": 3}, ours), events=3))
    foreign = dump_state({"learned": 7}, b"another deployment's secret")
    store.write_checkpoint(Checkpoint(pipeline="cli-ckpt-foreign", state=foreign, events=7, offsets={"t:0": 7}))
    capsys.readouterr()

    assert main(["checkpoints", "list"]) == 0
    listed = {r["pipeline"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert listed["cli-ckpt-ok"]["restorable"] is True and listed["cli-ckpt-ok"]["events"] == 3
    foreign_row = listed["cli-ckpt-foreign"]
    assert foreign_row["restorable"] is False and "another EDDY_SECRET" in foreign_row["problem"]
    assert foreign_row["bytes"] == len(foreign) and foreign_row["written"].endswith("Z")

    assert main(["checkpoints", "delete", "cli-ckpt-foreign", "cli-ckpt-never"]) == 2  # one unknown: none deleted
    assert "no checkpoint of 'cli-ckpt-never'" in capsys.readouterr().err
    assert store.read_checkpoint("cli-ckpt-foreign") is not None
    assert main(["checkpoints", "delete", "cli-ckpt-foreign"]) == 0
    assert "starts afresh from the beginning" in capsys.readouterr().err
    assert store.read_checkpoint("cli-ckpt-foreign") is None and store.read_offsets("cli-ckpt-foreign") == {}
    assert "cli-ckpt-foreign" not in store.checkpoint_pipelines() and "cli-ckpt-ok" in store.checkpoint_pipelines()


def test_checkpoints_list_on_a_store_without_any_says_so(
    env: dict[str, str],
    eddy_redis_factory: Callable[[], ServiceProcess],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EDDY_STATE", eddy_redis_factory().url)
    assert main(["checkpoints", "list"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no pipeline has a checkpoint" in captured.err


def test_up_status_down_share_embedded_services(tmp_path: Path) -> None:
    eddy = eddy_command(own_home(tmp_path / "home"), timeout_s=120)

    up = eddy("up")
    assert up.returncode == 0, up.stderr
    record = json.loads((tmp_path / "home" / "broker.json").read_text())
    assert pid_alive(record["pid"])
    status = eddy("status")
    assert record["url"] in status.stderr
    created = eddy("topics", "create", "shared.topic")  # reuses the running broker, leaves it running
    assert created.returncode == 0, created.stderr
    assert pid_alive(record["pid"])
    assert "shared.topic" in eddy("topics", "list").stdout
    down = eddy("down")
    assert down.returncode == 0 and "broker" in down.stderr
    assert not pid_alive(record["pid"])
    assert "not running" in eddy("status").stderr


@pytest.mark.slow
def test_demo_runs_on_embedded_services_and_exits(tmp_path: Path) -> None:
    eddy = eddy_command(own_home(tmp_path / "home"), timeout_s=240)
    done = eddy("demo", "--events", "3000", "--rate", "5000", "--port", "0", "--dashboard-port", str(free_port()))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stopped: 3,000 events" in done.stderr and "dashboard: http://127.0.0.1:" in done.stderr
    assert not (tmp_path / "home" / "broker.json").exists()  # the demo's own services were stopped


@pytest.mark.slow
def test_a_demo_checkpoint_it_cannot_restore_stops_make_run_with_the_fix(tmp_path: Path) -> None:
    """A checkpoint of another deployment (or an older learner) in the demo's Redis: the demo exits 2 with the
    reason and the command that removes it (it hung before; then, now and again, aborted at exit while a source
    thread was still in torch: the demo now ends its threads on this path too)."""
    eddy = eddy_command(own_home(tmp_path / "home"), timeout_s=240)

    up = eddy("up")
    assert up.returncode == 0, up.stderr
    try:
        state_url = next(line.split()[1] for line in up.stderr.splitlines() if line.startswith("state"))
        stale = dump_state({"agent": "from elsewhere"}, b"another deployment's secret")
        StateStore(state_url).write_checkpoint(Checkpoint(pipeline="live-allocation", state=stale, events=42))
        demo = eddy("demo", "--events", "3000", "--port", "0", "--dashboard-port", str(free_port()))
        assert demo.returncode == 2, demo.stderr[-3000:]
        assert "error: pipeline 'live-allocation': its checkpoint (42 events" in demo.stderr
        assert "eddy checkpoints delete live-allocation" in demo.stderr
    finally:
        eddy("down")


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_the_demo_cleanly(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals the whole foreground process group: the embedded services must outlive the
    worker's final checkpoint, so they run in groups of their own and the demo stops them itself."""
    env = own_home(tmp_path / "home")
    demo = subprocess.Popen(
        [EDDY, "demo", "--rate", "2000", "--port", "0", "--dashboard-port", str(free_port())],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own foreground group, as a shell gives it
    )
    try:
        assert demo.stderr is not None
        for line in demo.stderr:
            if "restored checkpoint" in line or "no checkpoint" in line:
                break
        os.killpg(demo.pid, signal.SIGINT)
        _, err = demo.communicate(timeout=120)
    finally:
        demo.kill()
    assert demo.returncode == 0, err[-3000:]
    assert "stopped:" in err and "ECONNREFUSED" not in err and "Unable connect" not in err


def test_frames_publishes_synthetic_video_keyed_by_camera(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["topics", "create", "cli.frames", "--partitions", "2"]) == 0
    capsys.readouterr()
    args = ["frames", "cli.frames", "--cameras", "3", "--frames", "4", "--height", "16", "--width", "12"]
    assert main([*args, "--max-speed"]) == 0
    assert "produced 12 of 12 frames (3 cameras, 16x12x3) to cli.frames" in capsys.readouterr().err
    records = KafkaBus(env["EDDY_BROKER"]).read("cli.frames", 12, timeout_s=10)
    frames = [(r.key, decode(r.value, "frame/v1"), r.partition) for r in records]
    assert all(isinstance(frame, Frame) and key == frame.stream.encode() for key, frame, _ in frames)
    by_camera: dict[str, list[int]] = {}
    for _, frame, _ in sorted(frames, key=lambda f: f[1].ts):
        assert isinstance(frame, Frame) and frame.to_numpy().shape == (16, 12, 3)
        by_camera.setdefault(frame.stream, []).append(frame.seq)
    assert by_camera == {"cam0": [0, 1, 2, 3], "cam1": [0, 1, 2, 3], "cam2": [0, 1, 2, 3]}
    assert all(
        len({p for _, f, p in frames if f.stream == camera}) == 1 for camera in by_camera
    )  # one camera, one partition
    assert main(["frames", "cli.frames", "--cameras", "1", "--frames", "2", "--rate", "200"]) == 0  # paced
    assert "produced 2 of 2 frames" in capsys.readouterr().err
    assert main(["frames", "cli.frames", "--rate", "0"]) == 2
    assert "--rate must be > 0" in capsys.readouterr().err
    assert main(["frames", "cli.no-such-topic", "--frames", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_recommender_train_publishes_a_version_with_held_out_metrics(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ["recommender", "train", "--simulate", "5", "--users", "40", "--streamers", "8", "--hours", "12"]
    assert main([*args, "--model", "cli-recs", "--steps", "5", "--dim", "8", "--length", "8", "--k", "3"]) == 0
    info = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (info["model"], info["version"]) == ("cli-recs", "1")
    registry = ModelRegistry(env["EDDY_REGISTRY"], tmp_path / "home" / "mlartifacts")
    [version] = registry.list_versions("cli-recs")
    assert 0 <= version.metrics["heldout_hit_rate_at_3"] <= 1 and version.metrics["train_loss"] > 0
    announced = [json.loads(r.value) for r in KafkaBus(env["EDDY_BROKER"]).read("eddy.models", 10, timeout_s=3)]
    assert [(a["model"], a["alias"]) for a in announced] == [("cli-recs", "champion")]
    assert main(["recommender", "train", "--simulate", "5", "--model", "x", "--steps", "0", "--length", "1"]) == 2
