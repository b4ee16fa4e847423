"""The ``raysys`` command line: a thin layer over :class:`raysys.System`."""
