"""The team set-up: compose.yaml (checked as a file: no container runtime here) and deploy/team-local.sh, which runs
the same commands (deploy/team.sh) as real processes on loopback, trains a tiny model and asks the service."""

import ipaddress
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import onnx
import pytest
import yaml

from mlflow_server import mlflow_cli
from s3server import _free_ports

ROOT = Path(__file__).resolve().parents[1]
TEAM_SH = (ROOT / "deploy" / "team.sh").read_text()
SERVICES = {"keys", "s3", "buckets", "mlflow", "serve"}  # what deploy/team.sh starts
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
    # the private key only where training runs, the public key where the service runs; MLflow behind its basic auth
    mounts = {name: [v.split(":")[0] for v in service.get("volumes", [])] for name, service in services.items()}
    assert [name for name, volumes in mounts.items() if "signing-key" in volumes] == ["keys", "train"]
    assert "verify-key" in mounts["serve"] and services["serve"]["volumes"] == ["verify-key:/data/verify:ro"]
    assert services["train"]["environment"]["HEIMDALL_SIGNING_KEY_FILE"].startswith("/data/signing/")
    assert services["serve"]["environment"]["HEIMDALL_VERIFY_KEY_FILE"].startswith("/data/verify/")
    for name in ("serve", "train"):
        assert services[name]["depends_on"]["keys"] == {"condition": "service_completed_successfully"}
    assert env["MLFLOW_TRACKING_USERNAME"] and "HEIMDALL_MLFLOW_PASSWORD" in env["MLFLOW_TRACKING_PASSWORD"]
    assert "mlflow server --app-name basic-auth" in TEAM_SH
    # the documentation names every setting and service the file uses
    deploy_doc = (ROOT / "docs" / "DEPLOY.md").read_text()
    for service in services.values():
        for variable in service["environment"]:
            assert f"`{variable}`" in deploy_doc, variable
    for name in services:
        assert f"`{name}`" in deploy_doc, name


