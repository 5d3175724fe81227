"""kneeoa.analysis"""
