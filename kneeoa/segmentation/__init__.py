"""Knee segmentation (SPEC 9): femur, femoral cartilage, tibia, medial/lateral tibial cartilage, and thickness.

  presets     the quick (phantom, 2 CPU cores) and paper (OAI-ZIB-CM, GPU) training presets
  model       the MONAI networks (SegResNet, DynUNet, UNet)
  checkpoint  segmenter checkpoints: safetensors + a model card of kind "segmenter"
  data        image + mask -> normalised tensors; label-balanced patch sampling
  train       `train_segmenter` (engine run directory, resume, progress, safe checkpoints)
  infer       sliding-window inference with Gaussian blending, back on the image's own grid
  folder      `segment_folder` (resumable, shardable) and `segment_file`
  metrics     Dice and HD95 per label (MONAI metrics)
  thickness   cartilage thickness per compartment from a label map (distance transforms, mm)

Thickness and the metrics need only numpy/scipy; everything else imports torch and MONAI lazily.
"""
