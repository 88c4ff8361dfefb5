"""Analytics Zoo's ``zoo.common`` (runs on the driver): see :mod:`.nncontext`."""
