"""Evaluation the way LIMA and its successors did it: judges, protocols and reports.

    $ lima-lite eval --help                      # the steps: generate, pairwise, likert, absolute, knowledge,
                                                 # human, dialogue, select-epoch, report
    $ lima-lite eval pairwise --help             # shows the judging prompt (lima_lite/evaluate/prompts/)

answers.py       prompts files, model SPECs, resumable answer generation
protocols.py     pairwise (both orders), likert, absolute, knowledge, human votes, tie-discounted agreement
steps.py         one resumable function per step, files in and out
dialogue.py      multi-turn conversations (scripted or simulated user), every assistant turn graded (LIMA §6)
select_epoch.py  score a run's epochs with a pairwise judge and name the best
report.py        report.md and the PNG charts (lima_lite/plots.py draws the stacked bars)
cli.py           `lima-lite eval STEP`
The judges (a local model, or MODEL@URL for an OpenAI-compatible server) are lima_lite/judges.py,
shared with `lima-lite select --strategy quality`.
"""
