"""The cluster's default file system (HDFS or any other), through Hadoop's Java client.

Runs on the gateway, in the driver's process, over the Spark JVM.

pyarrow's HDFS client needs a native ``libhdfs.so`` gateways rarely have, and
WebHDFS may be off or need SPNEGO. The JVM that PySpark launches anyway already
carries Hadoop's client, reads ``HADOOP_CONF_DIR`` and handles Kerberos, so zoo_ray
uses it over py4j. Bytes are copied Java-side; Python only steers, chunk by
chunk, which gives exact progress.
"""
from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

from .hadoop_conf import SITE_FILES
from .progress import progress_bar

__all__ = ["ClusterFileSystem"]

logger = logging.getLogger(__name__)

_CHUNK = 8 * 2**20


class ClusterFileSystem:
    """``fs.defaultFS`` of a Hadoop configuration directory, driven from Python.

    Parameters
    ----------
    jvm : py4j JVMView
        The JVM view of PySpark's gateway (:func:`zoo_ray.spark_internals.launch_jvm`).
    hadoop_conf_dir : str or Path
        The gateway's ``HADOOP_CONF_DIR``; its site files are loaded explicitly so a
        JVM started for another cluster cannot leak its configuration in.
    """

    def __init__(self, jvm: Any, hadoop_conf_dir: str | os.PathLike[str]) -> None:
        self._jvm = jvm
        conf = jvm.org.apache.hadoop.conf.Configuration()
        for name in SITE_FILES:
            path = Path(hadoop_conf_dir) / name
            if path.is_file():
                conf.addResource(jvm.org.apache.hadoop.fs.Path(path.resolve().as_uri()))
        self._conf = conf
        self._fs = jvm.org.apache.hadoop.fs.FileSystem.get(conf)

    @property
    def uri(self) -> str:
        """The file system's URI, e.g. ``hdfs://nn.example.com:8020``."""
        return str(self._fs.getUri().toString())

    def _path(self, path: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(path)

    def status(self, path: str) -> dict[str, int] | None:
        """``{"size": bytes, "mtime": ms since epoch}`` of a file, or None if absent."""
        p = self._path(path)
        if not self._fs.exists(p):
            return None
        st = self._fs.getFileStatus(p)
        return {"size": int(st.getLen()), "mtime": int(st.getModificationTime())}

    def read_text(self, path: str) -> str | None:
        """A small text file's content, or None if it does not exist."""
        p = self._path(path)
        if not self._fs.exists(p):
            return None
        stream = self._fs.open(p)
        try:
            return str(self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
        finally:
            stream.close()

    def write_text(self, path: str, text: str) -> None:
        """Write a small text file atomically (temp file, then rename)."""
        tmp = self._tmp_name(path)
        out = self._fs.create(self._path(tmp), True)
        try:
            self._jvm.org.apache.commons.io.IOUtils.write(text, out, "UTF-8")
        finally:
            out.close()
        self._commit(tmp, path)

    def upload(self, local: str | os.PathLike[str], path: str, label: str = "upload") -> None:
        """Copy a local file to ``path`` atomically, with a progress bar.

        The bytes go to a unique temp name first and are renamed into place, so a
        concurrent reader never sees a partial file and two concurrent uploaders do
        not corrupt each other.
        """
        size = os.path.getsize(local)
        tmp = self._tmp_name(path)
        self._fs.mkdirs(self._path(path).getParent())
        source = self._jvm.java.io.FileInputStream(str(local))
        out = self._fs.create(self._path(tmp), True)
        copy = self._jvm.org.apache.commons.io.IOUtils.copyLarge
        try:
            with progress_bar(size, label) as bar:
                done = 0
                while done < size:
                    copied = int(copy(source, out, 0, min(_CHUNK, size - done)))
                    if copied <= 0:
                        raise OSError(f"{local} shrank while it was being uploaded")
                    done += copied
                    bar.update(copied)
        except BaseException:
            out.close()
            self._fs.delete(self._path(tmp), False)
            raise
        finally:
            source.close()
        out.close()
        self._commit(tmp, path)

    def _tmp_name(self, path: str) -> str:
        p = self._path(path)
        return str(p.getParent().toString()) + f"/.{p.getName()}.{uuid.uuid4().hex}.tmp"

    def _commit(self, tmp: str, path: str) -> None:
        # Everything zoo_ray writes here is content-addressed: if a concurrent writer
        # got there first, its file is equivalent; keep it and drop ours.
        if self._fs.exists(self._path(path)) or not self._fs.rename(
            self._path(tmp), self._path(path)
        ):
            self._fs.delete(self._path(tmp), False)
            if not self._fs.exists(self._path(path)):
                raise OSError(f"Could not rename {tmp} to {path} on {self.uri}")
