"""The one place where the config's `s3` section becomes each S3 client's settings.

Five clients reach object storage, and each wants the same endpoint, retries and timeouts in its
own words: boto3 (exports, the warehouse lock) takes client keyword arguments, pyarrow (planning,
footers, the image index) takes `S3FileSystem` keyword arguments, delta-rs (versions, history,
restores) takes `storage_options`, Sail's Rust object_store reads nothing but the environment,
and JVM Spark's Hadoop S3A connector takes `spark.hadoop.fs.s3a.*` settings (`jvm_s3_conf`).
`S3Settings` holds the values once and renders them for each; `applied_s3_settings` makes them
the process's own, which also exports them for the engine.

What the user gives outside the config is read here too, and only here: an endpoint from
`AWS_ENDPOINT_URL` (boto3's name) or `AWS_ENDPOINT` (object_store's, may lack a scheme, then
`AWS_ALLOW_HTTP` says http), and the region. Credentials are never handled: every client reads
the usual AWS variables itself, so nothing secret passes through the project.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional

from etl.project.config import DEFAULT_S3_MAX_ATTEMPTS, DEFAULT_S3_TIMEOUT_SECONDS, Config

# The variables `applied_s3_settings` exports, all named as object_store (and boto3) read them.
ENGINE_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ALLOW_HTTP", "AWS_MAX_ATTEMPTS", "AWS_TIMEOUT",
                    "AWS_CONNECT_TIMEOUT")


@dataclass(frozen=True)
class S3Settings:
    endpoint: Optional[str] = None  # a URL, or host[:port] as object_store's AWS_ENDPOINT allows
    allow_http: bool = False  # for an endpoint without a scheme
    region: Optional[str] = None
    max_attempts: int = DEFAULT_S3_MAX_ATTEMPTS  # per request, the first try included
    timeout_seconds: float = DEFAULT_S3_TIMEOUT_SECONDS  # to connect, and for a response that stops arriving

    @classmethod
    def from_config(cls, config: Config, environ: Optional[Mapping[str, str]] = None) -> S3Settings:
        """The config's `s3` section; the endpoint from the environment when the config names none."""
        given = _user_given(os.environ if environ is None else environ)
        if config.s3_endpoint:
            given.update(endpoint=config.s3_endpoint, allow_http=config.s3_endpoint.startswith("http://"))
        return cls(**given, max_attempts=config.s3_max_attempts, timeout_seconds=config.s3_timeout_seconds)

    @classmethod
    def from_environment(cls, environ: Optional[Mapping[str, str]] = None) -> S3Settings:
        """A process no config was applied in (an engine's worker, a library caller) reads back
        what `applied_s3_settings` exported in the process that started it, or the defaults."""
        environ = os.environ if environ is None else environ
        return cls(**_user_given(environ), max_attempts=_attempts(environ.get("AWS_MAX_ATTEMPTS")),
                   timeout_seconds=_timeout_seconds(environ.get("AWS_TIMEOUT")))

    @property
    def endpoint_url(self) -> Optional[str]:
        if not self.endpoint or "://" in self.endpoint:
            return self.endpoint
        return f"{'http' if self.allow_http else 'https'}://{self.endpoint}"

    @property
    def _duration(self) -> str:
        # object_store parses durations with a unit; whole milliseconds keep fractional seconds.
        return f"{round(self.timeout_seconds * 1000)}ms"

    def boto3_client_kwargs(self) -> dict:
        """For `boto3.client("s3", **kwargs)`: standard retry mode (exponential backoff with jitter;
        5xx, throttling and dropped connections retried) and the request timeout."""
        from botocore.config import Config as BotoConfig

        # `total_max_attempts` counts the first try, like the config key; botocore's
        # `max_attempts` counts retries only.
        retries = {"mode": "standard", "total_max_attempts": self.max_attempts}
        return {"endpoint_url": self.endpoint_url,
                "config": BotoConfig(retries=retries, connect_timeout=self.timeout_seconds,
                                     read_timeout=self.timeout_seconds)}

    def pyarrow_kwargs(self, bucket: str) -> dict:
        """For `pyarrow.fs.S3FileSystem(**kwargs)` reaching `bucket`, with the SDK's standard backoff."""
        import pyarrow.fs as pafs

        options = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=self.max_attempts),
                   "connect_timeout": self.timeout_seconds, "request_timeout": self.timeout_seconds}
        url = self.endpoint_url
        if url:
            scheme, _, host = url.partition("://")
            options.update(endpoint_override=host.rstrip("/"), scheme=scheme)
        # Without an endpoint or a region, ask AWS where the bucket is, as FileSystem.from_uri does.
        region = self.region or (None if url else pafs.resolve_s3_region(bucket))
        if region:
            options["region"] = region
        return options

    def delta_storage_options(self) -> dict[str, str]:
        """For delta-rs (`storage_options`); object_store retries 5xx answers and timed-out reads
        itself (up to 10 times within 3 minutes, with backoff), its count is not settable."""
        options = {"AWS_TIMEOUT": self._duration, "AWS_CONNECT_TIMEOUT": self._duration}
        url = self.endpoint_url
        if url:
            options["AWS_ENDPOINT_URL"] = url
            if url.startswith("http://"):
                options["AWS_ALLOW_HTTP"] = "true"
        if self.region:
            options["AWS_REGION"] = self.region
        return options

    def s3a_settings(self) -> dict[str, str]:
        """For Hadoop's S3A connector (hadoop-aws 3.4), as Hadoop keys.

        `s3://` paths stay `s3://`: the scheme is mapped to S3A, and Delta 4.0 already commits to
        `s3`, `s3a` and `s3n` through its S3SingleDriverLogStore (one writing driver per table at a
        time, which the warehouse lock ensures). S3A wraps the SDK's retries in its own: both are
        held to `max_attempts`, so a request failing throughout is tried at most max_attempts² times.
        The timeouts are those of connecting and of a response that stops arriving; S3A raises
        any below 15 s to 15 s. Credentials are S3A's default chain: the AWS variables, read by
        the JVM itself.
        """
        retries = str(self.max_attempts - 1)
        milliseconds = f"{round(self.timeout_seconds * 1000)}ms"
        settings = {"fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
                    "fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
                    "fs.s3a.attempts.maximum": retries, "fs.s3a.retry.limit": retries,
                    "fs.s3a.retry.throttle.limit": retries,
                    "fs.s3a.connection.establish.timeout": milliseconds, "fs.s3a.connection.timeout": milliseconds}
        url = self.endpoint_url
        if url:
            # An endpoint of one's own (MinIO, SeaweedFS, Ceph) rarely has a DNS name per bucket.
            settings.update({"fs.s3a.endpoint": url, "fs.s3a.path.style.access": "true",
                             "fs.s3a.connection.ssl.enabled": str(url.startswith("https://")).lower()})
            if url.startswith("http://"):
                # Over plain http the SDK's S3 signer streams a chunk-signed body
                # (STREAMING-AWS4-HMAC-SHA256-PAYLOAD), which servers without authentication set
                # up (SeaweedFS) refuse; this signer hashes the body whole, as boto3 does.
                settings["fs.s3a.s3.signing-algorithm"] = "AWS4UnsignedPayloadSignerType"
        if self.region:
            settings["fs.s3a.endpoint.region"] = self.region
        return settings

    def engine_environment(self) -> dict[str, str]:
        """What Sail's object_store, and the worker processes an engine forks, read instead."""
        environment = {"AWS_MAX_ATTEMPTS": str(self.max_attempts), "AWS_TIMEOUT": self._duration,
                       "AWS_CONNECT_TIMEOUT": self._duration}
        url = self.endpoint_url
        if url:
            environment.update(AWS_ENDPOINT_URL=url, AWS_ENDPOINT=url)
            if url.startswith("http://"):
                environment["AWS_ALLOW_HTTP"] = "true"
        return environment


