"""Build hook only (the metadata is in setup.cfg): ship the project's own files inside the package.

`sql/`, `expectations/`, `conf/` and the spark-submit scripts in `jobs/` sit at the repository's
top level, where people read them; an installed wheel or a `--py-files` zip must carry them, so the build copies them to
`etl/_project/`, where etl/project/resources.py looks first.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PROJECT_FILES = ("sql", "expectations", "conf", "jobs")


class BuildPyWithProjectFiles(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the checkout
        bundle = Path(self.build_lib) / "etl" / "_project"
        for folder in PROJECT_FILES:
            shutil.copytree(folder, bundle / folder, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithProjectFiles})
