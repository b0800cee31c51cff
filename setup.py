"""The one native part of kwire: the record walk of produce validation.

Everything else is in pyproject.toml. kwire/protocol/records.py keeps a pure-Python
reference of the same walk and uses it if this extension is not built.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "kwire.protocol._recordcheck",
            ["kwire/protocol/_recordcheck.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
            # Without a compiler the install still works and kwire walks records in
            # Python (it warns); the test suite fails then, so CI always has it.
            optional=True,
        )
    ]
)
