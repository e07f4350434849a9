"""What needs a SparkSession: the Python DataSources, the Delta writers and tables, the queries, the session."""
