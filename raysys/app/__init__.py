"""The application layer: the web dashboard and model cards, over every layer below.

Nothing below imports this package: serving loads its routes only through the import strings
it is handed in the replica settings (``settings["extensions"]``, set by :class:`raysys.System`).
"""
