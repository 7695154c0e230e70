"""Registers lec's config schema (`lec_schema`, the first default of conf/config.yaml) in processes that compose
conf/ without importing lec first: DVC's `dvc exp run` imports `hydra_plugins.*` from the repo root before it
composes params.yaml (iterative/dvc dvc/utils/hydra.py load_hydra_plugins;
dvc.org/doc/user-guide/experiment-management/hydra-composition)."""

from lec.config import register

register()
