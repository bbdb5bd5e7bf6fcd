import os
from typing import Any, Mapping, Optional, Tuple, Union

from . import Error

class ConfigError(Error, ValueError): ...

class Binding:
    binding: str
    class_name: str
    unique_key: str
    storage_dir: str
    sqlite: bool
    id_key: str

class Migration:
    tag: str
    new_classes: Tuple[str, ...]
    new_sqlite_classes: Tuple[str, ...]
    renamed_classes: Tuple[Tuple[str, str], ...]
    deleted_classes: Tuple[str, ...]

class ClusterSettings:
    url: str
    node_addr: Optional[str]
    ttl: Optional[float]
    grace: Optional[float]
    timeout: Optional[float]

class Config:
    config_path: str
    env: Optional[str]
    name: Optional[str]
    worker_name: str
    main: Optional[str]
    compatibility_date: Optional[str]
    compatibility_flags: Tuple[str, ...]
    vars: Mapping[str, Any]
    dev_vars_path: Optional[str]
    bindings: Tuple[Binding, ...]
    migrations: Tuple[Migration, ...]
    state_dir: str
    warnings: Tuple[str, ...]
    cluster: Optional[ClusterSettings]
    @property
    def compatibility(self) -> Tuple[Optional[str], Tuple[str, ...]]: ...

def load_config(
    path: Union[str, "os.PathLike[str]", None] = None,
    *,
    env: Optional[str] = None,
    persist_to: Union[str, "os.PathLike[str]", None] = None,
) -> Config: ...
