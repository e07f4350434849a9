"""A documented path kept: the ``fleetgen_companies`` DataSource class was importable from here before
the package had subpackages. It lives in :mod:`fleetgen_spark.spark.companies`."""

from __future__ import annotations

from fleetgen_spark.spark.companies import FleetgenCompaniesDataSource

__all__ = ["FleetgenCompaniesDataSource"]
