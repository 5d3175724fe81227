"""kneeoa.slicer"""
