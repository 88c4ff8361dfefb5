"""Reading and writing Hadoop ``*-site.xml`` configuration directories.

A gateway's ``HADOOP_CONF_DIR`` is the single source of truth for where the
ResourceManager and NameNode live. :class:`HadoopConf` reads it the way Hadoop's
own ``Configuration`` does (later files override earlier ones, ``${var}``
references expand), and can write a modified copy that keeps the comments, which
is how the local Hadoop renders its configuration from ``hadoop_conf_example/``.
:func:`hadoop_conf_dir` finds the directory a caller means. Runs on the gateway.
"""
from __future__ import annotations

import getpass
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

from .errors import HadoopConfError

__all__ = ["HadoopConf", "SITE_FILES", "hadoop_conf_dir"]

#: The files a gateway's configuration directory holds, in Hadoop's load order.
SITE_FILES = ("core-site.xml", "hdfs-site.xml", "yarn-site.xml", "capacity-scheduler.xml")

_VAR = re.compile(r"\$\{([^}$\s]+)\}")
_MAX_EXPANSION_DEPTH = 20


class _SiteFile:
    """One ``*-site.xml`` file: its ``<configuration>`` element and an index of its properties."""

    def __init__(self, root: ET.Element, prolog: str = '<?xml version="1.0"?>\n') -> None:
        self.root = root
        # The XML declaration and comments before <configuration>, which ElementTree drops.
        self.prolog = prolog
        self.props: dict[str, ET.Element] = {}
        for prop in root.iter("property"):
            name = prop.findtext("name")
            if name:
                self.props[name.strip()] = prop

    @classmethod
    def parse(cls, path: Path) -> _SiteFile:
        parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
        text = path.read_text(encoding="utf-8")
        start = text.find("<configuration")
        prolog = text[:start] if start > 0 else '<?xml version="1.0"?>\n'
        try:
            parser.feed(text)
            return cls(parser.close(), prolog)
        except ET.ParseError as exc:
            raise HadoopConfError(
                f"{path} is not valid XML ({exc}). Fix the file, or copy it again from "
                "your cluster's gateway (usually /etc/hadoop/conf)."
            ) from None

    def get(self, name: str) -> str | None:
        prop = self.props.get(name)
        if prop is None:
            return None
        value = prop.findtext("value")
        return value.strip() if value is not None else ""

    def set(self, name: str, value: str) -> None:
        prop = self.props.get(name)
        if prop is None:
            root = self.root
            prop = ET.SubElement(root, "property")
            ET.SubElement(prop, "name").text = name
            ET.SubElement(prop, "value")
            self.props[name] = prop
            # Keep the file readable: one property per line, like hand-written files.
            prop.tail = "\n"
            if len(root) > 1 and not (root[-2].tail or "").strip():
                root[-2].tail = "\n  "
            prop.text = "\n    "
            prop[0].tail = "\n    "
            prop[1].tail = "\n  "
        value_el = prop.find("value")
        if value_el is None:
            value_el = ET.SubElement(prop, "value")
        value_el.text = value


