"""The pure core: a config, a seed and an interval in, rows out (numpy, Arrow and time; no Spark, no files)."""
