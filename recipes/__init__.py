"""One module per dataset; each defines ``RECIPE``. Found by :mod:`thresher.registry`."""
