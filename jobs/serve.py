"""spark-submit entry point: the service: both queries and the REST API (`fleetgen run`).

spark-submit --properties-file spark-defaults.conf jobs/serve.py --config small
"""

from __future__ import annotations

import sys

from fleetgen_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
