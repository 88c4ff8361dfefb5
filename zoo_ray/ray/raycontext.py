"""Analytics Zoo 0.8-0.11's ``zoo.ray.raycontext`` import path (runs on the driver)."""
from ..compat import moved

__getattr__ = moved(__name__, "zoo_ray.context", ["RayContext"])