class HadoopConf:
    """The merged view of a Hadoop configuration directory.

    Parameters
    ----------
    conf_dir : str or Path
        A directory holding ``core-site.xml`` and ``yarn-site.xml`` (and usually
        ``hdfs-site.xml``), like a gateway's ``HADOOP_CONF_DIR``.
    required : tuple of str
        Files that must exist; a missing one raises :class:`HadoopConfError`.

    Examples
    --------
    >>> conf = HadoopConf("/etc/hadoop/conf")            # doctest: +SKIP
    >>> conf.get("yarn.resourcemanager.webapp.address")  # doctest: +SKIP
    'rm.example.com:8088'
    """

    def __init__(
        self,
        conf_dir: str | os.PathLike[str],
        required: tuple = ("core-site.xml", "yarn-site.xml"),
    ) -> None:
        self.conf_dir = Path(conf_dir)
        if not self.conf_dir.is_dir():
            raise HadoopConfError(
                f"Hadoop configuration directory {self.conf_dir} does not exist. Pass "
                "hadoop_conf=<dir with core-site.xml and yarn-site.xml> or set HADOOP_CONF_DIR "
                "(on a gateway usually /etc/hadoop/conf; for the local Hadoop run "
                "`zoo-ray minicluster up`)."
            )
        missing = [name for name in required if not (self.conf_dir / name).is_file()]
        if missing:
            raise HadoopConfError(
                f"{self.conf_dir} has no {', '.join(missing)}. Point hadoop_conf/HADOOP_CONF_DIR "
                "at the directory holding your cluster's client configuration "
                "(usually /etc/hadoop/conf on a gateway)."
            )
        self._files: dict[str, _SiteFile] = {}
        for name in SITE_FILES:
            path = self.conf_dir / name
            if path.is_file():
                self._files[name] = _SiteFile.parse(path)

    def __contains__(self, name: str) -> bool:
        return self.raw(name) is not None

    def raw(self, name: str) -> str | None:
        """The value of ``name`` before ``${var}`` expansion, or None if unset."""
        value = None
        for site in self._files.values():
            found = site.get(name)
            if found is not None:
                value = found
        return value

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of ``name`` with ``${var}`` references expanded, as Hadoop does.

        References resolve to other properties first, then to Java-style system
        properties zoo_ray knows (``user.name``), then to environment variables
        written as ``${env.NAME}``.
        """
        value = self.raw(name)
        if value is None:
            return default
        return self._expand(value)

    def require(self, name: str) -> str:
        """Like :meth:`get`, but a missing property raises :class:`HadoopConfError`."""
        value = self.get(name)
        if not value:
            raise HadoopConfError(
                f"{name} is not set in {self.conf_dir}. Copy the client configuration from "
                "your cluster's gateway (usually /etc/hadoop/conf), which sets it."
            )
        return value

    def _expand(self, value: str) -> str:
        for _ in range(_MAX_EXPANSION_DEPTH):
            new = _VAR.sub(self._lookup, value)
            if new == value:
                return new
            value = new
        return value

    def _lookup(self, match: re.Match[str]) -> str:
        var = match.group(1)
        raw = self.raw(var)
        if raw is not None:
            return raw
        if var == "user.name":
            return getpass.getuser()
        if var.startswith("env.") and var[4:] in os.environ:
            return os.environ[var[4:]]
        return match.group(0)

    def set(self, overrides: Mapping[str, Mapping[str, str]]) -> None:
        """Set properties, file by file: ``{"yarn-site.xml": {"key": "value"}}``.

        Files not loaded yet start empty.
        """
        for filename, props in overrides.items():
            site = self._files.get(filename)
            if site is None:
                root = ET.Element("configuration")
                root.text = "\n  "
                site = self._files[filename] = _SiteFile(root)
            for name, value in props.items():
                site.set(name, str(value))

    def write(self, dest_dir: str | os.PathLike[str]) -> Path:
        """Write every loaded or set file to ``dest_dir`` (created if needed)."""
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        for name, site in self._files.items():
            tmp = dest / f".{name}.tmp"
            body = ET.tostring(site.root, encoding="unicode")
            tmp.write_text(f"{site.prolog}{body}\n", encoding="utf-8")
            os.replace(tmp, dest / name)
        return dest


def hadoop_conf_dir(hadoop_conf: str | None) -> Path:
    """The Hadoop configuration directory: ``hadoop_conf``, else ``$HADOOP_CONF_DIR``."""
    conf_dir = hadoop_conf or os.environ.get("HADOOP_CONF_DIR")
    if not conf_dir:
        raise HadoopConfError(
            "No Hadoop configuration: pass hadoop_conf=<dir with core-site.xml and "
            "yarn-site.xml> (--hadoop-conf) or set HADOOP_CONF_DIR (on a gateway usually "
            "/etc/hadoop/conf; for the local Hadoop, the path `zoo-ray minicluster up` prints)."
        )
    return Path(conf_dir).expanduser().resolve()
