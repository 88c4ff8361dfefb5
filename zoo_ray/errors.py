"""Typed exceptions raised by zoo_ray.

Every exception's message says what went wrong *and* what to do about it, so a
user in a notebook can act on it without reading zoo_ray's source. Runs anywhere.
"""
from __future__ import annotations

__all__ = [
    "ZooRayError",
    "InvalidArgumentError",
    "JavaNotFoundError",
    "MavenNotFoundError",
    "ArtifactFetchError",
    "PortInUseError",
    "DaemonStartError",
    "MiniClusterStateError",
    "IsolatedHostsUnavailableError",
    "ResourceManagerError",
    "HadoopConfError",
    "InvalidMemoryError",
    "CondaEnvNotFoundError",
    "NoPythonEnvError",
    "NotAPythonEnvError",
    "EnvLayerError",
    "QueueNotFoundError",
    "ExecutorsNotStartedError",
    "GpuRequestError",
    "GpuClaimError",
    "RayContextError",
    "RayNodeStartError",
    "ClusterLostError",
    "BlocksLostError",
    "UnsupportedColumnError",
    "KerberosError",
    "KerberosUnavailableError",
]


class ZooRayError(Exception):
    """Base class of every error zoo_ray raises on purpose."""


class InvalidArgumentError(ZooRayError, ValueError):
    """An argument has a wrong type or value, or conflicts with another argument."""


class JavaNotFoundError(ZooRayError):
    """No usable ``java`` executable was found."""


class MavenNotFoundError(ZooRayError):
    """The Hadoop jars are not cached yet and ``mvn`` is not available to fetch them."""


class ArtifactFetchError(ZooRayError):
    """Maven failed to fetch the Hadoop artifacts."""


class PortInUseError(ZooRayError):
    """A port the local Hadoop needs is already taken by another process."""


class DaemonStartError(ZooRayError):
    """A Hadoop daemon exited or never became ready while the local Hadoop was starting."""


class MiniClusterStateError(ZooRayError):
    """The local Hadoop's directory is in a state the requested operation cannot work with."""


class IsolatedHostsUnavailableError(ZooRayError):
    """This machine or user cannot give the local Hadoop's hosts network namespaces of their own."""


class ResourceManagerError(ZooRayError):
    """The YARN ResourceManager could not be reached or answered with an error."""


class HadoopConfError(ZooRayError):
    """A Hadoop configuration directory is missing, unreadable or incomplete."""


class InvalidMemoryError(InvalidArgumentError):
    """A memory argument is not a size like "512m" or "2g"."""


class CondaEnvNotFoundError(ZooRayError):
    """The conda environment named by ``conda_name`` does not exist."""


class NoPythonEnvError(ZooRayError):
    """No environment to ship was given and the running one cannot be packed."""


class NotAPythonEnvError(ZooRayError):
    """An archive or prefix given as the environment is not a usable Python environment."""


class EnvLayerError(ZooRayError):
    """An environment's layer cannot be written as planned: a file changed after the plan
    was made; the message names it and says to plan again."""


class QueueNotFoundError(ZooRayError):
    """The YARN queue asked for does not exist."""


class ExecutorsNotStartedError(ZooRayError):
    """YARN did not start the requested executors in time (the application was killed)."""


class GpuRequestError(ZooRayError):
    """``executor_gpus`` the cluster cannot give (no ``yarn.io/gpu``, or too few per node)."""


class GpuClaimError(ZooRayError):
    """An executor cannot have the GPUs YARN gave its container (in its discovery script)."""


class RayContextError(ZooRayError):
    """A RayContext was asked for something its state or its sizing does not allow."""


class RayNodeStartError(ZooRayError):
    """Ray nodes did not come up; the message names the executors and their log tails."""


class ClusterLostError(RayContextError):
    """The driver's Ray cluster is gone: for good (Spark ended the application, or no new
    cluster could start after the head's loss) or while a new one starts; the message
    says which and what to do."""


class BlocksLostError(ZooRayError):
    """Data converted into Ray was lost with its executor; the message says how to redo it."""


class UnsupportedColumnError(ZooRayError, TypeError):
    """A column whose type Arrow (or Spark, on the way back) cannot carry; names the column."""


class KerberosError(ZooRayError):
    """A Kerberos realm, principal, keytab or ticket is missing or wrong; the message names
    the fix."""


class KerberosUnavailableError(KerberosError):
    """MIT Kerberos's tools are not installed (the message names the packages)."""
