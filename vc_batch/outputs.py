"""A finished prompt's output files, fetched from its server into its job's folder (out/<job>/),
each file complete or absent.  runner.py downloads them straight into the folder; a Ray worker
(worker.py) fetches their bytes and the driver (ray_executor.py) writes them."""
import os

from .client import NO_OUTPUT, RequestFailed, open_part, output_file_names


class OutputsUnavailable(Exception):
    """The prompt finished but its outputs cannot be had: the job's error (the server answered)."""


class JobFolder:
    """out/<job name>/: where a job's output files are kept; the manifest lists them relative to out/."""

    def __init__(self, out_dir, job_name):
        self.job_name = job_name
        self.path = os.path.join(out_dir, job_name)

    def listed(self, fetched):
        """The manifest's `files` for fetch_outputs' (local name, ...) pairs."""
        return [os.path.join(self.job_name, fname) for fname, _ in fetched]

    def write(self, fetched):
        """Write the (local name, bytes) pairs a Ray worker fetched."""
        os.makedirs(self.path, exist_ok=True)
        for fname, data in fetched:
            with open_part(os.path.join(self.path, fname)) as f:
                f.write(data)


async def fetch_outputs(client, result, folder=None):
    """(local name, path) for each output file of a prompt that finished well (`result`, its
    HistoryResult), downloaded into `folder` (a JobFolder); (local name, bytes) when folder is None.
    OutputsUnavailable: no outputs, or one could not be downloaded; MalformedAnswer: an output that
    names no file; ServerDown propagates (the caller waits for the server and looks again)."""
    if not result.outputs:
        raise OutputsUnavailable(NO_OUTPUT)
    names = output_file_names(result.outputs)
    if folder is not None:
        os.makedirs(folder.path, exist_ok=True)
    fetched = []
    for item, fname in zip(result.outputs, names):
        dest = None if folder is None else os.path.join(folder.path, fname)
        try:
            fetched.append((fname, await client.download(item, dest)))
        except RequestFailed as e:
            raise OutputsUnavailable(f"could not download its output: {e}") from None
    return fetched
