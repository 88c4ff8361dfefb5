"""Analytics Zoo's ``zoo.common.nncontext`` import path (runs on the driver).

``from zoo_ray.common.nncontext import init_spark_on_yarn`` works, with a
DeprecationWarning naming ``from zoo_ray import init_spark_on_yarn``.
"""
from ..compat import moved

__getattr__ = moved(__name__, "zoo_ray.spark", ["init_spark_on_local", "init_spark_on_yarn"])
