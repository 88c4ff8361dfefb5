from setuptools import setup

setup(
    name="zoo_ray",
    version="0.1.0",
    description="Run Ray inside Spark on Hadoop YARN",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["zoo_ray", "zoo_ray.minicluster", "zoo_ray.hadoop_conf_example"],
    # The documented gateway configuration is also the local Hadoop's template.
    package_dir={"zoo_ray.hadoop_conf_example": "hadoop_conf_example"},
    package_data={"zoo_ray.hadoop_conf_example": ["*.xml"]},
    install_requires=[
        "ray[default]",
        "pyspark",
        "conda-pack",
        "venv-pack",
        "pyarrow",
        "psutil",
        # Progress bars that render both in a terminal and as a Jupyter widget.
        "tqdm",
    ],
    # numpy and pandas: the ordinary Ray programs of the tests (ray.data needs pandas).
    # ruff and mypy are pinned: a new release's rules must not fail an unchanged tree.
    extras_require={"test": ["pytest", "pytest-timeout", "numpy", "pandas", "ruff==0.17.6",
                             "mypy==2.4.1"]},
    entry_points={"console_scripts": ["zoo-ray=zoo_ray.cli:main"]},
)
