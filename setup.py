# The one compiled piece (jobrun/_sigbus.c); everything else is in pyproject.toml. A setup.py
# rather than [tool.setuptools] ext-modules: Debian 12's setuptools 66 does not read that table.
from setuptools import Extension, setup

setup(ext_modules=[Extension("jobrun._sigbus", sources=["jobrun/_sigbus.c"])])
