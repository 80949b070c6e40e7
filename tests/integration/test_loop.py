"""The whole loop, for real (issue #35): a champion v1 trained by the pipeline, `flowtune serve --capture`
following `:champion`, captured traffic in the capture bucket, `flowtune monitor` (no alarm on ordinary
traffic; shifted traffic flags exactly the measures it moves and sends `flowtune.drift.detected`), the nightly
deployment's trigger starting a training run on that event, the run registering v2 from a batch added with
`flowtune data add --commit`, and the serving process swapping to v2 by itself.

One scratch clone with its own services (`flowtune services up`: SeaweedFS, Prefect server, worker), a tiny
random BERT and synthetic NER data under data/external/ (committed: deployed runs work in a clean clone of
HEAD). Order matters: v1 is trained (`flowtune run`) and the batch is added before `flowtune deploy` creates
the automations, so the drift event is the one that starts training (the batch's own event would start a run).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import (
    NO_VARIANTS,
    api_get,
    api_post,
    clean_env,
    distinct_sentences,
    find_free_port,
    port_settings,
    scratch_clone,
    set_params,
    synthetic_splits,
    tiny_encoder,
    write_conll,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "wnut16-ner"  # params.yaml's model: the one prefect.yaml's trigger matches
SOURCE = "data/external/loop"
# What the shifted traffic (long, URL-heavy, all-caps) moves: its own measures, and low_confidence, the share of
# items whose *least* confident word is below monitor.low_confidence. A real model's minimum over 60 words is
# lower than over 6 (more draws), so a length shift moves that share; the mean confidence stays put.
SHIFTED = ["all_caps", "low_confidence", "pieces", "url", "words"]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class Clone:
    """The scratch checkout, its services' Settings and a shell in it."""

    def __init__(self, repo: Path):
        self.repo, self.env = repo, clean_env(PYTHONPATH=str(repo))

    def sh(self, *command: str, timeout: int = 900) -> str:
        result = subprocess.run(command, cwd=self.repo, env=self.env, capture_output=True, text=True,
                                timeout=timeout)
        assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout + result.stderr

    @property
    def settings(self):
        from tasks.settings import Settings

        return Settings(_env_file=self.repo / ".env", state_dir=self.repo / ".flowtune")

    def registry(self):
        from flows.registry import Registry
        from tasks.settings import s3_client

        settings = self.settings
        return Registry(s3_client(settings), settings.registry_bucket, settings.registry_prefix)

    def monitor(self, since_s: int) -> dict:
        out = self.repo / f".flowtune/monitor-{time.monotonic_ns()}.json"
        self.sh(".venv/bin/flowtune", "monitor", "--since", f"{since_s}s", "--json", str(out))
        return json.loads(out.read_text())


class Server:
    """`flowtune serve --capture` of the champion, in the clone (its .env, its params file's capture section)."""

    def __init__(self, clone: Clone):
        self.url = f"http://127.0.0.1:{(port := find_free_port())}"
        self.process = subprocess.Popen(
            [".venv/bin/flowtune", "serve", "--model", f"{MODEL}:champion", "--port", str(port), "--poll-s", "1",
             "--capture", "--params-file", "params.yaml", "--grace-s", "5"],
            cwd=clone.repo, env=clone.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()

    def ready(self, timeout_s: float = 180) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "".join(self.lines)[-3000:]
            try:
                response = httpx.get(f"{self.url}/readyz", timeout=2)
                if response.status_code == 200:
                    return response.json()
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError("serve not ready:\n" + "".join(self.lines)[-3000:])

    def send(self, texts: list[str], per_request: int = 20) -> None:
        for start in range(0, len(texts), per_request):
            reply = httpx.post(f"{self.url}/v1/predict", json={"texts": texts[start:start + per_request]}, timeout=60)
            assert reply.status_code == 200, reply.text

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def calm_texts(count: int) -> list[str]:
    """Traffic like the training data: the same generator's sentences."""
    return [" ".join(tokens) for tokens, _ in distinct_sentences(count)]


def shifted_texts(count: int) -> list[str]:
    """Long (ten sentences' words), URL-heavy (a link each) and all-caps (a shouted word each) items of the same
    vocabulary: no new words, so only length, links and capitals move."""
    rows = distinct_sentences(count * 10)
    texts = []
    for i in range(count):
        words = [w for tokens, _ in rows[i * 10:(i + 1) * 10] for w in tokens]
        words[1] = words[1].upper()
        texts.append(" ".join(words) + f" https://t.co/x{i}")
    return texts


def captured_items(clone: Clone) -> int:
    import gzip

    from tasks.settings import s3_client

    settings = clone.settings
    client = s3_client(settings)
    listing = client.list_objects_v2(Bucket=settings.capture_bucket, Prefix=f"{MODEL}/").get("Contents", [])
    return sum(len(gzip.decompress(client.get_object(Bucket=settings.capture_bucket, Key=o["Key"])["Body"].read())
                   .splitlines()) for o in listing)


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.5)


