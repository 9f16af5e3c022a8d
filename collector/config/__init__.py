"""Settings: ``schedules.yaml`` and the environment, validated once into a frozen object.

A bad file raises :class:`ConfigError` naming the file, the key and what was
expected; the CLI turns it into exit status 2. Secrets come only from the
environment (``JEX_API_KEY``, ``JEX_API_SECRET``; for an S3 archive ``AWS_*``) and
are held as ``SecretStr`` so that printing the settings never shows them.

Several collectors (shards) may append to one archive: the ``shards:`` section gives
each its share of the jobs, markets and symbols (:mod:`collector.shards` checks that
no two shares meet), and ``overrides={"shard": name}`` gives the settings of one.

The package, by concern (every name is re-exported here, so ``from collector import
config`` and ``from collector.config import X`` are the way in):

* :mod:`~collector.config.durations`: durations and sizes as the file writes them;
* :mod:`~collector.config.jobs`: the jobs' settings and the rules they must follow;
* :mod:`~collector.config.storage_uri`: ``storage.uri`` checks and the default state folder;
* :mod:`~collector.config.models`: the exchange, storage and shard settings, and
  :class:`Settings`;
* :mod:`~collector.config.loading`: reading the file, the environment and the overrides.
"""

from __future__ import annotations

from collector.config.base import Market as Market
from collector.config.durations import MAX_DURATION as MAX_DURATION
from collector.config.durations import MAX_SIZE as MAX_SIZE
from collector.config.durations import MIN_DURATION as MIN_DURATION
from collector.config.durations import MIN_SIZE as MIN_SIZE
from collector.config.durations import Duration as Duration
from collector.config.durations import Size as Size
from collector.config.durations import parse_duration as parse_duration
from collector.config.durations import parse_size as parse_size
from collector.config.jobs import DEPTH_LIMITS as DEPTH_LIMITS
from collector.config.jobs import INT64_MAX as INT64_MAX
from collector.config.jobs import JOB_NAMES as JOB_NAMES
from collector.config.jobs import KLINE_INTERVALS as KLINE_INTERVALS
from collector.config.jobs import WHOLE_MARKET_JOBS as WHOLE_MARKET_JOBS
from collector.config.jobs import JobSettings as JobSettings
from collector.config.jobs import check_jobs as check_jobs
from collector.config.loading import from_mapping as from_mapping
from collector.config.loading import load as load
from collector.config.models import ENDPOINT_NAMES as ENDPOINT_NAMES
from collector.config.models import ExchangeSettings as ExchangeSettings
from collector.config.models import Settings as Settings
from collector.config.models import ShardSettings as ShardSettings
from collector.config.models import StorageSettings as StorageSettings
from collector.config.storage_uri import AWS_ENVIRONMENT as AWS_ENVIRONMENT
from collector.config.storage_uri import default_state_dir as default_state_dir
from collector.config.storage_uri import split_s3_uri as split_s3_uri
from collector.errors import ConfigError as ConfigError
