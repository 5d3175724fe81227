"""Helpers of the KneeOATraining module file (the SlicerMONAIAuto3DSeg `<Module>Lib` layout).

  widget_helpers  background jobs (progress, loss plot) and the latent-space panel (plot clicks, exports),
                  mixed into the widget
  selftest        the self-test body behind KneeOATrainingTest
"""
