"""A progress bar on stderr when tqdm is installed, nothing when it is not."""

import sys


class Progress:
    def __init__(self, total, desc, enabled=True):
        self.bar = None
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            print("tqdm is not installed: no progress bar", file=sys.stderr)
            return
        self.bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)

    def step(self, text):
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
