"""spark-submit entry point: generate a past range into Delta (`fleetgen backfill`).

spark-submit --properties-file spark-defaults.conf jobs/backfill.py --config small
"""

from __future__ import annotations

import sys

from fleetgen_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["backfill", *sys.argv[1:]]))
