from setuptools import setup

setup(
    name="zoo_ray",
    version="0.1.0",
    description="Run Ray inside Spark on Hadoop YARN",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["zoo_ray", "zoo_ray.minicluster", "zoo_ray.hadoop_conf_example",
              # Analytics Zoo's import paths (zoo.common.nncontext, zoo.ray, ...).
              "zoo_ray.common", "zoo_ray.ray", "zoo_ray.ray.util"],
    # The documented gateway configuration is also the local Hadoop's template.
    package_dir={"zoo_ray.hadoop_conf_example": "hadoop_conf_example"},
    package_data={"zoo_ray.hadoop_conf_example": ["*.xml"],
                  # Built with gcc by the local Hadoop (zoo_ray/minicluster/native_io.py).
                  "zoo_ray.minicluster": ["*.c"]},
    # zoo_ray.data builds Datasets through Ray Data internals checked against Ray 2.60
    # (zoo_ray/ray_blocks.py, zoo_ray/driver_guard.py). pandas 3 is excluded: PySpark 4.3
    # does not fully support it, and Ray Data hands map_batches Arrow-backed frames on
    # which `%` fails.
    install_requires=[
        "ray[default]>=2.60,<2.61",
        "pyspark>=4.0,<5",
        "conda-pack>=0.7",  # ignore_editable_packages
        "venv-pack",
        "pyarrow>=18",
        "pandas>=2.2.3,<3",
        "numpy>=1.23.2",
        "psutil",
        # Progress bars that render both in a terminal and as a Jupyter widget.
        "tqdm",
    ],
    # ruff and mypy are pinned: a new release's rules must not fail an unchanged tree.
    # nbclient and ipykernel run notebooks in a real kernel. py-rattler-build and py-rattler
    # build and install the tests' conda environment (tests/conda_env.py) with no conda
    # channel; pinned, as their Python APIs change between releases.
    # ipywidgets: the bars render as Jupyter widgets (text bars without it).
    # docs: `mkdocs build --strict` (mkdocs.yml, docs/). Pinned like ruff and mypy: a new
    # release's warnings must not fail an unchanged tree, and docs/templates overrides one
    # template of mkdocstrings-python 2.0.11.
    extras_require={"notebook": ["ipywidgets"],
                    "test": ["pytest", "pytest-timeout", "pytest-xdist==3.8.0", "ruff==0.17.6",
                             "mypy==2.4.1", "nbclient", "nbformat", "ipykernel", "ipywidgets",
                             "py-rattler==0.28.0", "py-rattler-build==0.73.0"],
                    "docs": ["mkdocs==1.6.1", "mkdocstrings[python]==1.0.8",
                             "mkdocstrings-python==2.0.11", "mkdocs-autorefs==1.4.5",
                             "griffelib==2.4.1"]},
    entry_points={"console_scripts": ["zoo-ray=zoo_ray.cli:main"]},
)
