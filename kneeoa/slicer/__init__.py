"""Glue between 3D Slicer and the `kneeoa` package, shared by the KneeOAGrading and KneeOATraining modules.

Qt-free, so it is testable headless with the MRML classes of the `slicer-core` wheel:
  nodes    MRML volume/segmentation nodes <-> (array_ijk, ijk_to_ras) and NIfTI files
  display  saliency foreground layer, cartilage outlines, slice-viewer layers
  results  result table, KL bar chart, per-volume results kept on the volume node, graded-volumes table
  jobs     background `kneeoa` processes: command lines, JSON progress lines, cancel (whole process tree)
  deps     which Python packages are missing and how to install them inside Slicer
  grading  one grading run: inputs -> temp NIfTI -> `kneeoa grade` -> result + saliency nodes
  module_widget  what both module widgets share: parameter node <-> .ui, plot views, dependency prompt, reload
  selftest       what both module self-tests share: empty scene, phantom cohort, the module's logic

Importing this package (and `jobs`, `deps`) needs only the standard library; numpy, vtk and slicer
are imported inside the submodules/functions that use them, so Slicer can offer to install
dependencies before they exist.
"""
