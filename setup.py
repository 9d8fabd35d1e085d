"""The one compiled part: ledger._speedups, the verify hot loop (see ledger/_speedups.c).

It is optional: where no C compiler is found the build goes on without it and
ledger.verify runs its pure-Python loop (the reference), with the same verdicts.
Everything else about the package is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ledger._speedups",
            ["ledger/_speedups.c"],
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
