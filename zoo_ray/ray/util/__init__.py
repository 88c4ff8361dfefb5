"""Analytics Zoo 0.6-0.7's ``zoo.ray.util`` (runs on the driver): see :mod:`.raycontext`."""
