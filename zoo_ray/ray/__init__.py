"""Analytics Zoo's ``zoo.ray`` import path (runs on the driver).

``from zoo_ray.ray import RayContext`` works, with a DeprecationWarning naming
``from zoo_ray import RayContext``.
"""
from ..compat import moved

__getattr__ = moved(__name__, "zoo_ray.context", ["RayContext"])
