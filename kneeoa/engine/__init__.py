"""kneeoa.engine"""
