"""Helpers shared by the integration and e2e tests (not fixtures: plain functions)."""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


_handed_out: set[int] = set()


def _ephemeral_ports() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _worker_block() -> range:
    """This pytest-xdist worker's own block of base ports in [10000, 20000): with `make test`'s two
    workers, each starting its own services, two workers can never pick the same port (the +10000
    twins fall in [20000, 30000), so they cannot meet another worker's base ports either)."""
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    size = 10000 // count
    return range(10000 + index * size, 10000 + (index + 1) * size)


def find_free_port() -> int:
    """A free port whose +10000 twin (SeaweedFS's gRPC port) is free too, never handed out twice.

    Both lie outside the kernel's ephemeral range: there, any outgoing connection (weed's own gRPC
    clients while it starts, boto3, httpx) can take the port between this check and the server's bind.
    """
    ephemeral, block = _ephemeral_ports(), _worker_block()
    for _ in range(2000):
        port = random.randint(block.start, block.stop - 1)
        pair = (port, port + 10000)
        if any(p in ephemeral or p in _handed_out or not _bindable(p) for p in pair):
            continue
        _handed_out.update(pair)
        return port
    raise RuntimeError(f"no free port pair in {block} outside the ephemeral range")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment a new user's shell has: no FLOWTUNE_* or PREFECT_* left over from ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWTUNE_", "PREFECT_"))}
    env.update(extra)
    return env


def scratch_clone(dest: Path) -> Path:
    """Copy the working tree (tracked + untracked, not ignored) into a fresh git repo at `dest`.

    The venv is shared through a symlink (bootstrap sees it up to date), and PYTHONPATH in the
    callers makes the clone's own code win over the editable install of the original checkout.
    """
    # The clone shares this venv; bring its install stamp up to date here first, or the clone's own
    # bootstrap would reinstall into the shared venv with console scripts pointing into the clone.
    subprocess.run(["bash", "infra/local/bootstrap.sh"], cwd=ROOT, check=True, capture_output=True)
    return working_tree_copy(dest)


def working_tree_copy(dest: Path) -> Path:
    """`scratch_clone` without bringing the venv up to date: for a test that runs no stage and no pip (e.g.
    `dvc status` alone), the copy of the working tree as a fresh git repo with the venv linked."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(git + ["init", "-q"], cwd=dest, check=True)
    subprocess.run(git + ["add", "-A"], cwd=dest, check=True)
    subprocess.run(git + ["commit", "-qm", "scratch"], cwd=dest, check=True)
    return dest


def port_settings() -> dict[str, str]:
    """Settings for a private set of services on free ports (no clash with a user's running ones)."""
    return {
        "FLOWTUNE_S3_PORT": str(find_free_port()),
        "FLOWTUNE_SEAWEED_MASTER_PORT": str(find_free_port()),
        "FLOWTUNE_SEAWEED_VOLUME_PORT": str(find_free_port()),
        "FLOWTUNE_SEAWEED_FILER_PORT": str(find_free_port()),
        "FLOWTUNE_PREFECT_PORT": str(find_free_port()),
    }


def tiny_encoder(dest: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's vocabulary: random weights (the same for a seed, so that a
    test does not pass or fail with the draw of its initial weights), real tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tasks.basemodel import resolve_base_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model("minilm"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=256)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


NAMES = ["john", "mary", "alice", "peter", "ahmed", "chen", "olga", "bob"]
PLACES = ["paris", "london", "berlin", "rome", "lagos", "lima", "oslo", "tokyo"]


def synthetic(count: int, seed: int) -> list:
    """`<name> went to <place> today`-style sentences: a tiny model can learn them in a few epochs."""
    from tasks.kinds.ner.records import NerRecord

    rng = random.Random(seed)
    records = []
    for i in range(count):
        name, place = rng.choice(NAMES), rng.choice(PLACES)
        filler = rng.choice([["went", "to"], ["lives", "in"], ["flew", "from"]])
        tokens = [name, *filler, place, *rng.sample(["today", "again", "yesterday", "ok", "now"], 2)]
        tags = ["B-person", "O", "O", "B-geo-loc", "O", "O"]
        records.append(NerRecord(f"s{seed}:{i}", tuple(tokens), tuple(tags)))
    return records


def distinct_sentences(count: int) -> list[tuple[list[str], list[str]]]:
    """Unique `<name> <verb> <prep> <place> <w> <w>` sentences (no split can leak into another)."""
    rng, seen, rows = random.Random(7), set(), []
    fillers = ["today", "again", "yesterday", "ok", "now", "lol", "haha", "tonight"]
    while len(rows) < count:
        tokens = [rng.choice(NAMES), *rng.choice([["went", "to"], ["lives", "in"], ["flew", "from"]]),
                  rng.choice(PLACES), *rng.sample(fillers, 2)]
        if tuple(tokens) not in seen:
            seen.add(tuple(tokens))
            rows.append((tokens, ["B-person", "O", "O", "B-geo-loc", "O", "O"]))
    return rows


def write_conll(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("".join(f"{t}\t{g}\n" for t, g in zip(*row, strict=True)) + "\n" for row in rows))


def synthetic_splits(folder: Path, count: int = 300) -> Path:
    """A pre-split CoNLL folder (train/dev/test.conll) of distinct synthetic sentences."""
    rows = distinct_sentences(count)
    train, dev = count * 2 // 3, count * 5 // 6
    for split, part in (("train", rows[:train]), ("dev", rows[train:dev]), ("test", rows[dev:])):
        write_conll(folder / f"{split}.conll", part)
    return folder


def train_params(base: Path, **overrides):
    """Train params for a tiny encoder: seconds per run, one thread, nothing written but the model. NER's
    schema: the common keys, which every kind reads, plus label_all_pieces."""
    from tasks.kinds.ner.params import NerTrainParams

    values = {
        "base_model": str(base),
        "max_length": 16,
        "epochs": 2,
        "batch_size": 4,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-3,
        "weight_decay": 0.01,
        "warmup_ratio": 0.1,
        "layer_lr_decay": 1.0,
        "freeze_embeddings": False,
        "freeze_layers": 0,
        "max_grad_norm": 1.0,
        "dropout": 0.1,
        "early_stopping_patience": 0,
        "label_all_pieces": False,
        "seed": 13,
        "num_threads": 1,
        "precision": "auto",
        "compile": False,
        "group_by_length": True,
        "processes": 1,
        "checkpoint_every_steps": 0,
        "log_every_steps": 0,
        "lora": {"enabled": False, "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"]},
    }
    return NerTrainParams(**{**values, **overrides})