def jvm_s3_conf(config: Config) -> dict[str, str]:
    """The Spark settings (`--conf` entries) a JVM session needs for the config's `s3://` paths;
    none when it has none. The driver JVM reads S3 through S3A (`spark.hadoop.*`); the Python
    workers the executors fork (the image index, pandas UDFs) read it through pyarrow, which takes
    the engine environment (`spark.executorEnv.*`): under spark-submit the JVM starts before the
    job's Python process could export it. No credential is among them."""
    if not config.uses_s3:
        return {}
    settings = S3Settings.from_config(config)
    return {**{f"spark.hadoop.{key}": value for key, value in settings.s3a_settings().items()},
            **{f"spark.executorEnv.{name}": value for name, value in settings.engine_environment().items()}}


_applied: list[S3Settings] = []  # innermost last


def current_s3_settings() -> S3Settings:
    """The settings of this process: the applied ones, else read back from the environment."""
    return _applied[-1] if _applied else S3Settings.from_environment()


@contextmanager
def applied_s3_settings(config: Config) -> Iterator[S3Settings]:
    """Make the config's S3 settings this process's for the duration: for the clients opened
    without a config at hand, and, through the environment, for the engine. The previous settings
    and environment come back on exit, so one process can run several configs one after another."""
    settings = S3Settings.from_config(config)
    saved = {name: os.environ.get(name) for name in ENGINE_VARIABLES}
    for name in ENGINE_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(settings.engine_environment())
    _applied.append(settings)
    try:
        yield settings
    finally:
        _applied.pop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _user_given(environ: Mapping[str, str]) -> dict:
    return {"endpoint": environ.get("AWS_ENDPOINT_URL") or environ.get("AWS_ENDPOINT") or None,
            "allow_http": environ.get("AWS_ALLOW_HTTP", "").strip().lower() in ("true", "1", "yes"),
            "region": environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None}


def _attempts(value: Optional[str]) -> int:
    if value is None:
        return DEFAULT_S3_MAX_ATTEMPTS
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"AWS_MAX_ATTEMPTS: must be a positive integer, got {value!r}")
    return int(value)


def _timeout_seconds(value: Optional[str]) -> float:
    """object_store's `<n>s` or `<n>ms`."""
    if value is None:
        return DEFAULT_S3_TIMEOUT_SECONDS
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*", value)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"AWS_TIMEOUT: must be a duration like 30s or 2500ms, got {value!r}")
    return float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
