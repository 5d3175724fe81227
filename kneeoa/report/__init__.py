"""kneeoa.report"""
