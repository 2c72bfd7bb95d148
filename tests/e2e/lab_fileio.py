"""pyiceberg's file IO for the lab's emulated bucket: `s3a://datalake/...` is the directory
DIR/s3/datalake on local disk, exactly as the lab's metastore and Spark see it (Hadoop's
overload scheme, tests/lab/hms.py). Locations stay `s3a://...` in the table metadata and in the
metastore; only the bytes go to local files. Selected with the catalog property
`py-io-impl = "lab_fileio.LabFileIO"` and `lab.s3-root = DIR/s3`."""
import os
from urllib.parse import urlparse

from pyarrow.fs import LocalFileSystem, SubTreeFileSystem
from pyiceberg.io.pyarrow import PyArrowFileIO


class LabFileIO(PyArrowFileIO):
    def _initialize_fs(self, scheme, netloc=None):
        if scheme == "s3a":
            # pyiceberg passes "<bucket>/<key>" as the path for s3-like schemes.
            return SubTreeFileSystem(self.properties["lab.s3-root"], LocalFileSystem())
        return super()._initialize_fs(scheme, netloc)

    def new_output(self, location):
        # Object stores have no directories; local disk needs the parent before a write.
        u = urlparse(location)
        if u.scheme == "s3a":
            parent = os.path.dirname(f"{self.properties['lab.s3-root']}/{u.netloc}{u.path}")
            os.makedirs(parent, exist_ok=True)
        return super().new_output(location)
