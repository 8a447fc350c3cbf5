"""The one compiled piece: queueproxy._fasthead (see queueproxy/_fasthead.c). Optional: where
it cannot be built, the engine reads every head with httptools, as before."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("queueproxy._fasthead", ["queueproxy/_fasthead.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"])])
