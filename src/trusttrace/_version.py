"""The package version, in one place: the package root, manifests and stored files read it from here."""

__version__ = "0.1.0"


def package_versions() -> dict[str, str]:
    """The versions that decide a run's numbers, for its manifest."""
    import platform

    import numpy
    import sklearn
    import torch
    import transformers

    return {"trusttrace": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": numpy.__version__, "scikit-learn": sklearn.__version__, "python": platform.python_version()}
