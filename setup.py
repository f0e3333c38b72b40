"""treediff: distributed training of hierarchical-cluster-conditioned diffusion models."""
from setuptools import find_packages, setup

# The runtime stack, pinned to the versions measured on the project's machines
# (torch 2.14.1 + torchvision 0.29.1 lie on the machines' disk; see README "Install").
RUNTIME = [
    "torch==2.14.1",
    "torchvision==0.29.1",
    "deepspeed==0.19.8",
    "ray[default,train]==2.60.0",  # default: the dashboard and the Job Submission API (`treediff submit ray`)
    "webdataset==1.0.2",
    "hydra-core==1.3.8",
    "omegaconf==2.3.1",
    "tensorboard==2.21.0",
    "torch-fidelity==0.4.0",
    "scikit-learn==1.9.1",
    "scikit-image==0.26.0",  # ships the photos of the photo_patches data set (treediff/data/bundled.py)
    "scipy==1.17.1",
    "numpy==2.4.6",
    "pillow==13.0.0",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",
    "jinja2==3.1.6",  # the report page (treediff/report/templates)
]
TEST = ["pytest==9.2.0", "pytest-timeout==2.4.0", "playwright==1.63.0"]  # playwright drives Debian's chromium

setup(
    name="treediff",
    version="0.1.0",
    description="Hierarchical-cluster-conditioned diffusion (TreeVAE + TreeDiffusion) on Ray + DeepSpeed",
    python_requires=">=3.11",
    packages=find_packages(include=["treediff*", "cluster*", "jobs*"]),
    include_package_data=True,
    package_data={"jobs": ["../configs/**/*.yaml"], "treediff.report": ["templates/*.j2"]},
    install_requires=RUNTIME,
    extras_require={"test": TEST},
    entry_points={"console_scripts": ["treediff=jobs.cli:main"]},
)