def prepare(repo: Path, tmp: Path) -> None:
    """Tiny model, tiny data (1,200 sentences: a test split of 200, enough for a reference), quick flushes."""
    synthetic_splits(repo / SOURCE, count=1200)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    capture = {**params["serve"]["capture"], "flush_items": 50, "flush_s": 1}
    set_params(repo, task={"labels": ["person", "geo-loc"]}, validate={"reference_profile": None},
               ingest={"source": SOURCE}, augment={"methods": ["synonym"]},
               train={"base_model": str(tiny_encoder(tmp / "tiny-bert")), "max_length": 32, "batch_size": 16,
                      "learning_rate": 5e-3, "epochs": 1},
               gate={"min_f1": 0.0, "max_regression": 1.0, "max_entity_regression": 1.0,
                     "min_behaviour": {"name_invariance": 0.0, "minimum_functionality": 0.0},
                     "max_latency_ms_p95": 10000},
               monitor={"min_items": 100, "reference_items": 200}, serve={"capture": capture}, compress=NO_VARIANTS)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(git + ["add", SOURCE, "params.yaml"], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "tiny params and data for the loop test"], cwd=repo, check=True)
    (repo / ".env").write_text("".join(f"{k}={v}\n" for k, v in port_settings().items()))


def run_state(clone: Clone, run_id: str) -> str:
    return api_get(clone.settings, f"flow_runs/{run_id}").json()["state_type"]


def triggered_runs(clone: Clone) -> list[dict]:
    """Runs of the nightly deployment other than those its cron schedule plans (tagged auto-scheduled)."""
    query = {"deployments": {"name": {"any_": ["nightly"]}}}
    runs = api_post(clone.settings, "flow_runs/filter", json=query).json()
    return [run for run in runs if "auto-scheduled" not in run["tags"]]


def test_drift_in_served_traffic_retrains_and_the_server_swaps_to_the_new_champion(tmp_path):
    started = time.monotonic()
    repo = scratch_clone(tmp_path / "clone")
    prepare(repo, tmp_path)
    clone = Clone(repo)
    server = None
    try:
        clone.sh(".venv/bin/flowtune", "services", "up")
        clone.sh(".venv/bin/flowtune", "run")  # v1, through the real pipeline
        registry = clone.registry()
        assert registry.versions(MODEL) == [1]
        assert "reference.json" in json.dumps(registry.manifest(MODEL, 1))
        batch = tmp_path / "new.conll"  # labelled rows nobody has seen: the next training has new data
        write_conll(batch, distinct_sentences(1400)[1200:])
        assert "committed" in clone.sh(".venv/bin/flowtune", "data", "add", str(batch), "--commit")
        clone.sh(".venv/bin/flowtune", "deploy")  # the nightly deployment and its trigger
        timings = {"v1 and deploy": time.monotonic() - started}

        server = Server(clone)
        assert server.ready()["version"] == 1
        server.send(calm_texts(200))
        wait_until(lambda: captured_items(clone) == 200, 60, "200 calm items captured")
        calm_done, calm_last = time.monotonic(), time.time()  # every calm item was answered before this
        calm = clone.monitor(since_s=int(calm_done - started) + 60)
        (version,) = calm["versions"]
        assert (version["model"], version["version"], version["items"]) == (MODEL, 1, 200)
        assert version["drifted"] == [] and calm["drift"] is False, version  # no false alarm
        assert triggered_runs(clone) == []

        # A gap of a minute: the monitor's window ends when its process has started (seconds later than the
        # `--since` is computed), and must still begin after the last calm item and before the first shifted one.
        time.sleep(max(0.0, calm_last + 60 - time.time()))
        server.send(shifted_texts(200), per_request=10)
        wait_until(lambda: captured_items(clone) == 400, 60, "200 shifted items captured")
        shifted = clone.monitor(since_s=int(time.time() - calm_last) - 1)  # the shifted items only
        (version,) = shifted["versions"]
        assert version["items"] == 200 and sorted(version["drifted"]) == SHIFTED, version
        timings["serve and monitor"] = time.monotonic() - started - timings["v1 and deploy"]

        # the drift event -> the trigger -> a nightly run, which trains on the added batch and registers v2
        wait_until(lambda: triggered_runs(clone), 120, "a nightly run started by the drift event")
        (run,) = triggered_runs(clone)
        triggered_at = time.monotonic()
        wait_until(lambda: run_state(clone, run["id"]) in TERMINAL, 1200, "the triggered nightly run ended")
        assert run_state(clone, run["id"]) == "COMPLETED", run
        assert registry.versions(MODEL) == [1, 2]
        assert registry.get_alias(MODEL, "champion") == 2
        lineage = registry.manifest(MODEL, 2)["metadata"]
        assert lineage["flow_run"]["id"] == run["id"]
        wait_until(lambda: server.ready()["version"] == 2, 60, "serve swapped to v2")  # it follows the alias
        server.send(calm_texts(20))
        timings["retrain and swap"] = time.monotonic() - triggered_at
        print("loop timings (s):", {k: round(v) for k, v in timings.items()},
              "total", round(time.monotonic() - started))
    finally:
        if server is not None:
            server.stop()
        subprocess.run([".venv/bin/flowtune", "services", "down"], cwd=repo, env=clone.env, capture_output=True)