def _outside_address() -> str | None:
    """An IPv4 address of this machine other than the loopback (None when it has none): the way in from elsewhere."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, the kernel only picks the outgoing address
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


def _listening(pids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of every IPv4/IPv6 TCP socket the processes listen on."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            pass
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # LISTEN
                address, port = local.split(":")
                raw = bytes.fromhex(address)
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # host order per 32-bit word
                found.add((str(ipaddress.ip_address(words)), int(port, 16)))
    return found


@pytest.mark.system
def test_the_s3_service_lets_only_the_s3_api_be_reached(tmp_path):
    outside = _outside_address()
    if outside is None:
        pytest.skip("this machine has no address but the loopback to reach the service from outside by")
    import boto3
    from botocore.config import Config

    master, volume, filer, gateway, s3_port = _free_ports(5)
    data = tmp_path / "team"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "TEAM_BIND": "0.0.0.0",  # as in a container: reachable from the other containers
        "TEAM_DATA": str(data),
        "AWS_ACCESS_KEY_ID": "heimdall",
        "AWS_SECRET_ACCESS_KEY": "a-secret-of-the-team",
        **{f"WEED_{k}_PORT": str(v) for k, v in (("MASTER", master), ("VOLUME", volume), ("FILER", filer))},
        "WEED_S3_PORT": str(gateway),
        "S3_PORT": str(s3_port),
    }
    log = (tmp_path / "s3.log").open("w")
    proc = subprocess.Popen(
        ["bash", str(ROOT / "deploy" / "team.sh"), "s3"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://{outside}:{s3_port}",
            aws_access_key_id="heimdall",
            aws_secret_access_key="a-secret-of-the-team",
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2),
        )
        deadline = time.time() + 180
        while True:  # up: the S3 API with credentials works from outside
            try:
                s3.create_bucket(Bucket="models")
                s3.put_object(Bucket="models", Key="heimdall-localizer/1/model.onnx", Body=b"the real model")
                break
            except Exception:
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "s3.log").read_text()[-3000:]
                time.sleep(1)
        key = "heimdall-localizer/1/model.onnx"
        assert s3.get_object(Bucket="models", Key=key)["Body"].read() == b"the real model"
        # nothing else listens where others can reach it: every other port of SeaweedFS is on the loopback
        listening = _listening(_processes_with("TEAM_DATA", str(data)))
        exposed = {(a, p) for a, p in listening if not ipaddress.ip_address(a).is_loopback}
        assert exposed == {("0.0.0.0", s3_port)}, listening
        for port in {p for _, p in listening} - {s3_port}:  # master, volume, filer, gateway, gRPC: refused outside
            with socket.socket() as c:
                c.settimeout(2)
                assert c.connect_ex((outside, port)) != 0, port
        with pytest.raises(httpx.ConnectError):  # the write that replaced a model through the filer
            httpx.put(f"http://{outside}:{filer}/buckets/models/{key}", content=b"evil", timeout=5)
        # and on the loopback, the filer and volume server take no unsigned write (nor read)
        for method, url in (
            ("PUT", f"http://127.0.0.1:{filer}/buckets/models/{key}"),
            ("DELETE", f"http://127.0.0.1:{filer}/buckets/models/{key}"),
            ("GET", f"http://127.0.0.1:{filer}/buckets/models/{key}"),
        ):
            assert (
                httpx.request(method, url, content=b"evil" if method == "PUT" else None, timeout=5).status_code == 401
            )
        fid = httpx.get(f"http://127.0.0.1:{master}/dir/assign", timeout=5).json()["fid"]
        assert httpx.post(f"http://127.0.0.1:{volume}/{fid}", files={"file": b"evil"}, timeout=5).status_code == 401
        assert s3.get_object(Bucket="models", Key=key)["Body"].read() == b"the real model"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert not _processes_with("TEAM_DATA", str(data))
    # and SeaweedFS's unix sockets, named after its ports (gRPC: port + 10000), are gone from /tmp
    ports = {str(p + offset) for p in (master, volume, filer, gateway) for offset in (0, 10000)}
    left = [sock.name for sock in Path("/tmp").glob("seaweedfs-*.sock") if sock.stem.rsplit("-", 1)[1] in ports]
    assert not left, left


def _wait_for_line(path: Path, text: str, proc: subprocess.Popen, timeout_s: float) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        content = path.read_text(errors="replace") if path.exists() else ""
        for line in content.splitlines():
            if text in line:
                return line
        assert proc.poll() is None, content[-3000:]
        time.sleep(1)
    raise AssertionError(f"no {text!r} in {path} after {timeout_s} s")


@pytest.mark.system
@pytest.mark.skipif(mlflow_cli() is None, reason="no `mlflow server`: the full mlflow package (team extra)")
def test_team_local_script_trains_signs_publishes_and_serves_behind_authentication(tmp_path, monkeypatch):
    data = tmp_path / "team"
    data.mkdir()
    bin_dir = str(Path(sys.executable).parent)  # heimdall, weed, mlflow and python of this environment
    password, admin_token = "an-mlflow-password", "an-admin-token"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "TEAM_DATA": str(data),
        "TEAM_KEEP": "1",
        "MLFLOW_TRACKING_USERNAME": "heimdall",
        "MLFLOW_TRACKING_PASSWORD": password,
        "HEIMDALL_ADMIN_TOKEN": admin_token,
    }
    env.pop("HEIMDALL_SIGNING_KEY_FILE", None)
    env.pop("HEIMDALL_VERIFY_KEY_FILE", None)
    out, err = tmp_path / "stdout.json", tmp_path / "stderr.log"
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "deploy" / "team-local.sh")], env=env, stdout=o, stderr=e, start_new_session=True
        )
    try:
        running = _wait_for_line(err, "team-local: running:", proc, 1500)
        mlflow_uri, service = re.search(r"MLflow (http://\S+), service (http://\S+) ", running).groups()
        result = json.loads(out.read_text())
        assert result["registry"]["name"] == "heimdall-localizer" and result["registry"]["version"] == "1"
        answer = result["answer"]
        assert -90 <= answer["lat"] <= 90 and -180 <= answer["lon"] <= 180
        assert len(answer["receivers_used"]) >= 1
        train = json.loads((data / "train.json").read_text())
        assert train["tracking_uri"] == mlflow_uri and train["model"]["store"].startswith("s3://models")
        assert not (data / "workspace" / "mlartifacts").exists()  # the run's artifacts went to the server's bucket

        # MLflow answers nobody without the team's account
        search = f"{mlflow_uri}/api/2.0/mlflow/registered-models/search"
        assert httpx.get(search, timeout=10).status_code == 401
        assert httpx.get(search, auth=("heimdall", "a-guess"), timeout=10).status_code == 401
        assert httpx.get(search, auth=("heimdall", password), timeout=10).status_code == 200

        # what is served was signed by the team's key, and the service checks it
        from heimdall.manifest import MANIFEST_TAG
        from heimdall.release.registry import register, registry_client
        from heimdall.signing import VerifyKey

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "heimdall")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        name, alias = result["registry"]["name"], result["registry"]["alias"]
        client = registry_client(mlflow_uri)
        manifest = json.loads(client.get_model_version_by_alias(name, alias).tags[MANIFEST_TAG])
        team_key = VerifyKey.from_file(data / "keys" / "verify" / "verify.pem")
        team_key.verify(manifest, "the served version")  # raises unless signed by the team's key
        served = httpx.get(f"{service}/v1/model", timeout=10).json()
        assert served["sha256"] == manifest["sha256"]
        serve_log = (data / "serve.log").read_text()
        assert "authenticity is not checked" not in serve_log and "no --verify-key" not in serve_log

        # a registry writer without the private key registers another model and points the alias at it: refused
        model = onnx.load(train["model"]["onnx"])
        model.metadata_props.add(key="note", value="registered by someone without the key")
        forged = register(model.SerializeToString(), None, tracking_uri=mlflow_uri, run_id=None)
        client.set_registered_model_alias(name, alias, forged.version)
        reload = httpx.post(
            f"{service}/v1/admin/reload", headers={"Authorization": f"Bearer {admin_token}"}, timeout=120
        )
        assert reload.status_code == 503 and "not signed" in reload.text, reload.text
        assert httpx.get(f"{service}/v1/model", timeout=10).json()["sha256"] == served["sha256"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            leftovers = _processes_with("TEAM_DATA", str(data))
    assert not leftovers, leftovers  # every service was stopped


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
