"""The team set-up: compose.yaml (checked as a file: no container runtime here) and deploy/team-local.sh, which runs
the same commands (deploy/team.sh) as real processes on loopback, trains a tiny model and asks the service."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlflow_server import mlflow_cli

ROOT = Path(__file__).resolve().parents[1]
TEAM_SH = (ROOT / "deploy" / "team.sh").read_text()
SERVICES = {"s3", "buckets", "mlflow", "serve"}  # what deploy/team.sh starts
DEFAULT_PORTS = {"s3": "S3_PORT", "mlflow": "MLFLOW_PORT", "serve": "HEIMDALL_PORT"}


def _processes_with(variable: str, value: str) -> list[int]:
    """Processes whose environment holds variable=value (every process the script starts inherits TEAM_DATA)."""
    wanted = f"{variable}={value}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if wanted in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def test_compose_file_runs_the_scripts_services():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == SERVICES | {"train"}
    labels = set(re.findall(r"^([a-z0-9]+)\)$", TEAM_SH, re.MULTILINE))
    assert labels == SERVICES
    for name in SERVICES:
        assert services[name]["command"] == [name]
        assert services[name]["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    assert services["train"]["entrypoint"] == ["heimdall", "train"] and services["train"]["profiles"] == ["train"]
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/opt/heimdall/deploy/team.sh"]' in dockerfile and ".[team]" in dockerfile
    # each published port is the container port team.sh listens on by default, on the host's loopback only
    default = {}
    for name, variable in DEFAULT_PORTS.items():
        (default[name],) = re.findall(rf"\${{{variable}:-(\d+)}}", TEAM_SH)
        assert services[name]["ports"] == [f"127.0.0.1:{default[name]}:{default[name]}"]
    env = services["serve"]["environment"]
    assert env["MLFLOW_TRACKING_URI"] == f"http://mlflow:{default['mlflow']}"
    assert env["AWS_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"] == "http://s3:8333"
    assert "mlflow:5000" in services["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert services["mlflow"]["depends_on"] == {"buckets": {"condition": "service_completed_successfully"}}
    # the documentation names every setting and service the file uses
    deploy_doc = (ROOT / "docs" / "DEPLOY.md").read_text()
    for service in services.values():
        for variable in service["environment"]:
            assert f"`{variable}`" in deploy_doc, variable
    for name in services:
        assert f"`{name}`" in deploy_doc, name


@pytest.mark.system
@pytest.mark.skipif(mlflow_cli() is None, reason="no `mlflow server`: the full mlflow package (team extra)")
def test_team_local_script_trains_publishes_and_serves(tmp_path):
    data = tmp_path / "team"
    data.mkdir()
    bin_dir = str(Path(sys.executable).parent)  # heimdall, weed, mlflow and python of this environment
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TEAM_DATA": str(data)}
    try:
        done = subprocess.run(
            ["bash", str(ROOT / "deploy" / "team-local.sh")], env=env, capture_output=True, text=True, timeout=900
        )
    finally:
        leftovers = _processes_with("TEAM_DATA", str(data))
    logs = {p.name: p.read_text(errors="replace")[-1500:] for p in data.glob("*.log")}
    assert done.returncode == 0, (done.stderr[-3000:], logs)
    assert not leftovers, leftovers  # every service was stopped
    result = json.loads(done.stdout)
    assert result["registry"]["name"] == "heimdall-localizer" and result["registry"]["version"] == "1"
    answer = result["answer"]
    assert -90 <= answer["lat"] <= 90 and -180 <= answer["lon"] <= 180
    assert len(answer["receivers_used"]) >= 1
    train = json.loads((data / "train.json").read_text())
    assert train["tracking_uri"].startswith("http://127.0.0.1:")
    assert train["model"]["store"].startswith("s3://models")
    assert not (data / "workspace" / "mlartifacts").exists()  # the run's artifacts went to the server's bucket


CLUSTER_VARIABLES = {  # what the launchers set: the last task of a 16-task array, the second node
    "SLURM_ARRAY_TASK_ID": "15",
    "SLURM_CPUS_PER_TASK": "8",
    "NODE_RANK": "1",
    "JOB_COMPLETION_INDEX": "15",
}


def _cluster_commands(text: str) -> list[str]:
    """The documented cluster command lines (sharded simulation, DDP training), continuation lines joined and the
    job's variables given values."""
    commands = []
    for kind, block in re.findall(r"```(\w*)\n(.*?)```", text, re.DOTALL):
        if kind == "yaml":
            manifest = yaml.safe_load(block)
            if manifest.get("kind") == "Job":  # Kubernetes: the containers' shell command lines
                commands += [c["command"][-1] for c in manifest["spec"]["template"]["spec"]["containers"]]
        else:
            commands += [line for line in block.replace("\\\n", " ").splitlines() if not line.startswith("#")]
    commands = [c for c in commands if re.search(r"--shard |--strategy |--num-nodes ", c)]
    return [re.sub(r"\$\{?(\w+)\}?", lambda m: CLUSTER_VARIABLES[m.group(1)], c) for c in commands]


def test_cluster_recipes_use_the_real_flags():
    from heimdall.cli import build_parser

    found = {"simulate": 0, "train": 0}
    for doc in ("DEPLOY.md", "TRAINING.md"):
        for command in _cluster_commands((ROOT / "docs" / doc).read_text()):
            tokens = shlex.split(command, comments=True)
            args = build_parser().parse_args(tokens[tokens.index("heimdall") + 1 :])  # exits on an unknown flag
            found[args.command] += 1
            if args.command == "simulate":
                assert args.shard == (15, 16), command  # the last task of a 0-15 array is shard 15 of 16
            else:
                assert args.strategy == "ddp" and args.accelerator == "gpu", command
    assert found["simulate"] >= 2 and found["train"] >= 3, found
