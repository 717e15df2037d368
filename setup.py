"""magic_init: data-dependent initialization of Caffe models (Krähenbühl et al., ICLR 2016)."""
from setuptools import find_packages, setup

setup(
    name="magic_init",
    version="0.1.0",
    description="Data-dependent initialization and rescaling of Caffe models (ICLR 2016)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["magic_init", "magic_init.*"]),
    package_data={"magic_init": ["models/*.prototxt"]},
    python_requires=">=3.9",
    # torch is optional at install time: the built-in engine needs it, the pycaffe backend does not.
    # Install it pinned (pip install torch==2.13.0) to get the CPU build; see README.md.
    install_requires=["numpy", "protobuf>=3.12", "click>=7", "scikit-learn>=0.23", "pillow", "tqdm"],
    extras_require={
        "torch": ["torch"],
        "lmdb": ["lmdb"],
        "hdf5": ["h5py"],
        "plot": ["matplotlib"],
        "test": ["pytest"],
    },
    entry_points={"console_scripts": ["magic_init=magic_init.cli:main"]},
)
