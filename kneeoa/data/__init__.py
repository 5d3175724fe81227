"""kneeoa.data"""
