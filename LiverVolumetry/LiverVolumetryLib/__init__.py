"""LiverVolumetryLib: Slicer-free engine for liver segmentation, volumetry and radiomics on MRI.

No ``slicer``, ``qt`` or ``vtk`` imports anywhere in this package: the 3D Slicer module
and the command-line tool are thin shells over it.
"""

__version__ = "0.1.0"
