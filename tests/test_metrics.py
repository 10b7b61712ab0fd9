"""The opt-in Prometheus endpoint: validated config, private registry, scraped from a real watch."""

from __future__ import annotations

import shutil
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from facesieve.acting.apply import Outcome
from facesieve.config import Config
from facesieve.daemon.metrics import Metrics
from facesieve.errors import ConfigError
from facesieve.judging.judge import Status
from facesieve.judging.policy import Verdict

from .conftest import DATA, labelled
from .daemon_util import Daemon, write_config


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(address: str) -> dict[str, float]:
    """`name{label="value"}` -> value of every facesieve_* sample."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith("facesieve_"):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


@pytest.mark.parametrize(
    "address", ["127.0.0.1:9464", "127.0.0.2:1", "[::1]:9464", "localhost:9464", ""]
)
def test_local_addresses_are_accepted(address: str) -> None:
    assert Config.model_validate({"metrics": {"address": address}}).metrics.address == address


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("0.0.0.0:9464", "not a loopback address"),
        ("192.168.1.5:9464", "not a loopback address"),
        ("metrics.example:9464", "not a loopback address"),
        ("9464", "not host:port"),
        (":9464", "not host:port"),
        ("127.0.0.1:0", "not host:port"),
        ("127.0.0.1:70000", "not host:port"),
        ("127.0.0.1:http", "not host:port"),
    ],
)
def test_bad_or_remote_addresses_are_refused(address: str, message: str) -> None:
    from facesieve.config import _validate

    with pytest.raises(ConfigError, match=message) as caught:
        _validate({"metrics": {"address": address}})
    assert caught.value.key == "metrics.address"


def test_a_remote_address_needs_allow_remote() -> None:
    config = Config.model_validate({"metrics": {"address": "0.0.0.0:9464", "allow_remote": True}})
    assert config.metrics.address == "0.0.0.0:9464"
    assert Config().metrics.address == ""  # off unless asked for


def test_metrics_are_recorded_and_served_from_a_private_registry() -> None:
    depth = [3]
    first, second = Metrics(lambda: depth[0]), Metrics(lambda: 0)
    first.models_loaded(2.5)
    before = time.time()
    first.observe(Outcome(Path("/a.jpg"), Status.DECIDED, Verdict.KEEP, elapsed_ms=20.0))
    first.observe(Outcome(Path("/b.jpg"), Status.DECIDED, Verdict.REJECT, elapsed_ms=300.0))
    first.observe(Outcome(Path("/c.jpg"), Status.ERROR, reason="cannot read"))
    first.observe(Outcome(Path("/d.jpg"), Status.KNOWN))
    address = f"127.0.0.1:{free_port()}"
    served = first.serve(Config.model_validate({"metrics": {"address": address}}).metrics)
    try:
        assert served == address
        samples = scrape(address)
    finally:
        first.close()
    assert samples['facesieve_decisions_total{verdict="keep"}'] == 1
    assert samples['facesieve_decisions_total{verdict="reject"}'] == 1
    assert samples['facesieve_decisions_total{verdict="review"}'] == 0
    assert samples['facesieve_decisions_total{verdict="unreadable"}'] == 0
    assert samples["facesieve_errors_total"] == 1
    assert samples["facesieve_processing_seconds_count"] == 2
    assert samples["facesieve_processing_seconds_sum"] == pytest.approx(0.32)
    assert samples['facesieve_processing_seconds_bucket{le="0.025"}'] == 1
    assert samples['facesieve_processing_seconds_bucket{le="0.5"}'] == 2
    assert samples["facesieve_queue_depth"] == 3
    assert samples["facesieve_model_load_seconds"] == 2.5
    assert before <= samples["facesieve_last_decision_timestamp_seconds"] <= time.time()
    # Not the process-global registry, and not shared between guards.
    assert not any(name.startswith("process_") or name.startswith("python_") for name in samples)
    from prometheus_client import generate_latest

    assert b'facesieve_decisions_total{verdict="keep"} 0.0' in generate_latest(second.registry)
    with pytest.raises(urllib.error.URLError):
        scrape(address)  # closed


@pytest.mark.models
@pytest.mark.data
@pytest.mark.slow
def test_metrics_scraped_from_a_running_watch(tmp_path: Path, deepface_home: Path) -> None:
    labelled("utkface")
    # Picks the models agree on at high confidence (as in test_use_cases).
    faces = [
        DATA / "utkface" / "25_0_3_20170104214432805.jpg.chip.jpg",
        DATA / "utkface" / "25_1_0_20170104234942017.jpg.chip.jpg",
    ]
    cat = DATA / "noface" / "cat.4001.jpg"
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    address = f"127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "c.toml", inbox, metrics={"address": address})
    daemon = Daemon(config, tmp_path / "log.jsonl").start()
    try:
        (serving,) = daemon.wait_for("metrics_serving")
        assert serving["address"] == address
        idle = scrape(address)
        assert sum(v for k, v in idle.items() if k.startswith("facesieve_decisions_total")) == 0
        assert idle["facesieve_last_decision_timestamp_seconds"] == 0
        loaded = daemon.events("models_loaded")[0]["seconds"]
        assert idle["facesieve_model_load_seconds"] == loaded > 0

        dropped = time.time()
        shutil.copyfile(faces[0], inbox / "face-1.jpg")
        shutil.copyfile(faces[1], inbox / "face-2.jpg")
        shutil.copyfile(cat, inbox / "cat.jpg")
        decisions = daemon.wait_for("decision", 3, timeout=120)
        busy = scrape(address)
    finally:
        code = daemon.stop()
    assert code == 0
    verdicts = sorted(e["verdict"] for e in decisions)
    assert verdicts == ["keep", "keep", "reject"], decisions
    print("\n".join(f"{name} {value}" for name, value in busy.items()))
    assert busy['facesieve_decisions_total{verdict="keep"}'] == 2
    assert busy['facesieve_decisions_total{verdict="reject"}'] == 1
    assert busy['facesieve_decisions_total{verdict="review"}'] == 0
    assert busy["facesieve_processing_seconds_count"] == 3
    elapsed = sum(e["elapsed_ms"] for e in decisions) / 1000
    assert busy["facesieve_processing_seconds_sum"] == pytest.approx(elapsed, abs=0.01)
    assert busy['facesieve_processing_seconds_bucket{le="+Inf"}'] == 3
    assert dropped <= busy["facesieve_last_decision_timestamp_seconds"] <= time.time()
    assert busy["facesieve_queue_depth"] == 0
    assert busy["facesieve_errors_total"] == 0
    with pytest.raises(urllib.error.URLError):
        scrape(address)  # the endpoint goes with the daemon
