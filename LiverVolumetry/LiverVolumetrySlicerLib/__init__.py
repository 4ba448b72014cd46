"""Slicer glue of the Liver Volumetry module (imports slicer/qt, except ``engine_cli``).

``engine_cli``: engine command-line arguments, JSON events and result rows (pure Python);
``process``: the background engine process; ``segmentation_io``: masks and volumes between
scene and files; ``table``: the measurement table; ``dependencies``: first-use package
installation; ``sample``: the locally generated phantom sample.
"""
