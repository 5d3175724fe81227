"""Helpers of the KneeOAGrading module file (the SlicerMONAIAuto3DSeg `<Module>Lib` layout).

  widget_helpers  the grading queue (background runs, progress, cancel) and the results panel, mixed into the widget
  selftest        the self-test body behind KneeOAGradingTest
"""
