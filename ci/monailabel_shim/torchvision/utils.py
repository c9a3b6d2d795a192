"""The two names ``monailabel.transform.post`` imports; see the package docstring. Both raise when called."""


def _absent(name: str):
    def call(*args, **kwargs):
        raise RuntimeError(
            f"torchvision.utils.{name} called, but this is synthaug's import shim (ci/monailabel_shim), not "
            "torchvision: install a torchvision that imports beside this torch to use it"
        )

    call.__name__ = name
    return call


make_grid = _absent("make_grid")
save_image = _absent("save_image")
