"""A documented path kept: the ``fleetgen`` DataSource classes were importable from here before the
package had subpackages (``spark.dataSource.register(FleetgenDataSource)``). They live in
:mod:`fleetgen_spark.spark.source`."""

from __future__ import annotations

from fleetgen_spark.spark.source import FleetgenBatchReader, FleetgenDataSource, FleetgenStreamReader

__all__ = ["FleetgenBatchReader", "FleetgenDataSource", "FleetgenStreamReader"]
