"""zoo_ray: run Ray inside Spark on Hadoop YARN."""
__version__ = "0.1.0"
