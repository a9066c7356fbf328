"""Console logging that does not break progress bars.

conf/hydra/default.yaml and in_run_dir.yaml make this the console handler of every run; Hydra's file
handler (train.log) stays beside it and gets every line, on a terminal or not.
"""

from __future__ import annotations

import logging


class TqdmHandler(logging.StreamHandler):
    """A StreamHandler that writes through tqdm.write: a live bar is cleared, the line printed, the bar
    redrawn below it, instead of the line being printed into the bar's own line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
