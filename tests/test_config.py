"""The config: defaults without a file, validation that names the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from facesieve.config import Config, load_config
from facesieve.errors import ConfigError

PROJECT = Path(__file__).resolve().parents[1]


def test_defaults_without_a_file() -> None:
    config = load_config(None)
    assert config.policy.require == "face"
    assert config.actions.reject == "quarantine"
    assert config.models.gender == "combined"
    assert config.models.allow_download is False


def test_example_config_is_valid_and_matches_the_defaults() -> None:
    example = load_config(PROJECT / "config.example.toml")
    defaults = Config()
    assert example.policy == defaults.policy
    assert example.models.detector == defaults.models.detector
    assert example.actions == defaults.actions
    assert example.images == defaults.images
    assert example.watch == defaults.watch
    assert example.logging == defaults.logging
    assert example.metrics == defaults.metrics
    assert example.review == defaults.review


def test_the_review_page_is_loopback_only_unless_allowed() -> None:
    from facesieve.errors import ConfigError

    assert Config().with_review(address="127.0.0.1:0").review.address == "127.0.0.1:0"
    assert Config().with_review(address="[::1]:8750").review.address == "[::1]:8750"
    for address in ("0.0.0.0:8750", "192.168.1.4:8750", "example.org:8750"):
        with pytest.raises(ConfigError, match=r"review\.address.*not a loopback"):
            Config().with_review(address=address)
    with pytest.raises(ConfigError, match=r"review\.address"):
        Config().with_review(address="127.0.0.1")
    remote = Config().with_review(allow_remote=True, address="0.0.0.0:8750")
    assert remote.review.address == "0.0.0.0:8750"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[policy]\nrequire = "men"\n', "policy.require"),
        ("[policy]\nmin_gender_confidence = 1.5\n", "policy.min_gender_confidence"),
        ('[models]\ndetector = "nope"\n', "models.detector"),
        ("[folders]\nquarantin = '/x'\n", "folders.quarantin"),
        ("[nonsense]\n", "nonsense"),
        ("[images]\nextensions = ['jpg']\n", "images"),
    ],
)
def test_invalid_keys_are_named(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == key
    assert key in str(caught.value)


def test_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "c.toml"
    path.write_text('[folders]\nquarantine = "../q"\n[ledger]\npath = "ledger.db"\n')
    config = load_config(path)
    folders = config.resolve_folders(tmp_path / "inbox")
    assert folders.quarantine == (tmp_path / "q").resolve()
    assert folders.ledger == (tmp_path / "etc" / "ledger.db").resolve()


def test_default_folders_live_under_the_scanned_root(tmp_path: Path) -> None:
    folders = Config().resolve_folders(tmp_path)
    assert folders.quarantine == tmp_path.resolve() / ".facesieve" / "quarantine"
    assert folders.review == tmp_path.resolve() / ".facesieve" / "review"
    assert folders.accepted is None
    assert folders.state in folders.managed()


def test_command_line_policy_overrides_are_validated() -> None:
    config = Config().with_policy(require="woman", faces=None)
    assert config.policy.require == "woman"
    with pytest.raises(ConfigError, match=r"policy\.require"):
        Config().with_policy(require="cat")


def test_the_deployed_config_is_a_valid_watch_layout() -> None:
    from facesieve.config import watch_folders

    config = load_config(PROJECT / "deploy" / "default.toml")
    folders = watch_folders(config)
    assert folders.root == Path("/srv/facesieve/default/inbox")
    assert folders.ledger == Path("/var/lib/facesieve/default/ledger.sqlite3")


def test_watch_refuses_managed_folders_inside_the_inbox(tmp_path: Path) -> None:
    from facesieve.config import watch_folders

    inside = Config.model_validate(
        {"folders": {"inbox": str(tmp_path), "review": str(tmp_path / "review")}}
    )
    with pytest.raises(ConfigError) as caught:
        watch_folders(inside)
    assert caught.value.key == "folders.review"
    excluded = Config.model_validate(
        {
            "folders": {"inbox": str(tmp_path), "review": str(tmp_path / "review")},
            "watch": {"exclude": [str(tmp_path / "review")]},
        }
    )
    assert watch_folders(excluded).review == tmp_path / "review"
    with pytest.raises(ConfigError, match=r"folders\.inbox"):
        watch_folders(Config())


def test_face_thresholds_follow_the_detector_unless_set(tmp_path: Path) -> None:
    from facesieve.config import FACE_THRESHOLDS

    assert Config().models.detector == "libfacedetection"
    default = Config().policy
    assert (default.min_face_confidence, default.sure_face_confidence) == FACE_THRESHOLDS[
        "libfacedetection"
    ]
    path = tmp_path / "mtcnn.toml"
    path.write_text('[models]\ndetector = "mtcnn"\n')
    mtcnn = load_config(path)
    assert (mtcnn.policy.min_face_confidence, mtcnn.policy.sure_face_confidence) == (0.90, 0.93)
    # Survives a command-line override of the policy.
    assert mtcnn.with_policy(require="man").policy.sure_face_confidence == 0.93
    path.write_text('[models]\ndetector = "mtcnn"\n[policy]\nmin_face_confidence = 0.5\n')
    set_here = load_config(path).policy
    assert (set_here.min_face_confidence, set_here.sure_face_confidence) == (0.5, 0.93)


def test_a_gender_head_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "etc" / "facesieve.toml"
    config_file.parent.mkdir()
    config_file.write_text('[models]\ngender_head = "own-head.json"\n')
    assert load_config(config_file).models.gender_head == tmp_path / "etc" / "own-head.json"


def test_the_gender_threshold_follows_the_gender_model_unless_set(tmp_path: Path) -> None:
    from facesieve.config import GENDER_THRESHOLDS

    assert Config().models.gender == "combined"
    assert Config().policy.min_gender_confidence == GENDER_THRESHOLDS["combined"] == 0.79
    path = tmp_path / "bundled.toml"
    path.write_text('[models]\ngender = "bundled"\ndetector = "mtcnn"\n')
    bundled = load_config(path)
    assert bundled.policy.min_gender_confidence == 0.98
    assert bundled.policy.sure_face_confidence == 0.93  # the detector's still apply
    assert bundled.with_policy(require="man").policy.min_gender_confidence == 0.98
    path.write_text('[models]\ngender = "bundled"\n[policy]\nmin_gender_confidence = 0.9\n')
    assert load_config(path).policy.min_gender_confidence == 0.9


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[watch]\nsettle_seconds = inf\n", "watch.settle_seconds"),
        ("[watch]\nsettle_seconds = nan\n", "watch.settle_seconds"),
        ("[watch]\nstop_timeout = inf\n", "watch.stop_timeout"),
        ("[watch]\nreconcile_interval = 1e308\n", "watch.reconcile_interval"),
        ("[watch]\npoll_interval = -inf\n", "watch.poll_interval"),
        ("[watch]\nqueue_size = 10000000000\n", "watch.queue_size"),
        ("[images]\ndecode_timeout = inf\n", "images.decode_timeout"),
        ("[images]\nmax_pixels = 1e30\n", "images.max_pixels"),
        ("[policy]\nmin_face_confidence = nan\n", "policy.min_face_confidence"),
    ],
)
def test_every_number_is_finite_and_bounded(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == key


@pytest.mark.parametrize("key", ["quarantine", "review", "accepted"])
def test_a_managed_folder_may_not_contain_or_be_the_root(tmp_path: Path, key: str) -> None:
    from facesieve.config import watch_folders

    inbox = tmp_path / "inbox"
    for folder in (tmp_path, inbox):
        config = Config.model_validate({"folders": {"inbox": str(inbox), key: str(folder)}})
        with pytest.raises(ConfigError) as caught:
            watch_folders(config)
        assert caught.value.key == f"folders.{key}"
        with pytest.raises(ConfigError) as caught:  # scan resolves the same way
            config.resolve_folders(inbox)
        assert caught.value.key == f"folders.{key}"
    everything = Config.model_validate({"watch": {"exclude": [str(tmp_path)]}})
    with pytest.raises(ConfigError, match=r"watch\.exclude"):
        everything.resolve_folders(inbox)


def test_scan_refuses_a_quarantine_that_holds_the_folder(tmp_path: Path) -> None:
    from facesieve.cli.main import main

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = tmp_path / "c.toml"
    config.write_text(f'[folders]\nquarantine = "{tmp_path}"\n')
    assert main(["scan", str(inbox), "--config", str(config)]) == 3
