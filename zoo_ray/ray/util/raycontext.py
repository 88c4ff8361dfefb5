"""Analytics Zoo 0.6-0.7's ``zoo.ray.util.raycontext`` import path (runs on the driver)."""
from ...compat import moved

__getattr__ = moved(__name__, "zoo_ray.context", ["RayContext"])
