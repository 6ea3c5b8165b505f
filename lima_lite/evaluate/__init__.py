"""Evaluation the way LIMA and its successors did it: judges, protocols and reports.

    $ lima-lite eval --help                      # the steps: generate, pairwise, likert, absolute, knowledge,
                                                 # human, select-epoch, report
    $ lima-lite eval pairwise --help             # shows the judging prompt (lima_lite/evaluate/prompts/)

judges.py     get_judge(spec): a local model through the generation core, or MODEL@URL (OpenAI-compatible)
answers.py    prompts files, model SPECs, resumable answer generation
protocols.py  pairwise (both orders), likert, absolute, knowledge, human votes, tie-discounted agreement
steps.py      one resumable function per step, files in and out; select_epoch
report.py     report.md and the PNG charts
"""
