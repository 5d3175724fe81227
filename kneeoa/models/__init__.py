"""kneeoa.models"""
