"""zoo_ray: run Ray inside Spark on Hadoop YARN."""
from .spark import init_spark_on_local, init_spark_on_yarn

__version__ = "0.1.0"
__all__ = ["init_spark_on_yarn", "init_spark_on_local"]
