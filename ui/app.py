"""The lima_lite Gradio app: Chat, Compare and Judge tabs over the one generation core, and a Train tab.

    $ python ui/app.py                                  # adapters under runs/, http://127.0.0.1:7860
    $ python ui/app.py --runs runs --adapter someone/llama-7b-lima --auth me:secret

Same as `lima-lite ui`; the app itself is lima_lite/app/ui.py, so an installed package has it too.
Run `python ui/app.py --help` for every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lima_lite.entry import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run("lima_lite.app.ui:main", sys.argv[1:]))
