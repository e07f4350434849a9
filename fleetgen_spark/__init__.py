"""fleetgen-spark: realistic, reproducible trucking-fleet data, native to Spark and Delta Lake."""

from __future__ import annotations

from fleetgen_spark.core.config import Config, load_config
from fleetgen_spark.core.exceptions import ConfigError, FleetGenError, OptionError
from fleetgen_spark.spark.session import register, spark_session

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "FleetGenError",
    "OptionError",
    "__version__",
    "load_config",
    "register",
    "spark_session",
]
