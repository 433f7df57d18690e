from setuptools import find_packages, setup

setup(
    name="fairseq-gradvac",
    version="0.1.0",
    description="Gradient Vaccine (Wang et al., ICLR 2021) and its baselines as a fairseq plugin "
    "for multilingual translation",
    packages=find_packages(include=["fairseq_gradvac", "fairseq_gradvac.*"]),
    python_requires=">=3.9",
    # fairseq-fixed must be built against the installed torch (scripts/setup.sh shows how);
    # a plain `pip install` of it builds against a freshly downloaded torch.
    install_requires=[
        "torch>=2.0",
        "numpy",
        "fairseq-fixed==0.12.3.1",
        "hydra-core==1.3.2",
        "omegaconf==2.3.0",
        "sacrebleu>=2.3",
        "sentencepiece",
        "matplotlib",
        "scipy",
        "urielplus",
        "langid",
    ],
    # TorchJD's methods (UPGrad, CAGrad, Nash-MTL, ...) and the solvers they call; the tests
    # compare the engine with TorchJD's aggregators
    extras_require={
        "methods": ["torchjd[full]==0.18.0"],
        "test": ["pytest", "pytest-xdist==3.6.1", "torchjd[full]==0.18.0"],
    },
)