def evaluate_params(**overrides):
    """Evaluate params for small tests: the repo's minimum-functionality file, a few latency samples. NER's
    schema (the common keys plus the checklist, which text classification ignores)."""
    from tasks.kinds.ner.params import NerEvaluateParams

    values = {"batch_size": 4, "latency_sentences": 3,
              "checklist": {"name_type": "person", "max_cases": 50, "seed": 13,
                            "mft_file": str(ROOT / "data/reference/checklist_mft.jsonl")}}
    return NerEvaluateParams(**{**values, **overrides})


# For pipeline runs whose subject is orchestration, not compression: the compress stage still runs but
# builds, scores and times nothing (variants cost 10-30 s a run with a tiny model: an ONNX export, two
# quantizations, four evaluations). Compression itself: tests/unit/test_compress.py,
# tests/integration/test_registry.py, tests/integration/test_serve.py and both e2e runs.
NO_VARIANTS = {"variants": []}


def set_params(repo: Path, params_file: str = "params.yaml", **sections: dict) -> None:
    path = repo / params_file
    params = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


SENTIMENT_WORDS = {"positive": ["love", "enjoyed", "adore"], "negative": ["hate", "disliked", "dread"],
                   "neutral": ["visited", "passed", "saw"]}


def synthetic_texts(path: Path, count: int = 450) -> Path:
    """A CSV of distinct `<name> <sentiment verb> <place> <w> <w>` texts labelled by the verb's sentiment:
    a tiny model learns it in a few epochs."""
    rng, seen, rows = random.Random(11), set(), []
    fillers = ["today", "again", "yesterday", "ok", "now", "lol", "haha", "tonight"]
    while len(rows) < count:
        label = rng.choice(sorted(SENTIMENT_WORDS))
        text = " ".join([rng.choice(NAMES), rng.choice(SENTIMENT_WORDS[label]), rng.choice(PLACES),
                         *rng.sample(fillers, 2)])
        if text not in seen:
            seen.add(text)
            rows.append(f"t{len(rows)},{text},{label}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("id,text,label\n" + "".join(rows), encoding="utf-8")
    return path


def client_env_file(settings) -> str:
    """A `.env` that points a checkout at already running services instead of starting its own (with
    the Prefect API's auth string when it has one)."""
    from flows.ops.services import prefect_auth_env

    auth = "".join(f"{name}={value}\n" for name, value in prefect_auth_env(settings).items())
    return (f"FLOWTUNE_S3_ENDPOINT_URL={settings.endpoint_url}\n"
            f"FLOWTUNE_S3_ACCESS_KEY_ID={settings.s3_access_key_id}\n"
            f"FLOWTUNE_S3_SECRET_ACCESS_KEY={settings.secret_key()}\n"
            f"PREFECT_API_URL={settings.api_url}\n{auth}"
            # a client of those services: no worker of its own (nobody would stop it)
            "FLOWTUNE_START_WORKER=false\n")


def run_flow(repo: Path, settings, *run_args: str) -> subprocess.CompletedProcess:
    """`flowtune services up` (wires the DVC remote) then `flowtune run [run_args]` in `repo`, against
    the already running services of `settings`, as a user's shell would run them."""
    (repo / ".env").write_text(client_env_file(settings))
    sh = {"cwd": repo, "env": clean_env(PYTHONPATH=str(repo)), "capture_output": True, "text": True,
          "timeout": 1200}
    up = subprocess.run([".venv/bin/flowtune", "services", "up"], **sh)
    assert up.returncode == 0, up.stdout + up.stderr
    return subprocess.run([".venv/bin/flowtune", "run", *run_args], **sh)


def api_client(settings):
    """An httpx client of the Prefect API of `settings` with its basic auth (the server refuses calls
    without it): `api_client(settings).post("flow_runs/filter", json=...)`. Use it as a context manager."""
    import httpx

    from flows.ops.services import prefect_auth_header

    return httpx.Client(base_url=settings.api_url.rstrip("/") + "/", headers=prefect_auth_header(settings),
                        timeout=30)


def api_post(settings, path: str, json=None, **kwargs):
    """POST to the Prefect API of `settings` with its auth (a closed client afterwards); the Response."""
    with api_client(settings) as client:
        return client.post(path, json=json, **kwargs)


def api_get(settings, path: str, **kwargs):
    """GET from the Prefect API of `settings` with its auth; the Response."""
    with api_client(settings) as client:
        return client.get(path, **kwargs)


def latest_flow_run(settings, flow_name: str = "flowtune-pipeline") -> dict:
    """The most recent run of `flow_name` on the Prefect server of `settings`."""
    query = {"flows": {"name": {"any_": [flow_name]}}, "sort": "START_TIME_DESC", "limit": 1}
    with api_client(settings) as client:
        runs = client.post("flow_runs/filter", json=query).json()
    assert runs, f"no run of {flow_name} on {settings.api_url}"
    return runs[0]


def discard_services(settings) -> None:
    """Stop a throwaway set of local services at once: SIGKILL to each process group.

    For test teardown only, where the data goes with the temporary folder: `services.down` gives
    SeaweedFS its graceful 15 s (weed 4.48 always spends them), which a test session pays per set.
    """
    import signal
    import time

    from flows.ops import services

    names = ("prefect-worker", "prefect-server", "seaweedfs")
    pids = [pid for name in names if (pid := services.running_pid(settings, name)) is not None]
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while any(services._group_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def train_ner(params, entity_types: list[str], data_dir: Path, model_dir: Path, metrics_path: Path, curve_path: Path,
              checkpoint_dir: Path | None = None) -> dict:
    """`tasks.train.fit` for NER over `entity_types` (the training kind of `tasks.kinds.ner`)."""
    from tasks import train
    from tasks.kinds.ner.training import NerTraining

    outputs = train.Outputs(Path(model_dir), Path(metrics_path), Path(curve_path),
                            checkpoint_dir and Path(checkpoint_dir))
    return train.fit(NerTraining(entity_types), params, Path(data_dir), outputs)


def kind(task: str = "token-classification", multi_label: bool = False):
    """The stages' task kind (`tasks.kinds.kind_for`) of the project's params file for `task`."""
    from tasks.kinds import kind_for
    from tasks.params import load_params

    params_file = {"token-classification": "params.yaml", "sequence-classification": "params-sentiment.yaml"}[task]
    params = load_params(ROOT / params_file)
    if multi_label:
        params = params.model_copy(update={"task": params.task.model_copy(update={"multi_label": True})})
    return kind_for(params)


def stop_worker(process: subprocess.Popen) -> None:
    """Stop a `prefect worker` started with `start_new_session=True`: SIGTERM, then SIGKILL after 5 s.

    A Prefect 3 worker often spends a full 30 s in its own shutdown after SIGTERM; a test's worker has
    no work left by then, so waiting longer only costs the suite time.
    """
    import signal

    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def page_block(page: str, fence: str, containing: str) -> str:
    """The first ```<fence> block of `page` (a path from the repository root: `docs/concepts/registry.md`) that
    holds `containing`, as printed. Tests that run a page's block read it here, so the page and the test cannot
    drift apart: a block edited, moved or deleted fails the test, naming the page."""
    blocks = re.findall(rf"^```{fence}\n(.*?)^```", (ROOT / page).read_text(), re.MULTILINE | re.DOTALL)
    found = [block for block in blocks if containing in block]
    assert found, f"{page}: no ```{fence} block holds {containing!r} (a test runs that block as written)"
    return found[0]


def page_commands(page: str, containing: str) -> list[str]:
    """The commands of `page`'s bash block that holds `containing`: comments dropped, continued lines joined."""
    lines = page_block(page, "bash", containing).replace("\\\n", " ").splitlines()
    return [line.split("  #")[0].strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def kill_service(settings, name: str) -> None:
    """kill -9 a local service's whole process group (as a crash or an OOM kill would) and wait until it is gone."""
    import signal

    from flows.ops import services

    pid = services.running_pid(settings, name)
    assert pid is not None, f"{name} is not running"
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while services.running_pid(settings, name) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
