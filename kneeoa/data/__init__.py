"""kneeoa.data: volume I/O, tables, cohorts (OAI-ZIB-CM and generic folders), preprocessing, phantom.

Import-light on purpose (standard library only): import the submodules you need, e.g.
`from kneeoa.data.volume import read_volume`; they pull in numpy/nibabel/SimpleITK/torch themselves.
"""
