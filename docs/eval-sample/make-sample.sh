#!/bin/bash
# The sample report in docs/eval-sample/: every `lima-lite eval` step as a user types it, timed.
#   bash docs/eval-sample/make-sample.sh RUN OUT     (RUN: a quick-start run folder, e.g. runs/quickstart)
set -e
RUN=$1; E=$2; JUDGE=embedded:SmolLM2-135M-Instruct
mkdir -p $E
t() { local s=$SECONDS; "$@"; echo "$((SECONDS - s)) s :: ${*:3:2}" | tee -a $E/times.txt; }
t lima-lite eval generate --model $RUN --prompts embedded:dev.jsonl --limit 6 --out $E/answers-adapter.jsonl --max-new-tokens 96
t lima-lite eval generate --model $RUN/adapter --no-adapter --name base --prompts embedded:dev.jsonl --limit 6 --out $E/answers-base.jsonl --max-new-tokens 96
t lima-lite eval pairwise --judge $JUDGE --judge-max-new-tokens 16 --ours $E/answers-adapter.jsonl --baseline $E/answers-base.jsonl --out $E/pairwise-smollm2.jsonl
t lima-lite eval pairwise --judge $RUN/adapter --judge-max-new-tokens 16 --ours $E/answers-adapter.jsonl --baseline $E/answers-base.jsonl --out $E/pairwise-tuned-judge.jsonl
t lima-lite eval likert --judge $JUDGE --judge-max-new-tokens 16 --answers $E/answers-adapter.jsonl --out $E/likert-adapter.jsonl
t lima-lite eval likert --judge $JUDGE --judge-max-new-tokens 16 --answers $E/answers-base.jsonl --out $E/likert-base.jsonl
t lima-lite eval absolute --judge $JUDGE --judge-max-new-tokens 16 --answers $E/answers-adapter.jsonl --out $E/absolute-adapter.jsonl
t lima-lite eval absolute --judge $JUDGE --judge-max-new-tokens 16 --answers $E/answers-base.jsonl --out $E/absolute-base.jsonl
t lima-lite eval knowledge --model $RUN --limit 10 --out $E/knowledge.jsonl
t lima-lite eval select-epoch $RUN --prompts embedded:dev.jsonl --epochs 1 --limit 4 --judge $JUDGE --judge-max-new-tokens 16 --max-new-tokens 96 --out $E/select-epoch
t lima-lite eval report $E --out $E/report --title "lima_lite sample evaluation: quick-start SmolLM2-135M, 1 epoch"
